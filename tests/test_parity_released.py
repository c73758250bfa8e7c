"""bench/parity_vs_released.py: its pure helpers (relative error, groups, argument parsing, the
stub imports, the optimiser positioned at an epoch, the mapping of torch-named gradients onto our
parameter groups, the reduced sizes, the seeded tensors and digests) without the authors' code,
and our reference flavor against the committed fixture of their code
(tests/fixtures/released_parity, written by the tool's --write_fixture): forward values, both loss
terms, gradients, the optimiser and the lr schedule at 16×64², the first block of each stage,
batch 2. That test needs neither torch nor the released code.

With IFDD_RELEASED_DIR set to a checkout of the authors' code, also that the released model
loads, converts completely and agrees on the lr and ISSM positions, and that the fixture is what
that code writes today.

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
FIXTURE = ROOT / parity.FIXTURE_DIR


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
    assert (args.size, args.write_fixture) == (224, None)
    args = parity.parse_args(["--released", "/x", "--write_fixture", "out"])
    assert (args.size, args.write_fixture) == (parity.FIXTURE_SIZE, "out")
    assert parity.parse_args(["--released", "/x", "--size", "96"]).size == 96
    for bad in (
        ["--released", "/x", "--steps", "-1"],
        ["--released", "/x", "--batch", "0"],
        ["--released", "/x", "--size", "100"],
        ["--released", "/x", "--size", "32"],
        [],
    ):
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


def test_reduced_sizes_and_blocks():
    assert [parity.check_size(s) for s in (64, 96, 192, 224)] == [64, 96, 192, 224]
    for bad in (32, 80, 256):
        with pytest.raises(ValueError):
            parity.check_size(bad)
    assert parity.check_blocks([8, 0, 3, 1, 3]) == (0, 1, 3, 8)
    assert parity.check_blocks(range(10)) == tuple(range(10))
    for bad in ([0, 1, 3], [0, 1, 3, 8, 10], [1, 3, 8]):  # a stage's first block missing, or 10
        with pytest.raises(ValueError):
            parity.check_blocks(bad)


def test_seeded_tensors():
    """Rebuilt bit for bit from (seed, stream, name), independent of the other tensors, with the
    rule's mean and standard deviation."""
    a = parity.seeded_tensor("x.weight", (400, 300), seed=0, stream=0, mean=1.0, std=0.1)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, parity.seeded_tensor("x.weight", (400, 300), 0, 0, 1.0, 0.1))
    assert abs(a.mean() - 1.0) < 1e-3 and abs(a.std() - 0.1) < 1e-3
    assert a.min() >= 1.0 - 0.1 * np.sqrt(3) and a.max() <= 1.0 + 0.1 * np.sqrt(3)  # uniform
    for other in (("y.weight", 0, 0), ("x.weight", 1, 0), ("x.weight", 0, 1)):
        name, seed, stream = other
        b = parity.seeded_tensor(name, (400, 300), seed, stream, 1.0, 0.1)
        assert not np.array_equal(a, b), other
    rules = [
        parity.TensorRule("a", (3, 4), 0.5, 2.0, 0.0),
        parity.TensorRule("b", (5,), 0.0, 1.0, 1e-8),
    ]
    weights = parity.seeded_tensors(rules, 0, parity.WEIGHT_STREAM, "weight")
    np.testing.assert_array_equal(weights["a"], parity.seeded_tensor("a", (3, 4), 0, 0, 0.5, 2.0))
    grads = parity.seeded_tensors(rules, 0, parity.GRAD_STREAM, "grad")
    assert not grads["a"].any() and 0 < np.abs(grads["b"]).max() < 2e-8
    assert parity.grad_class(0.0) == "decay only" and parity.grad_class(1e-8) == "eps scale"


