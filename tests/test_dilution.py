"""The dilution study (`python -m ifdd_jax.experiments.dilution`): model entries and the cells'
commands, mean ± std and the verdict from a hand-made CSV, and the command end to end on a tiny
budget (IFDD and the baseline × 1 level × 2 seeds, 2 steps each): its CSV / markdown / PNG, a
second invocation that runs nothing, `--dry_run` and `--report_only`."""

import csv
import json
import os

import pytest

from ifdd_jax.experiments import dilution, dilution_diagnostics

# The shared tiny runs' sizes (tests/tiny_runs.py): 60 balanced clips of 8 frames at 32 px,
# batch 8, no warmup, validated only at the end; 2 steps are enough to produce every file. (The
# cells run on one CPU device, the test process on 8, so they cannot reuse its compiled steps.)
TINY = [
    "--set",
    "num_train_steps=2",
    "--set",
    "data.synthetic.num_clips=60",
    "--set",
    "data.image_size=32",
    "--set",
    "data.synthetic.size=32",
    "--set",
    "batch_size=8",
    "--set",
    "eval_batch_size=8",
    "--set",
    "eval_every_epochs=100",
    "--set",
    "optim.warmup_epochs=0",
]
GRID = ["--models", "ifdd_2dcnn,baseline_mobilenet_v2", "--event_frames", "2", "--seeds", "2"]


def test_model_entries_labels_and_cell_commands(tmp_path):
    models = dilution.parse_models(
        "ifdd_2dcnn, baseline_mobilenet_v2,ifdd_2dcnn:ablation=ladm_none,"
        "ifdd_2dcnn:issm=even_odd,ladm=none"
    )
    assert [m.label for m in models] == [
        "ifdd_2dcnn",
        "baseline_mobilenet_v2",
        "ifdd_2dcnn [ablation=ladm_none]",
        "ifdd_2dcnn [issm=even_odd, ladm=none]",
    ]
    assert [m.slug for m in models][2:] == [
        "ifdd_2dcnn+ablation-ladm_none",
        "ifdd_2dcnn+issm-even_odd+ladm-none",
    ]
    assert [m.is_baseline for m in models] == [False, True, False, False]
    assert (
        dilution.config_spec("configs/default.py:fold=2", models[3])
        == "configs/default.py:fold=2,model=ifdd_2dcnn,issm=even_odd,ladm=none"
    )
    assert dilution.parse_seeds("3") == [0, 1, 2] and dilution.parse_seeds("4,9") == [4, 9]
    with pytest.raises(ValueError, match="twice"):
        dilution.parse_models("ifdd_2dcnn,ifdd_2dcnn")
    with pytest.raises(ValueError, match="sets this field per cell"):
        dilution.parse_sets(["data.synthetic.event_frames=3"])
    with pytest.raises(ValueError, match="unknown ablation"):
        dilution.check_grid(
            "configs/default.py", dilution.parse_models("ifdd_2dcnn:ablation=x"), [2]
        )
    with pytest.raises(ValueError, match="unknown model"):
        dilution.check_grid("configs/default.py", dilution.parse_models("nope"), [2])
    with pytest.raises(ValueError, match="no field 'optim.learning_rate'"):
        dilution.check_grid("configs/default.py", models[:1], [2], [("optim.learning_rate", "1")])
    with pytest.raises(ValueError, match="longer than the clip's 8 frames"):
        dilution.check_grid("configs/default.py", models[:1], [2, 9])
    dilution.check_grid("configs/default.py", models, [2, 8], [("optim.lr", "1e-3")])

    out = str(tmp_path)
    cells = dilution.make_cells(models[:2], [2, 4], [0, 1])
    assert len(cells) == 8
    # Models of one (seed, level) share one generated set; the seed reaches both seeds.
    a, b = cells[0], cells[1]
    assert (a.seed, a.event_frames) == (b.seed, b.event_frames) and a.model != b.model
    assert a.data_dir(out) == b.data_dir(out) != cells[2].data_dir(out)
    command = dilution.cell_command(
        cells[2], out, config_file="configs/default.py", epochs=5, sets=[("batch_size", "8")]
    )
    assert command[1:3] == ["-m", "ifdd_jax.main"]
    assert {
        "--config.seed=1",
        "--config.data.synthetic.seed=1",
        "--config.data.synthetic.event_frames=2",
        "--config.num_epochs=5",
        "--config.batch_size=8",
        f"--config.data_dir={cells[2].data_dir(out)}",
        f"--workdir={cells[2].workdir(out)}",
    } <= set(command)


