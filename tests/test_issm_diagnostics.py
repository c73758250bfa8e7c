"""ISSM/LADM diagnostics (`python -m ifdd_jax.analysis.issm_diagnostics`) on the shared tiny
checkpoint of tests/test_predict.py: every figure is finite and in range, the attention spread is
0 over identical clips and positive over clips with different motion, and models without ISSM are
skipped with a message."""

import json
import math
import os

import jax
import numpy as np
import pytest

from ifdd_jax import sharding, train_state
from ifdd_jax.analysis import issm_diagnostics, param_movement
from ifdd_jax.optim import make_optimizer
from ifdd_jax.trained_run import load_trained
from tests.tiny_runs import shared_run_config, tiny_run


def _numbers(value):
    """Every number in a nested dict/list."""
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def test_command_writes_finite_figures(run_dir, tmp_path, capsys):
    out = str(tmp_path / "diag.json")
    assert issm_diagnostics.main(["--workdir", run_dir, "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "attention A_S: spread across clips" in printed and f"wrote {out}" in printed
    d = json.load(open(out))
    assert d["model"] == "ifdd_2dcnn" and d["split"] == "test" and d["num_clips"] == 12
    assert d["frames_x"] == 4 and d["slots"] == 2  # 8 input frames -> X has T/2 = 4
    assert all(math.isfinite(v) for v in _numbers(d))
    for group in ("static", "dynamic"):
        a = d["attention"][group]
        assert a["spread"] >= 0 and 0 <= a["row_entropy"] <= 1 + 1e-9
        assert a["identity_to_uniform"] == pytest.approx(math.sqrt(3))
        assert np.allclose(np.sum(a["mean"], axis=1), 1.0, atol=1e-5)  # rows of a softmax
    i = d["indices"]
    assert i["min_distance_min"] <= i["min_distance_mean"] <= i["paired_distance_mean"] + 1e-9
    assert all(0 <= p <= 3 for p in i["static_mean"] + i["dynamic_mean"])
    f = d["lifting"]
    assert f["yd_over_xd_norm"] > 0 and -1 <= f["cos_xs_xd_paired"] <= 1
    assert f["lifting_loss"] >= 0 and f["mode"] == "tc"


def _clip(seed: int = 0) -> np.ndarray:
    """A smooth random image `[32, 32, 3]` in [0, 1] (the unit normalisation of the run)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, (8, 8, 3)).astype(np.float32)
    return np.kron(coarse, np.ones((4, 4, 1), np.float32))


def test_attention_spread_is_zero_for_identical_clips_only(run_dir):
    trained = issm_diagnostics.load_run(run_dir)
    image = _clip()
    moving = np.stack([np.roll(image, 2 * t, axis=1) for t in range(8)])  # [8, 32, 32, 3]
    same = np.repeat(moving[None], 5, axis=0)
    d = issm_diagnostics.diagnose_clips(trained.model, trained.variables, same)
    assert d["num_clips"] == 5
    for group in ("static", "dynamic"):
        assert d["attention"][group]["spread"] <= 1e-7
    assert d["attention"]["similarity"]["spread"] <= 1e-6
    assert d["indices"]["static_std_mean"] <= 1e-6 and d["indices"]["dynamic_std_mean"] <= 1e-6

    # The same face with different motion: still, sliding right, sliding down, flickering,
    # and a second face sliding left.
    other = _clip(1)
    clips = np.stack(
        [
            np.repeat(image[None], 8, axis=0),
            moving,
            np.stack([np.roll(image, 3 * t, axis=0) for t in range(8)]),
            np.stack([image * (0.3 if t % 2 else 1.0) for t in range(8)]),
            np.stack([np.roll(other, -2 * t, axis=1) for t in range(8)]),
        ]
    )
    d = issm_diagnostics.diagnose_clips(trained.model, trained.variables, clips, batch_size=4)
    assert d["num_clips"] == 5  # two batches, the second padded
    for group in ("static", "dynamic"):
        assert d["attention"][group]["spread"] > 1e-6
    assert d["attention"]["similarity"]["spread"] > 1e-5


def test_models_without_issm_are_skipped(tmp_path, capsys):
    from ifdd_jax import train

    workdir = str(tmp_path / "baseline")
    train.write_config(
        shared_run_config(str(tmp_path / "data"), model_name="baseline_mobilenet_v2"), workdir
    )  # the config is enough: nothing is restored for a baseline
    out = str(tmp_path / "skip.json")
    assert issm_diagnostics.main(["--workdir", workdir, "--out", out]) == 0
    assert "skipped: " in capsys.readouterr().out
    assert "baseline_mobilenet_v2 has no ISSM" in json.load(open(out))["skipped"]
    assert not os.path.exists(os.path.join(workdir, "checkpoints"))


def test_training_figures_measure_movement_from_the_seeds_initialisation(run_dir):
    """θ₀ is rebuilt exactly as the trainer made it: the trainer's own initial state (same seed,
    same key split) equals param_movement.initial_params, and the run's movement report has the
    ISSM offset Linears and the lr budget Σ lr of its steps."""
    trained = load_trained(run_dir)
    config = trained.config
    tx, schedule = make_optimizer(config, steps_per_epoch=6, total_steps=6)
    mesh = sharding.make_mesh(jax.devices()[:1])
    state = train_state.create_state(trained.model, tx, config, mesh)
    initial = param_movement.initial_params(trained.model, config)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(initial), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    d = issm_diagnostics.diagnose_run(run_dir)
    t = d["training"]
    assert t["lr"]["steps"] == trained.step == 6
    assert t["lr"]["lr_sum"] == pytest.approx(sum(float(schedule(s)) for s in range(6)), rel=1e-5)
    moved = t["movement"]
    assert {"trunk", "head", "issm/static_offset", "issm/dynamic_offset"} <= set(moved)
    assert moved["issm/descriptor_bias"]["relative_change"] is None  # zero-initialised
    for g in moved.values():
        # Adam moves an entry by at most about Σ lr (here with an lr never above its peak).
        assert 0 < g["mean_abs_change"] <= 1.5 * t["lr"]["lr_sum"]


def _motion_clips() -> np.ndarray:
    """Five 8×32² clips of the same faces with different motion: still, sliding right, sliding
    down, flickering, and a second face sliding left."""
    image, other = _clip(), _clip(1)
    return np.stack(
        [
            np.repeat(image[None], 8, axis=0),
            np.stack([np.roll(image, 2 * t, axis=1) for t in range(8)]),
            np.stack([np.roll(image, 3 * t, axis=0) for t in range(8)]),
            np.stack([image * (0.3 if t % 2 else 1.0) for t in range(8)]),
            np.stack([np.roll(other, -2 * t, axis=1) for t in range(8)]),
        ]
    )


def _offset_kernels_zeroed(variables: dict) -> dict:
    params = jax.tree_util.tree_map_with_path(
        lambda path, v: (
            v * 0
            if any(getattr(k, "key", None) in ("static_offset", "dynamic_offset") for k in path)
            and getattr(path[-1], "key", None) == "kernel"
            else v
        ),
        variables["params"],
    )
    return dict(variables, params=params)


@pytest.fixture(scope="session")
def trained_80_steps(tmp_path_factory):
    """The tiny run in the ISSM configuration the dilution study recommends (the paper flavor's
    ISSM as configs/default.py sets it), trained for 80 steps instead of 6: over the first ~30
    steps the frame similarity is still nearly the same for every clip (A's spread across clips
    0.004 at step 30, 0.16 at step 80 on this data), so the indices cannot depend on the clip
    yet."""
    return tiny_run(
        tmp_path_factory,
        "tiny_run_80_steps",
        num_train_steps=80,
        checkpoint_every_steps=80,
        log_every_steps=40,
    )


def test_trained_issm_indices_depend_on_the_clips_motion(trained_80_steps):
    """After training, clips with different motion are read at different positions.

    Controls, each able to fail: the run's own initialisation (the seed's θ₀, what training
    started from) reads the same clips at nearly the same positions, so the spread is learned
    rather than something any weights show; and with the offset Linears' kernels zeroed (a
    learned but fixed split) every clip is read where the learned biases alone put it,
    clip(I₀ + L·tanh(b), 0, T_X - 1), written out here from the checkpoint."""
    trained = issm_diagnostics.load_run(trained_80_steps)
    config = trained.config
    assert config.model.issm == "issm" and config.flavor == "paper"
    assert trained.step == 80
    clips = _motion_clips()

    def indices(variables: dict) -> dict:
        return issm_diagnostics.diagnose_clips(trained.model, variables, clips)["indices"]

    def spread(d: dict) -> float:
        return (d["static_std_mean"] + d["dynamic_std_mean"]) / 2

    learned = spread(indices(trained.variables))
    assert learned > 0.01  # frames; 0.04 when this test was written

    # θ₀ as the trainer made it (same seed and key split as param_movement.initial_params).
    init_rng, dropout_rng, _ = jax.random.split(jax.random.key(config.seed), 3)
    rngs = {"params": init_rng, "dropout": dropout_rng}
    initial = train_state.init_variables(trained.model, config, rngs)
    assert spread(indices(initial)) < 0.001  # 1e-5 when this test was written

    # Bias only: T_X = 4 frames of X, L = T_X / 2 (the paper's range), I₀ = even / odd frames.
    fixed = indices(_offset_kernels_zeroed(trained.variables))
    issm_params = trained.variables["params"]["issm"]
    frames_x, limit = 4, 2.0
    for group, first in (("static", 0.0), ("dynamic", 1.0)):
        bias = np.asarray(issm_params[f"{group}_offset"]["bias"], np.float64)
        expected = np.clip(np.arange(first, frames_x, 2) + limit * np.tanh(bias), 0, frames_x - 1)
        assert fixed[f"{group}_std_mean"] < 1e-6  # the same positions for every clip
        np.testing.assert_allclose(fixed[f"{group}_mean"], expected, atol=2e-4)
