"""The trainer: metrics against numpy, schedules, 1-vs-8-device invariance, non-finite steps,
end-to-end runs on a tiny synthetic set (events, checkpoints, results), exact resume, eval mode
and the errors a user meets."""

import importlib.util
import json
import math
import os
import platform
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifdd_jax import (
    checkpointing,
    evaluate,
    input_pipeline,
    recipe,
    sharding,
    train,
    train_state,
)
from ifdd_jax import train_step as step_lib
from ifdd_jax.config_lib import load_config_file
from ifdd_jax.metrics import ConfusionMatrix, recall_report
from ifdd_jax.models import build_model
from ifdd_jax.optim import (
    decay_mask,
    make_optimizer,
    reference_lr_at_epoch,
    reference_warmup_target,
)
from tests.tiny_runs import tiny_config, tiny_run_config

# --- metrics -----------------------------------------------------------------------------------


def test_recall_report_matches_numpy_with_an_absent_class():
    rng = np.random.default_rng(0)
    k = 5
    labels = rng.choice([0, 1, 2, 4], size=200)  # class 3 never occurs
    preds = np.where(rng.random(200) < 0.6, labels, rng.integers(0, k, 200))
    counts = np.zeros((k, k), np.int64)
    np.add.at(counts, (labels, preds), 1)
    report = recall_report(counts, ["a", "b", "c", "d", "e"])
    recalls = [np.mean(preds[labels == c] == c) for c in (0, 1, 2, 4)]
    np.testing.assert_allclose(report["war"], 100 * np.mean(preds == labels))
    np.testing.assert_allclose(report["uar"], 100 * np.mean(recalls))
    assert report["absent_classes"] == ["d"] and report["per_class_recall"]["d"] is None
    np.testing.assert_allclose(report["per_class_recall"]["e"], 100 * recalls[3])
    assert report["num_clips"] == 200


def test_confusion_metric_ignores_masked_rows():
    logits = jnp.array([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [5.0, 0, 0]])
    labels = jnp.array([0, 2, 2, 1])
    mask = jnp.array([True, True, True, False])
    m = ConfusionMatrix.from_model_output(logits=logits, label=labels, mask=mask)
    m = m.merge(ConfusionMatrix.from_model_output(logits=logits[:1], label=labels[:1]))
    np.testing.assert_array_equal(m.compute(), [[2, 0, 0], [0, 0, 0], [0, 1, 1]])


# --- optimisation ------------------------------------------------------------------------------


def _released_lr_at_epoch(
    epoch: int, *, max_epoch=100, warmup_epoch=10, base_lr=5e-5, end_lr=5e-7, warmup_start_lr=1e-6
) -> float:
    """The released `lr_updater.get_lr_at_epoch` written out from its definition (with the
    trainer's base 1e-4/32·16 and end base·0.01): the cosine function has defaults
    warmup_epoch=1.0, base_lr=1e-4, end_lr=1e-6, and the warmup target calls it with only
    cur_epoch and max_epoch, so every other argument takes those defaults."""

    def cosine(cur_epoch, max_epoch, warmup_epoch=1.0, base_lr=1e-4, end_lr=1e-6):
        offset = warmup_epoch if warmup_epoch > 0 else 0.0
        return (
            end_lr
            + (base_lr - end_lr)
            * (math.cos(math.pi * (cur_epoch - offset) / (max_epoch - offset)) + 1.0)
            * 0.5
        )

    lr = cosine(epoch, max_epoch, warmup_epoch, base_lr, end_lr)
    if epoch < warmup_epoch:
        target = cosine(cur_epoch=warmup_epoch, max_epoch=max_epoch)
        lr = epoch * (target - warmup_start_lr) / warmup_epoch + warmup_start_lr
    return lr


def test_reference_warmup_target_is_the_released_default_cosine():
    # 1e-6 + (1e-4 - 1e-6)(1 + cos(9π/99))/2, by hand: cos(0.285599) = 0.959493...
    by_hand = 1e-6 + (1e-4 - 1e-6) * (1 + 0.9594929736144974) / 2
    np.testing.assert_allclose(by_hand, 9.7995e-5, rtol=1e-5)
    np.testing.assert_allclose(
        reference_warmup_target(peak_lr=1e-4, warmup_epochs=10, num_epochs=100), by_hand, rtol=1e-9
    )


