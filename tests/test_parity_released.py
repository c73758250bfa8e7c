"""bench/parity_vs_released.py: its pure helpers (relative error, groups, argument parsing, the
stub imports, the optimiser positioned at an epoch, the mapping of torch-named gradients onto our
parameter groups) without the authors' code; with IFDD_RELEASED_DIR set to a checkout of it,
also that the released model loads, converts completely and agrees on the lr and ISSM positions.

The full comparison (forward, loss, gradients, steps at 16×224²) takes minutes on a CPU: it is the
tool's own run (README, "Parity with the released code"), not a test.
"""

import importlib.util
import os
import pathlib
import sys

import jax.numpy as jnp
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "parity_vs_released", ROOT / "bench" / "parity_vs_released.py"
)
parity = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = parity  # its dataclasses resolve their annotations through sys.modules
_spec.loader.exec_module(parity)

RELEASED_DIR = os.environ.get("IFDD_RELEASED_DIR")


def test_relative_error():
    b = np.array([3.0, 4.0], np.float32)
    assert parity.relative_error(b, b) == 0.0
    assert parity.relative_error(b + np.array([0.0, 0.5]), b) == pytest.approx(0.1)
    assert parity.relative_error(np.zeros(2), np.zeros(2)) == 0.0  # 0 / tiny
    assert parity.relative_error(1.0, 0.0) > 1e30  # a difference against an exact zero
    with pytest.raises(ValueError, match="shapes differ"):
        parity.relative_error(np.zeros(2), np.zeros(3))


def test_param_groups_and_group_errors():
    assert parity.param_group("params/trunk/blocks_3/attn/qkv/kernel") == "trunk"
    assert parity.param_group("params/ladm/project_compress") == "ladm"
    for bad in ("batch_stats/trunk/x", "params/other/x", "params/head"):
        with pytest.raises(ValueError):
            parity.param_group(bad)
    ref = {
        "params/trunk/a": np.array([1.0, 0.0]),
        "params/trunk/b": np.array([0.0, 1.0]),
        "params/head/c": np.array([2.0]),
    }
    ours = dict(ref, **{"params/trunk/b": np.array([0.0, 1.1])})
    errors = parity.group_errors(ours, ref)
    assert errors["trunk"].error == pytest.approx(0.1 / np.sqrt(2))
    assert errors["trunk"].worst_leaf == "params/trunk/b"
    assert errors["trunk"].worst_error == pytest.approx(0.1)
    assert errors["trunk"].worst_share == pytest.approx(1.0)
    assert errors["head"].error == 0.0 and errors["pyramid"].error == 0.0
    assert errors["all"].error == pytest.approx(0.1 / np.sqrt(6))
    with pytest.raises(ValueError, match="differ in their leaves"):
        parity.group_errors({"params/head/c": 1.0}, ref)


def test_argument_parsing():
    args = parity.parse_args(["--released", "/x"])
    assert (args.released, args.batch, args.steps, args.epoch, args.json) == ("/x", 2, 5, 10, None)
    args = parity.parse_args(
        ["--released", "/x", "--batch", "1", "--steps", "0", "--epoch", "3", "--json", "out.json"]
    )
    assert (args.batch, args.steps, args.epoch, args.json) == (1, 0, 3, "out.json")
    for bad in (["--released", "/x", "--steps", "-1"], ["--released", "/x", "--batch", "0"], []):
        with pytest.raises(SystemExit):
            parity.parse_args(bad)


def test_stubbed_imports_only_during_the_block():
    name = "ifdd_parity_surely_missing_module"
    with parity.stubbed_imports([name, "numpy"]) as stubbed:
        assert stubbed == [name]  # numpy is installed: never stubbed
        from ifdd_parity_surely_missing_module import logger, register_model
        from ifdd_parity_surely_missing_module.sub.deeper import anything

        logger.info("a stubbed loguru logger logs through logging")
        assert register_model(len) is len
        with pytest.raises(RuntimeError, match="parity tool stubbed"):
            anything()
    assert name not in sys.modules
    with pytest.raises(ImportError):
        __import__(name)


