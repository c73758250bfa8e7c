"""The analysis commands on the tiny checkpoint of tests/test_predict.py: each writes a non-empty
PNG; Grad-CAM maps have the clip's length, are not constant and use the exact gradient; the
efficiency table lists every registered model."""

import argparse
import csv
import os

import jax
import numpy as np
import pytest

from data_pipeline import inputs
from ifdd_jax import trained_run
from ifdd_jax.analysis import curves, efficiency, figures, gradcam, issm_indices, tsne
from ifdd_jax.models.registry import MODELS
from tests.test_predict import _clip_folder
from tests.tiny_runs import shared_run_config


def _png(path: str) -> None:
    assert os.path.isfile(path) and os.path.getsize(path) > 1000, path
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_gradcam_maps_and_command(run_dir, tmp_path):
    trained = trained_run.load_trained(run_dir)
    source = inputs.discover_sources(_clip_folder(run_dir))[0]
    clip = inputs.read_clip(source, trained.config).clips[0]  # [T, S, S, 3]
    cams = gradcam.clip_cams(trained, clip)
    for group in gradcam.GROUPS:
        maps = cams[group]
        assert maps.shape == (7, 8, 32, 32)  # one map per class and per frame of the clip
        assert np.all(maps >= 0) and maps.max() == pytest.approx(1.0)
        assert np.ptp(maps) > 0 and np.ptp(maps.mean(axis=(2, 3))) > 0  # varies, also in time
        assert np.all(np.diff(np.sort(cams["slots"][group])) >= 0)

    # Paper flavor: logit_k = head(Σ_n w_n Y_D[n]), so d logit_k / d Y_D[n, c] = w_n · W[c, k].
    params = trained.variables["params"]
    weights = np.asarray(params["ladm"]["project_compress"])[:, 0]  # [t·H·W]
    kernel = np.asarray(params["head"]["logits"]["kernel"])  # [C, K]
    grads = cams["gradients"]["dynamic"]  # [K, t, H, W, C]
    expected = np.einsum("n,ck->knc", weights, kernel).reshape(grads.shape)
    np.testing.assert_allclose(grads, expected, rtol=1e-4, atol=1e-7)
    assert np.abs(cams["gradients"]["static"]).max() > 0  # Y_S reaches the logits via P

    assert (
        gradcam.main(
            [
                "--workdir",
                run_dir,
                "--input",
                source.path,
                "--out_dir",
                str(tmp_path),
                "--dpi",
                "80",
            ]
        )
        == 0
    )
    for group in gradcam.GROUPS:
        _png(str(tmp_path / f"gradcam_{os.path.basename(source.path)}_{group}.png"))


def test_gradcam_refuses_a_model_without_ladm(tmp_path):
    from ifdd_jax.models import build_model

    config = shared_run_config(str(tmp_path), model_name="baseline_mobilenet_v2")
    model = build_model(config)
    clips = jax.ShapeDtypeStruct((1, 8, 32, 32, 3), np.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), clips)
    with pytest.raises(ValueError, match="needs an IFDD model; Baseline has no LADM"):
        gradcam.producers(model, variables, clips)


def test_tsne_issm_indices_and_curves_commands(run_dir, tmp_path):
    out = str(tmp_path / "tsne.png")
    assert (
        tsne.main(
            [
                "--workdirs",
                run_dir,
                run_dir,
                "--titles",
                "baseline",
                "IFDD",
                "--out",
                out,
                "--dpi",
                "80",
            ]
        )
        == 0
    )
    _png(out)
    out = str(tmp_path / "issm.png")
    assert issm_indices.main(["--workdir", run_dir, "--out", out, "--dpi", "80"]) == 0
    _png(out)
    scalars = curves.read_scalars(run_dir)
    assert {"train_loss", "val_uar", "val_war", "test_uar"} <= set(scalars)
    assert list(scalars["train_loss"][0]) == [2, 4, 6]
    out = str(tmp_path / "curves.png")
    assert curves.main(["--workdirs", run_dir, "--out", out, "--dpi", "80"]) == 0
    _png(out)
    assert curves.main(["--workdirs", str(tmp_path), "--out", out]) == 1  # no events: an error


def test_tsne_perplexity_is_clamped_below_the_sample_count():
    rng = np.random.default_rng(0)
    coords = tsne.embed(rng.normal(size=(6, 5)), iterations=250)
    assert coords.shape == (6, 2) and np.all(np.isfinite(coords))


def test_efficiency_table_lists_every_registered_model(tmp_path):
    out = str(tmp_path / "efficiency.png")
    rows, markdown = efficiency.efficiency_table(
        "configs/dfew.py",
        out,
        num_frames=8,
        image_size=32,
        ablations=["issm_fixed_even_odd"],  # a row whose ISSM does no floating-point work
    )
    _png(out)
    names = [r.name for r in rows]
    assert names == list(MODELS) + ["ifdd_2dcnn + issm_fixed_even_odd"]
    for name in MODELS:
        assert f"| {name} |" in markdown
    by_name = {r.name: r for r in rows}
    assert by_name["ifdd_2dcnn"].paper_params_m == 1.18
    assert by_name["baseline_mvit"].paper_gflops == 32.83
    assert all(r.params_m > 0 and r.gflops > 0 for r in rows)
    table = list(csv.DictReader(open(str(tmp_path / "efficiency.csv"))))
    assert [r["model"] for r in table] == names


def test_every_figure_command_takes_out_dir_and_out():
    """--out_dir DIR (one spelling in every analysis command) and --out FILE, kept as an alias."""
    for module, name in (
        (tsne, "tsne.png"),
        (issm_indices, "issm_indices.png"),
        (curves, "curves.png"),
        (efficiency, "efficiency.png"),
    ):
        source = open(module.__file__).read()
        assert f'figures.add_output_args(parser, "{name}")' in source
    parser = argparse.ArgumentParser()
    figures.add_output_args(parser, "x.png")
    assert figures.output_path(parser.parse_args([]), "x.png") == os.path.join("figures", "x.png")
    args = parser.parse_args(["--out_dir", "d"])
    assert figures.output_path(args, "x.png") == os.path.join("d", "x.png")
    assert figures.output_path(parser.parse_args(["--out", "f.png"]), "x.png") == "f.png"