def test_reference_schedule_reproduces_the_released_warmup_quirk():
    target = reference_warmup_target(peak_lr=1e-4, warmup_epochs=10, num_epochs=100)
    kw = dict(
        base_lr=5e-5, warmup_target=target, warmup_init_lr=1e-6, warmup_epochs=10, num_epochs=100
    )
    lr = lambda e: float(reference_lr_at_epoch(e, **kw))  # noqa: E731
    for epoch in range(100):
        np.testing.assert_allclose(lr(epoch), _released_lr_at_epoch(epoch), rtol=1e-5)
    np.testing.assert_allclose(lr(0), 1e-6, rtol=1e-5)
    np.testing.assert_allclose(lr(9), 8.8296e-5, rtol=1e-4)  # 1e-6 + 9·(9.7995e-5 - 1e-6)/10
    np.testing.assert_allclose(lr(10), 5e-5, rtol=1e-5)  # drops to the scaled base lr
    np.testing.assert_allclose(lr(55), 5e-7 + (5e-5 - 5e-7) * 0.5, rtol=1e-5)
    assert lr(99) < lr(98) < lr(10)


def test_optimizer_schedules_and_decay_masks():
    config = load_config_file("configs/dfew.py")
    tx, schedule = make_optimizer(config, steps_per_epoch=10, total_steps=1000)
    np.testing.assert_allclose(float(schedule(0)), 1e-6, rtol=1e-5)
    np.testing.assert_allclose(float(schedule(100)), 1e-4, rtol=1e-5)  # end of 10 warmup epochs
    np.testing.assert_allclose(float(schedule(1000)), 1e-6, rtol=1e-4)  # lr · end_lr_ratio
    ref = load_config_file("configs/dfew.py:flavor=reference")
    _, ref_schedule = make_optimizer(ref, steps_per_epoch=10, total_steps=1000)
    assert float(ref_schedule(100)) == float(ref_schedule(109))  # constant within an epoch
    np.testing.assert_allclose(float(ref_schedule(100)), 1e-4 * 16 / 32, rtol=1e-5)
    # The whole run (100 epochs of 10 steps) follows the released per-epoch lr.
    for epoch in (0, 5, 9, 10, 50, 99):
        np.testing.assert_allclose(
            float(ref_schedule(epoch * 10 + 3)), _released_lr_at_epoch(epoch), rtol=1e-5
        )
    params = {
        "conv": {"kernel": jnp.ones((3, 3, 2, 2)), "bias": jnp.ones(2)},
        "norm": {"scale": jnp.ones(2)},
        "spatial_pos": jnp.ones((4, 2)),
    }
    assert decay_mask(params, "paper") == {
        "conv": {"kernel": True, "bias": False},
        "norm": {"scale": False},
        "spatial_pos": False,
    }
    assert all(jax.tree.leaves(decay_mask(params, "reference")))


# --- the train step ----------------------------------------------------------------------------


def _batch(n=8, seed=0, k=7):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n).astype(np.int32)
    return dict(
        clips=rng.random((n, 8, 32, 32, 3), dtype=np.float32),
        label=labels,
        target=np.eye(k, dtype=np.float32)[labels],
    )


def test_one_step_is_the_same_on_1_and_8_devices():
    config = tiny_config()
    model = build_model(config)
    tx, _ = make_optimizer(config, steps_per_epoch=10, total_steps=100)
    local = _batch()
    results = []
    for devices in (jax.devices()[:1], jax.devices()[:8]):
        mesh = sharding.make_mesh(devices)
        state = train_state.create_state(model, tx, config, mesh)
        step = step_lib.make_train_step(model, tx, config, mesh)
        state, metrics = step(state, sharding.global_batch(mesh, local, step_lib.TRAIN_KEYS))
        results.append(
            (
                float(metrics.loss.compute()),
                jax.device_get(state.params),
                jax.device_get(state.batch_stats),
            )
        )
    (loss1, params1, stats1), (loss8, params8, stats8) = results
    np.testing.assert_allclose(loss1, loss8, rtol=1e-5)
    for a, b in zip(jax.tree.leaves((params1, stats1)), jax.tree.leaves((params8, stats8))):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)


def _host_copy(tree):
    """A numpy copy of a state's tree (the step donates its input state)."""
    return jax.tree.map(lambda x: np.array(x, copy=True), jax.device_get(tree))


