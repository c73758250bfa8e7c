"""Deployment exports (`python -m ifdd_jax.export`): the ONNX lowering rule by rule against JAX
(fixed and dynamic batch, every gather form and mode), the portable forms against the model's own,
the shared tiny run exported in each format through the command (the printed parity, the metadata,
a SavedModel loaded back by TensorFlow alone, TFLite, a parity failure), and an IFDD-3DViT at
8 frames of 32² in each format."""

import json
import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifdd_jax import trained_run
from ifdd_jax.config_lib import load_config_file
from ifdd_jax.export import core, portable
from ifdd_jax.export.__main__ import main
from ifdd_jax.models import build_model, issm, mvit

onnx = pytest.importorskip("onnx", reason="the export extra (pip install -e '.[export]')")
onnxruntime = pytest.importorskip("onnxruntime", reason="the export extra")

from ifdd_jax.export.onnx_lowering import (  # noqa: E402 (needs onnx)
    BATCH_SYMBOL,
    UnsupportedPrimitive,
    to_onnx,
)


def _onnx_outputs(fn, x: np.ndarray, dynamic: bool, feed: list) -> list:
    """fn lowered at x's shape (batch symbolic when `dynamic`), run by onnxruntime on each of
    `feed`."""
    batch = jax.export.symbolic_shape(BATCH_SYMBOL)[0] if dynamic else x.shape[0]
    spec = jax.ShapeDtypeStruct((batch,) + x.shape[1:], x.dtype)
    model = to_onnx(lambda a: (fn(a),), spec, input_name="x", output_names=["y"])
    onnx.checker.check_model(model)
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return [session.run(None, {"x": f})[0] for f in feed]