def test_digests_estimate_the_relative_error():
    """The probe products of a difference Δ estimate ||Δ|| (digest_errors): exact agreement
    gives 0, a difference of known size is estimated within a small factor, and the tensor
    carrying it is named."""
    rng = np.random.default_rng(0)
    names = [f"t{i}" for i in range(40)]
    ref = {n: rng.standard_normal((30, 20)).astype(np.float32) for n in names}
    ours = dict(ref)
    ours["t7"] = ref["t7"] + 0.05 * rng.standard_normal((30, 20)).astype(np.float32)
    true = np.linalg.norm(ours["t7"] - ref["t7"]) / np.sqrt(sum(np.sum(v**2) for v in ref.values()))
    digests = []
    for tensors in (ours, ref):
        d = parity.Digest.empty(len(names))
        d.add_norms([tensors[n] for n in names])
        for k in range(parity.PROBES):
            probe = {
                n: parity.seeded_tensor(n, (30, 20), 0, parity.PROBE_STREAM + k) for n in names
            }
            d.add_products(k, [tensors[n] for n in names], [probe[n] for n in names])
        digests.append(d)
    groups = ["a"] * 20 + ["b"] * 20
    errors = parity.digest_errors(digests[0], digests[1], groups, names)
    assert errors["b"].error == 0.0
    assert errors["a"].worst_leaf == "t7" and errors["all"].worst_share == pytest.approx(1.0)
    assert true / 3 < errors["all"].error < 3 * true
    same = parity.digest_errors(digests[1], digests[1], groups, names)
    assert same["all"].error == 0.0


def _fixture_failures(part: str) -> list[str]:
    return parity.fixture_failures(parity.check_fixture(str(FIXTURE), parts=(part,)))


def test_parity_with_the_released_fixture_step():
    """Our reference flavor against the released code's recorded step (check_fixture, "step"):
    the targets, forward values from the trunk to the logits, the soft-target CE and lifting
    terms and the gradients per group, each within FIXTURE_THRESHOLDS. No torch, no released
    code: the fixture's weights and batch are rebuilt from their seeds."""
    meta, _, _ = parity.read_fixture(str(FIXTURE))
    size = sum(f.stat().st_size for f in FIXTURE.iterdir() if f.is_file())
    assert size < 5 * 2**20, f"the fixture is {size} bytes"
    assert len(meta["released"]["commit"]) == 40 and meta["versions"]["torch"]
    failures = _fixture_failures("step")
    assert not failures, "over the fixture's thresholds:\n" + "\n".join(failures)


def test_parity_with_the_released_fixture_optimizer():
    """Our reference optimiser and schedule against the released ones (check_fixture,
    "optimizer"): the lr at the fixture's epoch and at every epoch, and two AdamW steps on
    synthetic gradients (Adam, eps-scale and decay-only tensors), within FIXTURE_THRESHOLDS."""
    failures = _fixture_failures("optimizer")
    assert not failures, "over the fixture's thresholds:\n" + "\n".join(failures)


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


@pytest.mark.skipif(
    not RELEASED_DIR,
    reason="needs the authors' code: set IFDD_RELEASED_DIR to a checkout of CyberPegasus/IFDD",
)
def test_fixture_is_what_the_released_code_writes(tmp_path):
    """The committed fixture is what write_fixture gives with the released code today (same
    settings): the same rules, seeds and lr, forward values, losses and digests within float32
    rounding (torch's CPU kernels may round differently on another machine)."""
    pytest.importorskip("torch", reason="the torch extra: pip install '.[torch]'")
    meta, arrays, _ = parity.read_fixture(str(FIXTURE))
    args = parity.parse_args(
        ["--released", RELEASED_DIR, "--write_fixture", str(tmp_path), "--size", str(meta["size"])]
        + [
            "--batch",
            str(meta["batch"]),
            "--epoch",
            str(meta["epoch"]),
            "--seed",
            str(meta["seed"]),
        ]
    )
    parity.write_fixture(args)
    new_meta, new_arrays, _ = parity.read_fixture(str(tmp_path))
    for key in ("rules", "buffers", "labels", "weights_sha256", "clips_sha256", "blocks"):
        assert new_meta[key] == meta[key], key
    np.testing.assert_allclose(new_meta["lr"]["schedule"], meta["lr"]["schedule"], rtol=1e-12)
    np.testing.assert_allclose(new_meta["targets"], meta["targets"], rtol=1e-6)
    for name, value in meta["loss"].items():
        assert new_meta["loss"][name] == pytest.approx(value, rel=1e-5), name
    assert set(new_arrays) == set(arrays)
    for key, value in arrays.items():
        assert parity.relative_error(new_arrays[key], value) < 1e-4, key