def _write_rows(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(dilution.CSV_FIELDS)
        writer.writerows(rows)


def test_mean_std_and_verdict_from_a_hand_made_csv(tmp_path):
    path = str(tmp_path / "study.csv")
    _write_rows(
        path,
        [
            # model, event_frames, seed, uar, war, steps, seconds
            ("ifdd_2dcnn", 2, 0, 40.0, 50.0, 100, 10.0),
            ("ifdd_2dcnn", 2, 1, 50.0, 52.0, 100, 12.0),
            ("ifdd_2dcnn", 2, 2, 60.0, 54.0, 100, 14.0),
            ("baseline_mobilenet_v2", 2, 0, 45.0, 60.0, 100, 8.0),
            ("baseline_mobilenet_v2", 2, 1, 47.0, 60.0, 100, 8.0),
            ("ifdd_2dcnn", 4, 0, 30.0, 35.0, 100, 10.0),
            ("baseline_mobilenet_v2", 4, 0, 33.0, 30.0, 100, ""),
        ],
    )
    rows = dilution.read_csv(path)
    assert rows[-1]["seconds"] is None
    summary = dilution.summarize(rows)
    s = summary["uar"][("ifdd_2dcnn", 2)]
    # Sample std (ddof = 1): sqrt(((-10)² + 0² + 10²) / 2) = 10.
    assert (s.mean, s.std, s.n) == (pytest.approx(50.0), pytest.approx(10.0), 3)
    assert s.text() == "50.00 ± 10.00 (3)"
    b = summary["uar"][("baseline_mobilenet_v2", 2)]
    assert (b.mean, b.std, b.n) == (pytest.approx(46.0), pytest.approx(2**0.5), 2)
    assert summary["war"][("ifdd_2dcnn", 2)].std == pytest.approx(2.0)
    assert summary["uar"][("ifdd_2dcnn", 4)].text() == "30.00 (1)"  # one seed: no std

    models = ["ifdd_2dcnn", "baseline_mobilenet_v2"]
    text = dilution.render_markdown(
        rows,
        command="python -m ifdd_jax.experiments.dilution x",
        models=models,
        levels=[2, 4],
        missing=["a cell"],
    )
    assert text.splitlines()[5] == "python -m ifdd_jax.experiments.dilution x"
    assert "| ifdd_2dcnn | 50.00 ± 10.00 (3) | 30.00 (1) |" in text
    assert "| baseline_mobilenet_v2 | 46.00 ± 1.41 (2) | 33.00 (1) |" in text
    assert "| ifdd_2dcnn | 52.00 ± 2.00 (3) | 35.00 (1) |" in text  # the WAR table
    assert "event_frames 2: ifdd_2dcnn 50.00 vs baseline_mobilenet_v2 46.00: IFDD **beats**" in text
    assert (
        "event_frames 4: ifdd_2dcnn 30.00 vs baseline_mobilenet_v2 33.00: IFDD **does not "
        "beat**" in text
    )
    assert "## Not finished (1)" in text
    png = dilution.plot_uar(rows, models, [2, 4], str(tmp_path / "uar.png"), num_classes=7, dpi=60)
    assert os.path.getsize(png) > 1000


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The tiny study, run once: (its folder, the first invocation's stdout)."""
    out = str(tmp_path_factory.mktemp("dilution") / "study")
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = dilution.main(["--out", out, *GRID, *TINY])
    assert status == 0, buffer.getvalue()
    return out, buffer.getvalue()


def test_study_end_to_end(study):
    out, stdout = study
    assert "4 cells, 0 already finished, 4 to run" in stdout
    for name in ("study.csv", "study.md", "uar_vs_dilution.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    rows = dilution.read_csv(os.path.join(out, "study.csv"))
    assert sorted((r["model"], r["seed"]) for r in rows) == [
        ("baseline_mobilenet_v2", 0),
        ("baseline_mobilenet_v2", 1),
        ("ifdd_2dcnn", 0),
        ("ifdd_2dcnn", 1),
    ]
    assert all(r["event_frames"] == 2 and r["steps"] == 2 and r["seconds"] > 0 for r in rows)
    assert all(0 <= r["uar"] <= 100 and 0 <= r["war"] <= 100 for r in rows)
    text = open(os.path.join(out, "study.md")).read()
    assert f"python -m ifdd_jax.experiments.dilution --out {out}" in text
    assert "| ifdd_2dcnn | " in text and "(2) |" in text
    assert "- event_frames 2: ifdd_2dcnn" in text and "- steps: 2" in text
    assert "Warning" not in text  # the cells' configs differ only by model and seed
    # One generated set per seed, shared by both models; the seeds reached the configs.
    assert sorted(os.listdir(os.path.join(out, "data"))) == ["seed0_ev2", "seed1_ev2"]
    cell = dilution.Cell(dilution.ModelEntry("baseline_mobilenet_v2"), 2, 1)
    config = json.load(open(os.path.join(cell.workdir(out), "config.json")))
    assert config["seed"] == 1 and config["data"]["synthetic"]["seed"] == 1
    assert config["data"]["synthetic"]["event_frames"] == 2
    assert config["model_name"] == "baseline_mobilenet_v2"
    assert config["data_dir"] == cell.data_dir(out)


def test_rerun_skips_finished_cells_dry_run_and_report_only(study, capsys):
    out, _ = study
    cell = dilution.Cell(dilution.ModelEntry("ifdd_2dcnn"), 2, 0)
    results = os.path.join(cell.workdir(out), "results.json")
    before = os.path.getmtime(results)

    assert dilution.main(["--out", out, *GRID, *TINY]) == 0
    printed = capsys.readouterr().out
    assert "4 cells, 4 already finished, 0 to run" in printed and "UAR" not in printed
    assert os.path.getmtime(results) == before
    assert json.load(open(os.path.join(cell.workdir(out), "cell.json")))["invocations"] == 1

    assert dilution.main(["--out", out, *GRID, "--event_frames", "2,4", *TINY, "--dry_run"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("8 cells (2 models × 2 levels × 2 seeds)")
    assert printed.count("(done)") == 4 and printed.count("(to run)") == 4
    assert "--config.data.synthetic.event_frames=4" in printed
    assert not os.path.exists(dilution.Cell(cell.model, 4, 0).workdir(out))  # nothing ran

    os.remove(os.path.join(out, "study.md"))
    # Without grid flags, --report_only takes the last run's grid and command (study.json).
    assert dilution.main(["--out", out, "--report_only"]) == 0
    assert "wrote" in capsys.readouterr().out
    text = open(os.path.join(out, "study.md")).read()
    assert "--seeds 2" in text and "Not finished" not in text


def test_diagnostics_of_the_study_cells(study, tmp_path, capsys):
    """dilution_diagnostics: every IFDD cell gets its diagnostics JSON, index plot and one CSV
    line (copied with the plots to --copy_to); the baseline cells are skipped; a rerun reuses the
    files."""
    out, _ = study
    copy_to = str(tmp_path / "docs")
    assert dilution_diagnostics.main(["--out", out, "--copy_to", copy_to]) == 0
    printed = capsys.readouterr().out
    assert printed.count("skipped baseline_mobilenet_v2") == 2
    with open(os.path.join(copy_to, dilution_diagnostics.CSV_FILE)) as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["seed"]) for r in rows] == [("ifdd_2dcnn", "0"), ("ifdd_2dcnn", "1")]
    for r in rows:
        assert r["event_frames"] == "2" and float(r["lr_sum"]) > 0
        assert float(r["offset_mean_abs_change"]) > 0 and float(r["index_std_mean"]) >= 0
        assert (
            os.path.getsize(
                os.path.join(copy_to, f"issm_indices_ifdd_2dcnn_ev2_seed{r['seed']}.png")
            )
            > 1000
        )
    cell = dilution.Cell(dilution.ModelEntry("ifdd_2dcnn"), 2, 0).workdir(out)
    made = os.path.getmtime(os.path.join(cell, dilution_diagnostics.DIAGNOSTICS_FILE))
    assert dilution_diagnostics.main(["--out", out]) == 0
    assert os.path.getmtime(os.path.join(cell, dilution_diagnostics.DIAGNOSTICS_FILE)) == made