class _Block(nn.Module):
    """Convolutions (strided, grouped, dilated), pooling, dense layers, normalisation, exact GELU,
    softmax and a batched einsum: the primitives the trunks use."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(8, (3, 3), strides=(2, 2), padding=((1, 2), (0, 1)))(x)
        x = nn.Conv(8, (3, 3), feature_group_count=8, kernel_dilation=(2, 2), padding="SAME")(x)
        x = nn.BatchNorm(use_running_average=True)(x)
        x = nn.max_pool(x, (2, 2), strides=(1, 1), padding="SAME")
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = jax.nn.gelu(nn.LayerNorm()(x), approximate=False)
        tokens = x.reshape(x.shape[0], -1, x.shape[-1])
        attn = jax.nn.softmax(jnp.einsum("bqc,bkc->bqk", tokens, tokens) * 8**-0.5, axis=-1)
        y = jnp.einsum("bqk,bkc->bqc", attn, tokens).mean(axis=1)
        y = jax.lax.rsqrt(jnp.abs(y) + 1.0) * jnp.clip(y, -0.5, 0.5) ** 3
        return nn.Dense(5)(jnp.where(y > 0, y, 0.1 * y))


@pytest.mark.parametrize("dynamic", [False, True])
def test_lowering_matches_jax_on_a_small_network(dynamic):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 11, 13, 3)).astype(np.float32)
    block = _Block()
    variables = block.init(jax.random.key(0), x)
    stats = jax.tree.map(lambda s: s + rng.uniform(0.5, 1.5, s.shape), variables["batch_stats"])
    variables = {"params": variables["params"], "batch_stats": stats}
    fn = lambda a: block.apply(variables, a)  # noqa: E731
    feed = [x, rng.normal(size=(3, 11, 13, 3)).astype(np.float32)] if dynamic else [x]
    for got, f in zip(_onnx_outputs(fn, x, dynamic, feed), feed):
        np.testing.assert_allclose(got, np.asarray(fn(f)), atol=2e-6, rtol=1e-5)


def _gathers(x):
    """ISSM's per-clip frame reads, a fixed-index read along an axis, a constant slice (a gather
    under a symbolic batch), and jnp.take in the clip and fill modes with out-of-range indices."""
    b, t = x.shape[:2]
    positions = jnp.clip(x[:, :3, 0, 0] * 2.0 + 2.0, 0.0, t - 1.0)  # [B, 3] fractional
    frames = issm.interpolate_frames(x, positions)  # [B, 3, H, C]
    fixed = x[:, np.array([0, 2, 3])]  # [B, 3, H, C]
    part = x[..., :2]
    wild = jnp.asarray([-3, 1, 7])
    clipped = jnp.take(x, wild, axis=1, mode="clip")
    filled = jnp.take(x, wild, axis=1, mode="fill", fill_value=0.0)
    return jnp.concatenate(
        [frames.sum(-1), fixed.sum(-1), part.sum(-1)[:, :3], clipped.sum(-1), filled.sum(-1)],
        axis=1,
    )


@pytest.mark.parametrize("dynamic", [False, True])
def test_lowering_of_every_gather_form_and_mode(dynamic):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 4, 3)).astype(np.float32)
    feed = [x, rng.normal(size=(1, 5, 4, 3)).astype(np.float32)] if dynamic else [x]
    for got, f in zip(_onnx_outputs(_gathers, x, dynamic, feed), feed):
        np.testing.assert_allclose(got, np.asarray(_gathers(f)), atol=1e-6)


def test_a_primitive_without_a_rule_is_named():
    with pytest.raises(UnsupportedPrimitive, match="'sort'"):
        _onnx_outputs(lambda a: jnp.sort(a, axis=-1), np.zeros((2, 4), np.float32), False, [])


def test_portable_forms_compute_what_the_model_computes():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(2, 8, 3, 3, 5)), jnp.float32)
    # Fractional, integer and end positions (the clamp keeps ⌊p⌋ + 1 inside the clip).
    positions = jnp.asarray([[0.0, 2.5, 3.0, 7.0], [6.99, 0.25, 4.0, 1.75]], jnp.float32)
    np.testing.assert_array_equal(
        portable.interpolate_frames_onehot(x, positions), issm.interpolate_frames(x, positions)
    )
    q = jnp.asarray(rng.normal(size=(2, 3, 2 * 4 * 4, 6)), jnp.float32)
    tables = [jnp.asarray(rng.normal(size=(n, 6)), jnp.float32) for n in (3, 7, 7)]
    args = (q, (2, 4, 4), (2, 2, 2), *tables)
    np.testing.assert_allclose(
        portable.decomposed_rel_pos_low_rank(*args), mvit.decomposed_rel_pos(*args), atol=1e-6
    )
    with portable.portable(tflite=True):
        assert issm.interpolate_frames is portable.interpolate_frames_onehot
    assert issm.interpolate_frames is not portable.interpolate_frames_onehot  # restored


# --- the tiny trained run through the command --------------------------------------------------


def _printed_diff(text: str, prefix: str = "") -> float:
    match = re.search(rf"^{prefix}max abs diff: (\S+)$", text, re.MULTILINE)
    assert match, text
    return float(match.group(1))


def _export(run_dir, out, fmt, batch, capsys) -> str:
    args = ["--workdir", run_dir, "--format", fmt, "--out", str(out), "--batch", batch]
    assert main(args) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert _printed_diff(printed) <= core.TOLERANCE
    metadata = json.load(open(out / core.METADATA_FILE))
    assert metadata["format"] == fmt and metadata["model"] == "ifdd_2dcnn"
    names = ["Happy", "Sad", "Neutral", "Angry", "Surprise", "Disgust", "Fear"]
    assert metadata["class_names"] == names
    size = int(batch) if batch != "dynamic" else BATCH_SYMBOL
    assert metadata["input"]["shape"] == [size, 8, 32, 32, 3]
    assert metadata["parity"]["max_abs_diff"] <= core.TOLERANCE
    return printed


def test_onnx_export_of_the_tiny_run(run_dir, trained, tmp_path, capsys):
    _export(run_dir, tmp_path, "onnx", "dynamic", capsys)
    model = onnx.load(str(tmp_path / "model.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["class_names"]) == trained.class_names
    assert json.loads(props["ifdd_jax"])["input"]["normalization"] == "unit"
    session = onnxruntime.InferenceSession(
        str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    clips = core.parity_clips(trained, 3, seed=5)  # another batch size than the export's check
    got = dict(zip(core.OUTPUT_NAMES, session.run(list(core.OUTPUT_NAMES), {"clips": clips})))
    assert max(core.compare(got, core.jax_outputs(trained, clips)).values()) <= core.TOLERANCE


_TF_ALONE = """
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
out = model.signatures["serving_default"](clips=tf.constant(np.load(sys.argv[2])))
meta = model.signatures["metadata"]()
np.savez(sys.argv[3], **{k: v.numpy() for k, v in out.items()})
loaded = {m.split(".")[0] for m in sys.modules}
print(json.dumps({"class_names": [c.decode() for c in meta["class_names"].numpy()],
                  "project": sorted(loaded & {"ifdd_jax", "data_pipeline", "flax"})}))