def test_a_non_finite_step_is_not_applied_and_stops_the_run():
    """The bad step leaves parameters, batch statistics and optimizer state exactly as they were;
    the finite step after it is applied; the next check stops the run and says so."""
    config = tiny_config()
    model = build_model(config)
    tx, _ = make_optimizer(config, steps_per_epoch=10, total_steps=100)
    mesh = sharding.make_mesh(jax.devices()[:1])
    state = train_state.create_state(model, tx, config, mesh)
    step = step_lib.make_train_step(model, tx, config, mesh)
    # One finite step first, so the optimizer's moments and BatchNorm's running statistics are
    # not at their initial values (a guard that reset them would show).
    state, _ = step(state, sharding.global_batch(mesh, _batch(seed=2), step_lib.TRAIN_KEYS))
    before = _host_copy((state.params, state.batch_stats, state.opt_state))
    bad = _batch()
    bad["clips"][0, 0, 0, 0, 0] = np.nan
    state, metrics = step(state, sharding.global_batch(mesh, bad, step_lib.TRAIN_KEYS))
    assert not np.isfinite(float(metrics.loss.compute()))
    after_bad = _host_copy((state.params, state.batch_stats, state.opt_state))
    assert int(state.nonfinite_step) == 1 and int(state.step) == 2
    assert jax.tree.structure(before) == jax.tree.structure(after_bad)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after_bad)):
        assert np.all(np.isfinite(b))
        np.testing.assert_array_equal(a, b)

    state, _ = step(state, sharding.global_batch(mesh, _batch(seed=1), step_lib.TRAIN_KEYS))
    after_good = _host_copy(state.params)
    assert int(state.nonfinite_step) == 1 and int(state.step) == 3
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(after_good))
    assert any(
        np.any(a != b) for a, b in zip(jax.tree.leaves(before[0]), jax.tree.leaves(after_good))
    )
    with pytest.raises(
        train.NonFiniteLossError,
        match=r"at step 1 \(counting from 0\); that update was skipped .* then 1 more step\(s\) "
        r"ran, .* after 3 steps",
    ):
        train._check_finite(state)


def test_bfloat16_compute_runs():
    config = tiny_config(compute_dtype="bfloat16")
    model = build_model(config)
    tx, _ = make_optimizer(config, steps_per_epoch=10, total_steps=100)
    mesh = sharding.make_mesh(jax.devices()[:1])
    state = train_state.create_state(model, tx, config, mesh)
    state, metrics = step_lib.make_train_step(model, tx, config, mesh)(
        state, sharding.global_batch(mesh, _batch(), step_lib.TRAIN_KEYS)
    )
    assert np.isfinite(float(metrics.loss.compute()))
    assert jax.tree.leaves(state.params)[0].dtype == jnp.float32


# --- end to end on a tiny synthetic set --------------------------------------------------------


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("synthetic"))


def _final_params(workdir):
    manager, step = checkpointing.find_checkpoint(os.path.join(workdir, checkpointing.LATEST_DIR))
    import orbax.checkpoint as ocp

    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    manager.close()
    return step, restored["state"]["params"]


class _Killed(Exception):
    pass


def _kill_after(monkeypatch, batches: int) -> None:
    """Makes the next run's train iterator raise after `batches` batches (a simulated kill)."""
    real_build = input_pipeline.build_data

    def build_then_die(config, workdir):
        data = real_build(config, workdir)
        original_next = type(data.train).__next__
        count = {"n": 0}

        def dying_next(self):
            count["n"] += 1
            if count["n"] > batches:
                raise _Killed()
            return original_next(self)

        monkeypatch.setattr(type(data.train), "__next__", dying_next)
        return data

    monkeypatch.setattr(input_pipeline, "build_data", build_then_die)


