"""Checkpoint importers without PyTorch: random state dicts with the real key names and shapes
(ifdd_jax.convert.specs, checked against the torchvision modules in test_parity_torch.py) are
converted and every parameter is checked at its destination; misfits raise errors naming keys."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifdd_jax.config_lib import load_config_file
from ifdd_jax.convert import (
    ConversionError,
    SourceError,
    detect_family,
    load_into,
    read_state_dict,
    specs,
    transform,
    write_safetensors,
)
from ifdd_jax.convert.__main__ import main as convert_main
from ifdd_jax.convert.core import abstract_leaves_to_zeros
from ifdd_jax.models import build_model
from ifdd_jax.models.mvit import linear_resize_matrix


def _variables(model, flavor="reference", frames=16, size=224):
    """Zero-filled variables of the right structure (no initialisation is run)."""
    config = load_config_file(f"configs/dfew.py:model={model},flavor={flavor}")
    config.input.num_frames, config.input.image_size = frames, size
    module = build_model(config)
    clips = jax.ShapeDtypeStruct((1, frames, size, size, 3), jnp.float32)
    abstract = jax.eval_shape(lambda x: module.init({"params": jax.random.key(0)}, x), clips)
    return abstract_leaves_to_zeros(abstract)


def _get(tree, path):
    for part in path.split("/"):
        tree = tree[part]
    return np.asarray(tree)


def _eq(tree, path, expected):
    np.testing.assert_array_equal(_get(tree, path), expected)


def _conv2d(w):
    return w.transpose(2, 3, 1, 0)  # OIHW -> HWIO


def _check_every_loaded_value(state, variables, report):
    """Each loaded target holds exactly its source tensor in Flax layout."""
    for source_key, target in report.loaded:
        value = state[source_key]
        if target.endswith(("/kernel", "_kernel", "project_compress")):
            value = transform(value, "linear" if value.ndim == 2 else "conv")
        got = _get(variables, target)
        np.testing.assert_array_equal(got, value.reshape(got.shape))


def test_released_ifdd_state_dict_fills_every_parameter():
    spec = specs.ifdd_spec()
    state = specs.random_state_dict(spec, seed=1)
    variables = _variables("ifdd_3dvit")
    n_params = sum(x.size for x in jax.tree.leaves(variables["params"]))
    buffers = tuple(f"backbone.WaveLifts.adapt_split.index_{p}" for p in ("even", "odd"))
    assert sum(int(np.prod(s)) for k, s in spec.items() if k not in buffers) == n_params
    assert abs(n_params - 37.577e6) < 1e3  # the released model's count

    new, report = load_into(variables, state, "ifdd_3dvit")
    assert report.family == "ifdd" and report.ok
    assert not report.not_loaded and not report.resized
    assert sorted(s for s, _ in report.skipped) == sorted(buffers)
    assert len(report.loaded) == len(jax.tree.leaves(variables))
    _check_every_loaded_value(state, new, report)
    # Spot checks of the layouts, written out.
    wl = "backbone.WaveLifts."
    np.testing.assert_array_equal(
        _get(new, "params/ladm/project_compress"), state[wl + "project_compress.weight"].T
    )
    np.testing.assert_array_equal(
        _get(new, "params/ladm/updater/kv/kernel"), state[wl + "kv_d.weight"].T
    )
    np.testing.assert_array_equal(
        _get(new, "params/issm/static_offset/kernel"),
        state[wl + "adapt_split.offset_project_approx.0.weight"].T,
    )
    np.testing.assert_array_equal(
        _get(new, "params/trunk/blocks_3/attn/pool_q/pool/kernel"),
        state["backbone.backbone.blocks.3.attn.pool_q.pool.weight"].transpose(2, 3, 4, 1, 0),
    )
    conv3d = state["embed.conv_proj.weight"].transpose(2, 3, 4, 1, 0)
    _eq(new, "params/trunk/conv_proj/kernel", conv3d)
    _eq(new, "params/pyramid/level0_conv/kernel", _conv2d(state["backbone.PANLayer.0.weight"]))
    np.testing.assert_array_equal(_get(new, "params/head/logits/bias"), state["head.head.1.bias"])


def test_torchvision_mvit_v2_s_remaps_onto_the_10_block_trunk():
    state = specs.random_state_dict(specs.torchvision_mvit_spec(), seed=2)
    variables = _variables("ifdd_3dvit")
    new, report = load_into(variables, state, "ifdd_3dvit")
    assert report.family == "torchvision_mvit"
    assert report.block_remap == {**{i: i for i in range(8)}, 8: 14, 9: 15}
    np.testing.assert_array_equal(
        _get(new, "params/trunk/blocks_8/attn/qkv/kernel"), state["blocks.14.attn.qkv.weight"].T
    )
    _eq(new, "params/trunk/blocks_9/mlp_fc2/bias", state["blocks.15.mlp.3.bias"])
    _eq(new, "params/trunk/blocks_7/norm1/scale", state["blocks.7.norm1.weight"])
    _eq(new, "params/trunk/class_token", state["pos_encoding.class_token"])
    _check_every_loaded_value(state, new, report)
    skipped = {s for s, _ in report.skipped}
    unused_blocks = tuple(f"blocks.{i}." for i in range(8, 14))
    assert {k for k in state if k.startswith(unused_blocks)} <= skipped
    assert {"head.1.weight", "head.1.bias"} <= skipped
    # Everything outside the trunk is listed by name as kept at its initialisation.
    assert all(not p.startswith("params/trunk/") for p in report.not_loaded)
    assert "params/ladm/refiner/qkv/kernel" in report.not_loaded
    assert "params/pyramid/cat_conv/kernel" in report.not_loaded
    assert "params/pyramid/cat_conv/kernel" in report.format()


def test_slowfast_names_convert_like_torchvision():
    tv = specs.random_state_dict(specs.torchvision_mvit_spec(), seed=3)
    sf_spec = specs.slowfast_mvit_spec()
    assert len(sf_spec) == len(tv)
    # The same values under PySlowFast's names (spec order is the same).
    sf = {k: v.reshape(s) for (k, s), v in zip(sf_spec.items(), tv.values())}
    assert detect_family(list(sf)) == "slowfast_mvit"
    assert "blocks.1.attn.norm_q.weight" in sf and "blocks.1.proj.weight" in sf
    variables = _variables("baseline_mvit", "paper")
    a, report_a = load_into(variables, tv, "baseline_mvit")
    # PySlowFast checkpoints nest the weights under "model_state".
    b, report_b = load_into(variables, {"model_state": sf}, "baseline_mvit")
    assert report_b.family == "slowfast_mvit" and len(report_a.loaded) == len(report_b.loaded)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert report_b.not_loaded == ["params/head/logits/bias", "params/head/logits/kernel"]


def test_paper_flavor_takes_the_first_three_stages():
    state = specs.random_state_dict(specs.torchvision_mvit_spec(), seed=4)
    new, report = load_into(_variables("ifdd_3dvit", "paper"), state, "ifdd_3dvit")
    assert report.block_remap == {i: i for i in range(8)}
    # The source's 768-wide final norm cannot serve the 384-wide paper trunk: reported, not loaded.
    assert "params/trunk/norm/scale" in report.not_loaded
    reason = "final LayerNorm of a wider last stage than the target keeps"
    assert ("norm.weight", reason) in report.skipped
    # The paper flavor has no class token: the checkpoint's is skipped by name, with the reason.
    assert "class_token" not in new["params"]["trunk"]
    skipped = dict(report.skipped)
    assert "has none" in skipped["pos_encoding.class_token"]
    assert report.ok


def test_rel_pos_tables_are_resized_for_another_input():
    state = specs.random_state_dict(specs.torchvision_mvit_spec(), seed=5)
    variables = _variables("ifdd_3dvit", frames=8, size=64)
    new, report = load_into(variables, state, "ifdd_3dvit")
    resized = {t: (s, old, new_shape) for s, t, old, new_shape in report.resized}
    assert "params/trunk/blocks_0/attn/rel_pos_h" in resized
    # Block 0 at 8×64²: grid 8×16² (the released embedding strides time only above 8 frames),
    # kv stride 8 -> 2·16 - 1 = 31 rows (224 px: 111); t: 2·8 - 1 = 15 rows, as at 16 frames.
    assert resized["params/trunk/blocks_0/attn/rel_pos_h"][2] == (31, 96)
    assert "params/trunk/blocks_0/attn/rel_pos_t" not in resized
    _eq(new, "params/trunk/blocks_0/attn/rel_pos_t", state["blocks.0.attn.rel_pos_t"])
    # torchvision's time stride 2 (paper flavor): grid 4×16², t: 2·4 - 1 = 7 rows.
    _, paper = load_into(_variables("ifdd_3dvit", "paper", frames=8, size=64), state, "ifdd_3dvit")
    resized = {t: new_shape for s, t, old, new_shape in paper.resized}
    assert resized["params/trunk/blocks_0/attn/rel_pos_t"] == (7, 96)
    expected = linear_resize_matrix(111, 31) @ state["blocks.0.attn.rel_pos_h"].astype(np.float64)
    got = _get(new, "params/trunk/blocks_0/attn/rel_pos_h")
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    # A table with another head width cannot be resized: a clear error.
    bad = dict(state)
    bad["blocks.0.attn.rel_pos_w"] = np.zeros((111, 48), np.float32)
    with pytest.raises(ConversionError, match=r"blocks\.0\.attn\.rel_pos_w \[111, 48\]"):
        load_into(variables, bad, "ifdd_3dvit")


def test_released_mafw_32_frame_state_dict_converts_without_resizing():
    """The released MAFW model (clip_duration 32) has T_X = 8: its temporal shapes are those of
    the DFEW model (rel_pos_t 15 rows, temporal_pos [8, 768], ISSM's offset Linears 64 -> 4,
    project_compress 196 -> 1), and our reference flavor at 32 frames takes it as is."""
    spec = specs.ifdd_spec(num_classes=7, clip=(32, 224, 224))
    assert spec["backbone.backbone.blocks.0.attn.rel_pos_t"] == (15, 96)
    assert spec["backbone.WaveLifts.temporal_pos"] == (8, 768)
    assert spec["backbone.WaveLifts.adapt_split.offset_project_approx.0.weight"] == (4, 64)
    assert spec["backbone.WaveLifts.project_compress.weight"] == (1, 196)
    state = specs.random_state_dict(spec, seed=11)
    variables = _variables("ifdd_3dvit", frames=32)
    # The released model's parameter count, as at 16 frames (index buffers aside).
    assert abs(sum(x.size for x in jax.tree.leaves(variables["params"])) - 37.577e6) < 1e3
    new, report = load_into(variables, state, "ifdd_3dvit")
    assert report.ok and not report.resized and not report.not_loaded
    # Where the temporal tensors land, written out rather than taken from the report.
    wl, split = "backbone.WaveLifts.", "backbone.WaveLifts.adapt_split."
    _eq(new, "params/ladm/positions/temporal_pos", state[wl + "temporal_pos"])
    _eq(new, "params/ladm/project_compress", state[wl + "project_compress.weight"].T)
    _eq(new, "params/issm/static_offset/kernel", state[split + "offset_project_approx.0.weight"].T)
    _eq(new, "params/issm/dynamic_offset/kernel", state[split + "offset_project_detail.0.weight"].T)
    _eq(new, "params/issm/time_project/layer0_kernel", state[split + "time_project.0.weight"].T)
    _eq(new, "params/issm/time_project/layer2_kernel", state[split + "time_project.2.weight"].T)
    _eq(new, "params/issm/dim_project/kernel", _conv2d(state[split + "dim_project.0.weight"]))
    for i in range(10):
        _eq(
            new,
            f"params/trunk/blocks_{i}/attn/rel_pos_t",
            state[f"backbone.backbone.blocks.{i}.attn.rel_pos_t"],
        )
    _eq(
        new,
        "params/trunk/conv_proj/kernel",
        state["embed.conv_proj.weight"].transpose(2, 3, 4, 1, 0),
    )
    _eq(new, "params/head/logits/kernel", state["head.head.1.weight"].T)
    # The 32-frame checkpoint has the 16-frame one's shapes, so its tensors must land in the DFEW
    # model (placement written out in test_released_ifdd_state_dict_fills_every_parameter)
    # exactly where they land in the 32-frame one, every leaf.
    assert spec == specs.ifdd_spec(num_classes=7)
    dfew, _ = load_into(_variables("ifdd_3dvit"), state, "ifdd_3dvit")
    flat_dfew = jax.tree_util.tree_leaves_with_path(dfew)
    assert jax.tree.structure(dfew) == jax.tree.structure(new)
    for (path, a), b in zip(flat_dfew, jax.tree.leaves(new), strict=True):
        np.testing.assert_array_equal(b, a, err_msg=jax.tree_util.keystr(path))


def test_missing_wrong_shape_and_unexpected_keys_are_errors_by_name():
    state = specs.random_state_dict(specs.ifdd_spec(), seed=6)
    variables = _variables("ifdd_3dvit")
    missing = {k: v for k, v in state.items() if k != "backbone.WaveLifts.q_a.weight"}
    expected = r"missing.*\n.*params/ladm/updater/q/kernel <- backbone\.WaveLifts\.q_a\.weight"
    with pytest.raises(ConversionError, match=expected):
        load_into(variables, missing, "ifdd_3dvit")
    wrong = dict(state)
    wrong["backbone.CatConv.weight"] = np.zeros((768, 1000, 1, 1), np.float32)
    expected = r"wrong-shaped.*\n.*backbone\.CatConv\.weight \[768, 1000, 1, 1\]"
    with pytest.raises(ConversionError, match=expected):
        load_into(variables, wrong, "ifdd_3dvit")
    extra = dict(state)
    extra["backbone.WaveLifts.surprise.weight"] = np.zeros((3,), np.float32)
    expected = r"unexpected.*\n.*backbone\.WaveLifts\.surprise\.weight"
    with pytest.raises(ConversionError, match=expected):
        load_into(variables, extra, "ifdd_3dvit")
    # Non-strict: the same findings in the report, the rest converted.
    _, report = load_into(variables, missing, "ifdd_3dvit", strict=False)
    assert report.missing == [("params/ladm/updater/q/kernel", "backbone.WaveLifts.q_a.weight")]
    assert not report.ok and "1 missing key" in report.format()


def test_family_and_model_errors():
    with pytest.raises(ValueError, match="cannot recognise the checkpoint"):
        load_into(_variables("baseline_mvit", "paper"), {"weird.weight": np.zeros(3)}, "x")
    mobilenet = specs.random_state_dict(specs.torchvision_mobilenet_v2_spec())
    expected = "torchvision_mobilenet_v2 checkpoint cannot initialise 'ifdd_3dvit'"
    with pytest.raises(ConversionError, match=expected):
        load_into(_variables("ifdd_3dvit"), mobilenet, "ifdd_3dvit")
    with pytest.raises(ConversionError, match="no converter for model 'resnet'"):
        load_into({}, mobilenet, "resnet")


def test_mobilenet_v2_baseline_every_layer_and_batch_stats():
    state = specs.random_state_dict(specs.torchvision_mobilenet_v2_spec(), seed=7)
    variables = _variables("baseline_mobilenet_v2", "paper", frames=2, size=32)
    new, report = load_into(variables, state, "baseline_mobilenet_v2")
    assert report.ok and report.family == "torchvision_mobilenet_v2"
    assert sorted(report.not_loaded) == sorted(
        f"params/head/{m}/{leaf}" for m in ("hidden", "logits") for leaf in ("bias", "kernel")
    )
    _check_every_loaded_value(state, new, report)
    _eq(new, "params/trunk/stem/conv/kernel", _conv2d(state["features.0.0.weight"]))
    _eq(new, "batch_stats/trunk/stem/bn/var", state["features.0.1.running_var"])
    # Group 1 (no expansion) and group 6's last block (features.16).
    g1 = "params/trunk/groups/group1_block0"
    _eq(new, g1 + "/depthwise/conv/kernel", _conv2d(state["features.1.conv.0.0.weight"]))
    _eq(new, g1 + "/project/bn/bias", state["features.1.conv.2.bias"])
    g6 = "batch_stats/trunk/groups/group6_block2"
    _eq(new, g6 + "/expand/bn/mean", state["features.16.conv.0.1.running_mean"])
    skipped = dict(report.skipped)
    assert "features.17.conv.0.0.weight" in skipped and "classifier.1.weight" in skipped
    assert skipped["features.0.1.num_batches_tracked"].startswith("BatchNorm step counter")


def test_mobilenet_v2_into_ifdd_2dcnn_reports_the_3d_stem():
    state = specs.random_state_dict(specs.torchvision_mobilenet_v2_spec(), seed=8)
    variables = _variables("ifdd_2dcnn", "paper", frames=4, size=32)
    new, report = load_into(variables, state, "ifdd_2dcnn")
    assert report.ok
    stem = ("params/trunk/stem_conv/kernel", "params/trunk/stem_bn/scale")
    for leaf in stem + ("batch_stats/trunk/stem_bn/mean",):
        assert leaf in report.not_loaded
    skipped = dict(report.skipped)
    assert "Conv3d stem" in skipped["features.0.0.weight"]
    # Group 6 is not part of IFDD-2DCNN.
    assert "MobileNetV2 layer" in skipped["features.14.conv.0.0.weight"]
    np.testing.assert_array_equal(
        _get(new, "params/trunk/groups/group5_block2/project/conv/kernel"),
        state["features.13.conv.2.weight"].transpose(2, 3, 1, 0),
    )
    assert all(
        p.startswith("params/trunk/groups/") or p.startswith("batch_stats/trunk/groups/")
        for _, p in report.loaded
    )


def test_file_formats_without_torch(tmp_path):
    state = specs.random_state_dict(specs.torchvision_mobilenet_v2_spec(), seed=9)
    st = tmp_path / "mobilenet.safetensors"
    write_safetensors(str(st), state)
    npz = tmp_path / "mobilenet.npz"
    np.savez(npz, **{"module." + k: v for k, v in state.items()})  # DataParallel prefix undone
    for path in (st, npz):
        read = read_state_dict(str(path))
        assert sorted(read) == sorted(state)
        for k in state:
            np.testing.assert_array_equal(read[k], state[k])
            assert read[k].dtype == state[k].dtype
    with pytest.raises(SourceError, match="does not exist"):
        read_state_dict(str(tmp_path / "nothing.pth"))
    with pytest.raises(SourceError, match="unknown checkpoint type"):
        (tmp_path / "x.h5").write_bytes(b"")
        read_state_dict(str(tmp_path / "x.h5"))


def test_command_line_writes_a_checkpoint_that_load_into_reads(tmp_path, capsys):
    state = specs.random_state_dict(specs.torchvision_mobilenet_v2_spec(), seed=10)
    source = tmp_path / "mobilenet_v2.safetensors"
    write_safetensors(str(source), state)
    out = tmp_path / "converted"
    rc = convert_main(
        [
            "--source",
            str(source),
            "--model",
            "baseline_mobilenet_v2",
            "--out",
            str(out),
            "--num-frames",
            "2",
            "--image-size",
            "32",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "params/head/hidden/kernel" in printed and "wrote" in printed
    assert (out / "conversion_report.txt").exists()
    # The output is itself a source (what config.init_from may name).
    variables = _variables("baseline_mobilenet_v2", "paper", frames=2, size=32)
    new, report = load_into(variables, str(out), "baseline_mobilenet_v2")
    assert report.family == "flax" and report.ok and not report.not_loaded
    _eq(new, "params/trunk/stem/conv/kernel", _conv2d(state["features.0.0.weight"]))
    # A misfit exits with status 1 and names the key.
    del state["features.3.conv.1.0.weight"]
    write_safetensors(str(source), state)
    rc = convert_main(
        [
            "--source",
            str(source),
            "--model",
            "baseline_mobilenet_v2",
            "--out",
            str(tmp_path / "bad"),
            "--num-frames",
            "2",
            "--image-size",
            "32",
        ]
    )
    assert rc == 1
    assert "features.3.conv.1.0.weight" in capsys.readouterr().err