"""


def test_savedmodel_export_of_the_tiny_run_loads_with_tensorflow_alone(
    run_dir, trained, tmp_path, capsys
):
    out = tmp_path / "savedmodel"
    out.mkdir()
    (out / "notes.txt").write_text("not part of an export")  # must survive the export
    printed = _export(run_dir, out, "savedmodel", "2", capsys)
    assert (out / "notes.txt").read_text() == "not part of an export"
    assert _printed_diff(printed, "tflite: ") <= core.TOLERANCE
    assert os.path.isfile(out / "model.tflite")
    clips = core.parity_clips(trained, 2, seed=7)
    np.save(tmp_path / "clips.npy", clips)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _TF_ALONE,
            str(out),
            str(tmp_path / "clips.npy"),
            str(tmp_path / "out.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,  # TensorFlow alone: neither this project nor flax is imported
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"class_names": trained.class_names, "project": []}
    got = dict(np.load(tmp_path / "out.npz"))
    assert max(core.compare(got, core.jax_outputs(trained, clips)).values()) <= core.TOLERANCE


def test_stablehlo_export_of_the_tiny_run(run_dir, trained, tmp_path, capsys):
    _export(run_dir, tmp_path, "stablehlo", "dynamic", capsys)
    with open(tmp_path / "model.jax_exported", "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    metadata = json.load(open(tmp_path / core.METADATA_FILE))
    assert metadata["stablehlo"]["calling_convention_version"] == (
        exported.calling_convention_version
    )
    assert set(exported.platforms) == set(core.DEFAULT_PLATFORMS)
    for n in (1, 3):
        clips = core.parity_clips(trained, n, seed=n)
        got = dict(zip(core.OUTPUT_NAMES, exported.call(jnp.asarray(clips))))
        assert max(core.compare(got, core.jax_outputs(trained, clips)).values()) <= core.TOLERANCE


def test_an_export_above_the_tolerance_fails(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(core, "TOLERANCE", -1.0)  # every difference, even 0, is too large
    args = ["--workdir", run_dir, "--format", "stablehlo", "--out", str(tmp_path)]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "max abs diff: " in captured.out
    assert "error: the stablehlo export differs from the JAX model by" in captured.err


def test_command_errors_are_clear(tmp_path, capsys):
    assert main(["--workdir", str(tmp_path), "--format", "onnx", "--out", str(tmp_path)]) == 1
    assert "no config.json found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--workdir", str(tmp_path), "--format", "onnx", "--out", "x", "--batch", "0"])
    assert "--batch must be positive" in capsys.readouterr().err


# --- IFDD-3DViT --------------------------------------------------------------------------------


def test_ifdd_3dvit_exports_in_every_format(tmp_path):
    """The released network (reference flavor, 37.6 M parameters) at 8 frames of 32², dynamic
    batch: ONNX, SavedModel with TFLite and StableHLO all match the JAX model."""
    config = load_config_file("configs/dfew.py:model=ifdd_3dvit,flavor=reference")
    config.data.num_frames, config.data.image_size = 8, 32
    model = build_model(config)
    variables = jax.jit(model.init)({"params": jax.random.key(0)}, jnp.zeros((1, 8, 32, 32, 3)))
    trained = trained_run.TrainedModel(
        config=config,
        model=model,
        variables=variables,
        class_names=trained_run.class_names_for(config),
        checkpoint="",
        step=0,
    )
    for fmt in core.FORMATS:
        result = core.export(trained, fmt, str(tmp_path / fmt), platforms=("cpu",))
        assert result.ok, (fmt, result.per_output)
        if fmt == "savedmodel":
            assert result.tflite["status"] == "ok", result.tflite["reason"]
            assert result.tflite["max_abs_diff"] <= core.TOLERANCE