def test_end_to_end_run_resume_and_eval(synthetic_root, tmp_path, monkeypatch):
    """One uninterrupted run: its files, events, --mode=eval and checkpoint errors; then the same
    run killed after 5 steps and rerun, which must end exactly where the uninterrupted run did."""
    workdir = str(tmp_path / "run")
    results = train.train_and_evaluate(tiny_run_config(synthetic_root), workdir)
    on_disk = json.load(open(os.path.join(workdir, "results.json")))
    assert on_disk == json.loads(json.dumps(results))
    for key in (
        "uar",
        "war",
        "per_class_recall",
        "confusion_matrix",
        "dataset",
        "fold",
        "model",
        "flavor",
        "checkpoint_step",
        "validation_protocol",
    ):
        assert key in on_disk
    assert on_disk["checkpoint_step"] == 6 and on_disk["validation_protocol"] == "holdout"
    assert np.asarray(on_disk["confusion_matrix"]).sum() == on_disk["num_clips"] > 0
    assert os.path.isfile(os.path.join(workdir, "results_predictions.csv"))
    assert sorted(os.listdir(os.path.join(workdir, checkpointing.LATEST_DIR)))[-1] == "6"

    from tensorboard.backend.event_processing import event_accumulator

    events = event_accumulator.EventAccumulator(workdir, size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    names = set(tags["scalars"]) | set(tags["tensors"])
    assert {"train_loss", "learning_rate", "val_uar", "val_war", "test_uar"} <= names
    assert "val_confusion_matrix" in set(tags["images"]) | set(tags["tensors"])

    # --mode=eval on the run reproduces the test numbers of the best checkpoint.
    again = evaluate.evaluate_checkpoint(
        tiny_run_config(synthetic_root), str(tmp_path / "eval"), workdir
    )
    np.testing.assert_allclose(again["uar"], results["uar"])
    np.testing.assert_allclose(again["war"], results["war"])

    # A checkpoint of another model or class count: one clear error naming what differs.
    other = tiny_run_config(synthetic_root, model_name="baseline_mobilenet_v2")
    with pytest.raises(
        checkpointing.CheckpointMismatchError,
        match="model_name: checkpoint 'ifdd_2dcnn', config 'baseline_mobilenet_v2'",
    ):
        evaluate.evaluate_checkpoint(other, str(tmp_path / "eval2"), workdir)
    fewer = tiny_run_config(synthetic_root)
    fewer.num_classes = 5
    with pytest.raises(ValueError, match="7 classes but config.num_classes is 5"):
        evaluate.evaluate_checkpoint(fewer, str(tmp_path / "eval3"), workdir)

    # Killed after 5 steps (the last checkpoint is step 4), then the same command again.
    resumed = str(tmp_path / "resumed")
    _kill_after(monkeypatch, 5)
    with pytest.raises(_Killed):
        train.train_and_evaluate(tiny_run_config(synthetic_root), resumed)
    monkeypatch.undo()
    assert (
        sorted(
            int(s)
            for s in os.listdir(os.path.join(resumed, checkpointing.LATEST_DIR))
            if s.isdigit()
        )[-1]
        == 4
    )
    resumed_results = train.train_and_evaluate(tiny_run_config(synthetic_root), resumed)
    step_a, params_a = _final_params(workdir)
    step_b, params_b = _final_params(resumed)
    assert step_a == step_b == 6
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
        np.testing.assert_array_equal(a, b)
    assert (results["uar"], results["war"], results["confusion_matrix"]) == (
        resumed_results["uar"],
        resumed_results["war"],
        resumed_results["confusion_matrix"],
    )


# --- early stopping (the released trainer's rule) ----------------------------------------------


def _released_stops(correct: int, total: int, threshold: float) -> bool:
    """The released trainer's `if self.max_val_p > 0.95: break`, with `threshold` for 0.95:
    max_val_p is torchmetrics' micro precision of the validation predictions, tp / (tp + fp)
    = correct / total divided as float32 tensors, and torch compares a float32 tensor with a
    Python number in float32."""
    accuracy = np.float32(correct) / np.float32(total)
    return bool(accuracy > np.float32(threshold))


@pytest.mark.parametrize(
    "correct,total,threshold,stops",
    [
        (19, 20, 0.95, False),  # exactly 0.95: strictly greater only
        (39, 40, 0.95, True),
        (20, 20, 0.95, True),
        (20, 20, 1.0, False),  # accuracy never exceeds 1: 1.0 never stops
        (1, 10, 0.1, False),  # float32(0.1) > 0.1: mixing float32 and float64 would stop here
        # 0.95000001 in float64, but 95000001 is 95000000 in float32: the released code goes on.
        (95_000_001, 100_000_000, 0.95, False),
        (0, 8, 0.0, False),
        (1, 8, 0.0, True),
        (8, 8, None, False),  # unset: never
    ],
)
def test_early_stop_is_the_released_rule(correct, total, threshold, stops):
    counts = [[correct, total - correct], [0, 0]]
    config = tiny_config(early_stop_accuracy=threshold)
    assert train.early_stop_reached({"confusion_matrix": counts}, config) is stops
    if threshold is not None:
        assert _released_stops(correct, total, threshold) is stops


def test_early_stop_defaults_by_flavor():
    reference = load_config_file("configs/mafw.py:flavor=reference")
    paper = load_config_file("configs/mafw.py:flavor=paper")
    for config in (reference, paper):
        assert config.early_stop_accuracy is None
        recipe.resolve(config)
    assert (reference.early_stop_accuracy, paper.early_stop_accuracy) == (0.95, 1.0)
    assert recipe.describe(reference)["early_stop"] == "validation accuracy > 0.95"
    assert recipe.describe(paper)["early_stop"] == "never"
    explicit = load_config_file("configs/dfew.py:flavor=reference")
    explicit.early_stop_accuracy = 1.0  # turns the released rule off
    recipe.resolve(explicit)
    assert explicit.early_stop_accuracy == 1.0


def _latest_step(workdir: str) -> int:
    folder = os.path.join(workdir, checkpointing.LATEST_DIR)
    return max(int(s) for s in os.listdir(folder) if s.isdigit())


def test_a_run_stops_early_tests_its_best_and_a_rerun_stays_stopped(synthetic_root, tmp_path):
    """Validating every epoch (5 steps of the 6-step run) with threshold 0 (any correct clip),
    the run stops after its first validation, tests the best checkpoint and records where it
    stopped; the same command again trains no further; a threshold it never crosses (1.0) lets
    the rerun go on to the end."""
    workdir = str(tmp_path / "stop")

    def config(threshold):
        return tiny_run_config(synthetic_root, eval_every_epochs=1, early_stop_accuracy=threshold)

    results = train.train_and_evaluate(config(0.0), workdir)
    stop = results["early_stop"]
    assert stop["accuracy_above"] == 0.0 and stop["stopped_after_step"] == 5
    assert stop["val_accuracy"] > 0.0
    np.testing.assert_allclose(stop["val_accuracy"], results["last_validation"]["war"] / 100)
    assert results["checkpoint_step"] == 5 and _latest_step(workdir) == 5
    on_disk = json.load(open(os.path.join(workdir, "results.json")))
    assert on_disk["early_stop"] == stop and on_disk["num_clips"] > 0

    again = train.train_and_evaluate(config(0.0), workdir)
    assert _latest_step(workdir) == 5 and again["early_stop"] == stop
    assert (again["uar"], again["war"]) == (results["uar"], results["war"])

    on = train.train_and_evaluate(config(1.0), workdir)
    assert _latest_step(workdir) == 6
    assert on["early_stop"] == dict(accuracy_above=1.0, stopped_after_step=None, val_accuracy=None)


# --- results.json ------------------------------------------------------------------------------


def test_results_record_the_environment(run_dir):
    """The shared tiny run's results.json names the CPU, the devices and the package versions."""
    import flax
    import jaxlib
    import optax
    import orbax.checkpoint
    import tensorflow as tf

    env = json.load(open(os.path.join(run_dir, "results.json")))["environment"]
    device = jax.devices()[0]
    assert (env["platform"], env["device_kind"]) == (device.platform, device.device_kind)
    assert env["device_count"] == jax.device_count() == 8 and env["process_count"] == 1
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    assert env["cpu"] == (names[0] if names else platform.processor())
    assert env["versions"] == {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "orbax-checkpoint": orbax.checkpoint.__version__,
        "numpy": np.__version__,
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
    }


def test_environment_without_tensorflow(monkeypatch):
    """Machines without TensorFlow (the TF-free modules) record None for it."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorflow" else real_find_spec(name, *a),
    )
    assert evaluate.environment()["versions"]["tensorflow"] is None


def _main(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "ifdd_jax.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_user_errors_are_one_clear_line(tmp_path):
    result = _main(
        "--config=configs/dfew.py", f"--workdir={tmp_path}/a", "--config.data_dir=/no/such/dfew"
    )
    assert result.returncode == 1
    assert "error: data_dir /no/such/dfew does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    result = _main(
        "--config=configs/dfew.py:model=resnet50",
        f"--workdir={tmp_path}/b",
        f"--config.data_dir={tmp_path}",
    )
    assert result.returncode == 1
    assert "unknown model 'resnet50'" in result.stderr and "Traceback" not in result.stderr


def test_compilation_cache_is_written_and_can_be_turned_off(tmp_path):
    """The tools' persistent XLA cache: a compiled step lands in the configured folder, so a resumed
    or re-evaluated run skips compiling; "" leaves JAX's cache unset. A fresh process, because JAX
    fixes its cache at the first compilation."""
    script = (
        "import sys, jax, jax.numpy as jnp\n"
        "from ifdd_jax.compile_cache import enable\n"
        "assert enable('') == ''\n"
        "assert jax.config.jax_compilation_cache_dir is None\n"
        "path = enable(sys.argv[1])\n"
        "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)\n"
        "jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).block_until_ready()\n"
        "print(path)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "xla")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "xla")
    assert os.listdir(tmp_path / "xla"), "nothing was cached"
