"""The Table-13 fold report."""

import json

import numpy as np
import pytest

from ifdd_jax import folds


def _write(tmp_path, fold, uar, war, model="ifdd_2dcnn", dataset="dfew"):
    d = tmp_path / f"fold{fold}"
    d.mkdir()
    (d / "results.json").write_text(
        json.dumps(
            dict(
                dataset=dataset,
                model=model,
                flavor="paper",
                fold=fold,
                uar=uar,
                war=war,
                validation_protocol="holdout",
            )
        )
    )
    return str(d)


def test_report_means_std_and_paper_columns(tmp_path, capsys):
    dirs = [_write(tmp_path, f, 50.0 + f, 60.0 + 2 * f) for f in (3, 1, 2)]
    assert folds.main(["--workdirs", *dirs]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    fold_rows = [line for line in lines if line.strip()[:1].isdigit()]
    assert [row.split()[0] for row in fold_rows] == ["1", "2", "3"]
    assert "56.02" in fold_rows[0] and "70.03" in fold_rows[0]  # paper fold 1
    mean = next(line for line in lines if line.strip().startswith("mean")).split()
    np.testing.assert_allclose([float(mean[1]), float(mean[2])], [52.0, 64.0])
    std = next(line for line in lines if line.strip().startswith("std")).split()
    np.testing.assert_allclose(float(std[1]), np.std([51, 52, 53]), atol=0.01)


def test_pattern_and_errors(tmp_path, capsys):
    _write(tmp_path, 1, 50, 60)
    assert folds.main(["--pattern", str(tmp_path / "fold*")]) == 0
    _write(tmp_path, 2, 50, 60, model="baseline_mobilenet_v2")
    assert folds.main(["--pattern", str(tmp_path / "fold*")]) == 1
    assert "mix datasets/models" in capsys.readouterr().err
    assert folds.main(["--workdirs", str(tmp_path / "missing")]) == 1
    with pytest.raises(SystemExit):
        folds.main([])