def test_optimizer_positioned_at_an_epoch():
    """Our reference optimiser with its schedule at epoch 10 and Adam's counter at 0: the first
    AdamW step is -lr(10) · (g/|g| + wd · p), the form of a fresh torch AdamW step."""
    from ifdd_jax.config_lib import load_config_file
    from ifdd_jax.optim import make_optimizer

    config = load_config_file(parity.CONFIG)
    per_epoch = 5
    tx, schedule = make_optimizer(
        config, steps_per_epoch=per_epoch, total_steps=config.num_epochs * per_epoch
    )
    params = {"w": jnp.array([[0.5, -1.0], [2.0, 0.25]], jnp.float32)}
    grads = {"w": jnp.array([[0.3, -0.2], [1e-3, -4.0]], jnp.float32)}
    state = parity.start_schedule_at(tx.init(params), 10 * per_epoch)
    lr = float(schedule(10 * per_epoch))
    assert lr == pytest.approx(5e-5, rel=1e-6)  # base lr = 1e-4 / 32 · 16 at the cosine's start
    for _ in range(per_epoch):  # every compared step stays in epoch 10
        updates, state = tx.update(grads, state, params)
        expected = -lr * (np.sign(grads["w"]) + config.optim.weight_decay * params["w"])
        np.testing.assert_allclose(updates["w"], expected, rtol=1e-4)
    with pytest.raises(ValueError, match="no schedule state"):
        parity.start_schedule_at((), 3)


def test_torch_named_gradients_land_in_their_groups():
    """Gradients named like the released state dict go through the converter's key map: every
    torch tensor reaches our leaf of its module's group, transposed to our layout."""
    from ifdd_jax.config_lib import load_config_file
    from ifdd_jax.convert import specs
    from ifdd_jax.models import build_model

    def torch_group(name: str) -> str:
        if name.startswith(("embed.", "backbone.backbone.")):
            return "trunk"
        if name.startswith(("backbone.PANLayer.", "backbone.CatConv.")):
            return "pyramid"
        if name.startswith("backbone.WaveLifts.adapt_split."):
            return "issm"
        if name.startswith("backbone.WaveLifts."):
            return "ladm"
        assert name.startswith("head."), name
        return "head"

    spec = specs.ifdd_spec()
    buffers = [k for k in spec if k.endswith(("index_even", "index_odd"))]
    # Each tensor holds its group's number: after mapping, a leaf must hold its own group's.
    grads = {
        name: np.full(shape, parity.GROUPS.index(torch_group(name)) + 1.0, np.float32)
        for name, shape in spec.items()
        if name not in buffers
    }
    like = parity.zero_variables(build_model(load_config_file(parity.CONFIG)))
    mapped = parity.torch_to_ours(grads, like)
    assert set(mapped) == set(parity.flatten({"params": like["params"]}))
    for path, value in mapped.items():
        assert np.all(value == parity.GROUPS.index(parity.param_group(path)) + 1.0), path
    # A Linear weight arrives transposed: [out, in] -> [in, out].
    kernel = mapped["params/ladm/updater/kv/kernel"]
    assert kernel.shape == spec["backbone.WaveLifts.kv_d.weight"][::-1]


@pytest.mark.skipif(
    not RELEASED_DIR,
    reason="needs the authors' code: set IFDD_RELEASED_DIR to a checkout of CyberPegasus/IFDD",
)
def test_released_model_loads_and_converts():
    torch = pytest.importorskip("torch", reason="the torch extra: pip install '.[torch]'")
    released = parity.load_released(RELEASED_DIR, seed=0)
    for name in released.stubbed:
        assert name in parity.STUBBABLE and name not in sys.modules
    changed = parity.disable_randomness(released.model)
    assert changed.get("StochasticDepth", 0) == 11  # 10 MViT blocks + the LADM refiner
    assert all(
        m.p == 0.0 for m in released.model.modules() if hasattr(m, "p") and hasattr(m, "mode")
    )
    state = {k: v.detach().numpy() for k, v in released.model.state_dict().items()}
    side = parity.JaxSide(state, epoch=10, steps=1)
    assert side.report.ok and not side.report.not_loaded
    assert side.lr == pytest.approx(parity.released_lr(released, 10), rel=1e-6)
    # The whole per-epoch schedule, warmup quirk included.
    epochs = np.arange(released.exp.max_epoch)
    np.testing.assert_allclose(
        np.asarray(side.schedule(epochs * side.per_epoch)),
        [parity.released_lr(released, int(e)) for e in epochs],
        rtol=1e-5,
    )
    # Zero offsets: the released reading positions of the even/odd slots
    # (docs/reference-ifdd.md §3a).
    split = released.model.backbone.WaveLifts.adapt_split
    even = torch.tensor([[0.0, 2.0, 4.0, 6.0]])
    expected = np.clip(8 * np.array([0.0, 2.0, 4.0, 6.0]) / 7 - 0.5, 0, 7)
    got = parity.released_read_positions(split, even, 8)
    np.testing.assert_allclose(got[0], expected, atol=1e-5)
