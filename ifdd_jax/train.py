"""Training and evaluation: `train_and_evaluate(config, workdir)`.

One `jax.jit`-compiled train step runs over a 1-D device mesh ("data"): the global batch is split
across every device of every process, parameters and optimizer state are replicated, and the state
is donated. Each process feeds its local share of the batch
(`jax.make_array_from_process_local_data`). BatchNorm statistics span the global batch.

The run:
  1. builds the data (input_pipeline.py), the model (models/registry.py), AdamW (optim.py) and
     the TrainState (train_state.py);
  2. resumes from the latest checkpoint in `workdir` if there is one (state, RNG and the train
     iterator's position, so the continuation is exactly the uninterrupted run);
  3. trains, logging to TensorBoard and the console, validating every `eval_every_epochs` epochs
     (UAR, WAR, per-class recall, a confusion-matrix image) and checkpointing the latest few and the
     best by the flavor's validation metric (UAR paper, WAR reference; ifdd_jax/recipe.py);
  4. evaluates the best checkpoint on the test split (logits averaged over each clip's views) and
     writes `results.json`.
A non-finite loss or gradient is never applied: the step is recorded and the run stops with it.
"""

from __future__ import annotations

import json
import os
import time

import jax
import ml_collections
from absl import logging
from clu import metric_writers, periodic_actions

from ifdd_jax import checkpointing, evaluate, input_pipeline, recipe, sharding
from ifdd_jax.models import build_model
from ifdd_jax.optim import make_optimizer, steps_for
from ifdd_jax.train_state import TrainState, create_state, load_initial_weights
from ifdd_jax.train_step import make_train_step, train_keys


class NonFiniteLossError(FloatingPointError):
    """The loss or a gradient became NaN or infinite."""


def _format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _check_finite(state: TrainState) -> None:
    bad = int(jax.device_get(state.nonfinite_step))
    if bad >= 0:
        raise NonFiniteLossError(
            f"the loss or a gradient became NaN/infinite at step {bad}; that update and the ones "
            f"after it were not applied. Lower config.optim.lr, set config.optim.grad_clip, or "
            f"check the input data."
        )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains `config`'s model, validates, checkpoints, tests the best checkpoint; returns and
    writes `workdir/results.json`."""
    os.makedirs(workdir, exist_ok=True)
    recipe.resolve(config)  # the flavor's loss weighting, augmentation and checkpoint criterion
    mesh = _mesh_for(config)
    is_main = jax.process_index() == 0
    writer = metric_writers.create_default_writer(
        workdir, just_logging=not is_main, asynchronous=True
    )

    if input_pipeline.resolve_classes(config, workdir):  # a custom dataset's classes
        write_config(config, workdir)
    model = build_model(config)  # first: a wrong model name fails before any data work
    data = input_pipeline.build_data(config, workdir)
    meta = data.meta
    steps_per_epoch, total_steps = steps_for(config, meta["num_examples"]["train"])
    tx, schedule = make_optimizer(config, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
    state = create_state(model, tx, config, mesh)
    if config.get("init_from"):
        state = load_initial_weights(state, config, mesh)

    ckpt = checkpointing.Checkpointer(
        workdir, keep=config.keep_checkpoints, best_metric=config.best_metric
    )
    state = _resume(ckpt, state, data, mesh, config)
    start_step = int(jax.device_get(state.step))
    if start_step == 0 and is_main:
        writer.write_hparams(_flat_hparams(config))

    step_fn = make_train_step(model, tx, config, mesh)
    batch_keys = train_keys(config)
    eval_every = max(1, int(round(config.eval_every_epochs * steps_per_epoch)))
    report = periodic_actions.ReportProgress(
        num_train_steps=total_steps, writer=writer, every_steps=config.log_every_steps
    )
    _log_start(config, meta, steps_per_epoch, total_steps)

    train_metrics = None
    last_val: dict | None = None
    t_start, s_start = time.time(), start_step
    try:
        with metric_writers.ensure_flushes(writer):
            for step in range(start_step, total_steps):
                batch = sharding.global_batch(mesh, next(data.train), batch_keys)
                state, m = step_fn(state, batch)
                train_metrics = m if train_metrics is None else train_metrics.merge(m)
                done = step + 1
                report(done)

                if done % config.log_every_steps == 0 or done == total_steps:
                    _check_finite(state)
                    rate = (done - s_start) / max(time.time() - t_start, 1e-9)
                    lr = float(schedule(step))
                    _log_train(writer, done, total_steps, steps_per_epoch, train_metrics, lr, rate)
                    train_metrics = None

                if done % eval_every == 0 or done == total_steps:
                    _check_finite(state)
                    with report.timed("eval"):
                        last_val = evaluate.evaluate_split(
                            state.variables(), model, data, "val", mesh, config
                        )
                    _record_val(writer, ckpt, done, state, data, config, last_val)
                elif done % config.checkpoint_every_steps == 0:
                    ckpt.save(done, state, data.train.get_state(), config)
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM, an error): finish the saves already started, so that
        # rerunning the same command resumes from the last checkpoint.
        ckpt.close()
        raise

    ckpt.wait()
    results = _test_best(ckpt, state, model, data, mesh, config, writer, workdir, last_val)
    writer.flush()
    ckpt.close()
    return results


def _mesh_for(config: ml_collections.ConfigDict):
    """The device mesh, after checking that both batch sizes split evenly over it."""
    mesh = sharding.make_mesh()
    sharding.check_batch_size(config.batch_size, mesh)
    sharding.check_batch_size(config.eval_batch_size, mesh, "eval batch size")
    return mesh


def _log_start(config, meta: dict, steps_per_epoch: int, total_steps: int) -> None:
    logging.info(
        "Training %s (%s) on %s: %d train clips, %d steps/epoch, %d steps, %d devices.",
        config.model_name,
        config.flavor,
        meta["dataset"],
        meta["num_examples"]["train"],
        steps_per_epoch,
        total_steps,
        jax.device_count(),
    )


def _resume(ckpt, state: TrainState, data, mesh, config) -> TrainState:
    """The latest checkpoint's state, with the train iterator moved to its position, or `state`
    when the run has no checkpoint yet."""
    restored = ckpt.restore_latest(state, sharding.replicated(mesh), config)
    if restored is None:
        return state
    state, data_state, saved_step = restored
    data.train.set_state(data_state)
    logging.info("Resumed from %s at step %d.", checkpointing.LATEST_DIR, saved_step)
    return state


def _record_val(writer, ckpt, done: int, state: TrainState, data, config, report: dict) -> None:
    """Writes a validation report and saves the step, offered to the best checkpoint."""
    evaluate.write_report(writer, done, "val", report, data.meta["class_names"])
    ckpt.save(
        done, state, data.train.get_state(), config, val_metrics=checkpointing.val_metrics(report)
    )


def _log_train(
    writer,
    done: int,
    total_steps: int,
    steps_per_epoch: int,
    train_metrics,
    learning_rate: float,
    rate: float,
) -> None:
    """Writes the train scalars accumulated since the last report and logs a progress line."""
    scalars = {f"train_{k}": float(v) for k, v in train_metrics.compute().items()}
    scalars["learning_rate"] = learning_rate
    writer.write_scalars(done, scalars)
    logging.info(
        "step %d/%d (epoch %.1f) loss %.4f lr %.3g | %.2f steps/s, ETA %s",
        done,
        total_steps,
        done / steps_per_epoch,
        scalars["train_loss"],
        scalars["learning_rate"],
        rate,
        _format_eta((total_steps - done) / max(rate, 1e-9)),
    )


def _test_best(
    ckpt, state, model, data, mesh, config, writer, workdir: str, last_val: dict | None
) -> dict:
    """Tests the best checkpoint (the final state when no validation happened), writes the
    report and, on process 0, results.json; returns the results."""
    best = ckpt.restore_best(state, sharding.replicated(mesh), config)
    if best is None:  # no validation happened (total_steps == start_step): test the final state
        best_state, best_step = state, int(jax.device_get(state.step))
    else:
        best_state, best_step = best
    meta = data.meta
    test = evaluate.evaluate_split(
        best_state.variables(), model, data, "test", mesh, config, predictions=True
    )
    evaluate.write_report(writer, best_step, "test", test, meta["class_names"])
    results = evaluate.results_dict(
        config, meta, test, checkpoint_step=best_step, val=last_val, split="test"
    )
    if jax.process_index() == 0:
        evaluate.write_results(workdir, results, test.get("predictions"))
    logging.info(
        "Test UAR %.2f WAR %.2f (checkpoint step %d).", test["uar"], test["war"], best_step
    )
    return results


def _flat_hparams(config: ml_collections.ConfigDict) -> dict:
    flat = {}

    def visit(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                visit(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(value, (int, float, str, bool)):
            flat[prefix] = value
        elif value is None:
            flat[prefix] = "None"

    visit("", config.to_dict())
    return flat


def write_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes the resolved config (the flavor's recipe filled in) as JSON to
    `workdir/config.json` (process 0)."""
    path = os.path.join(workdir, "config.json")
    recipe.resolve(config)
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(path, "w") as f:
            json.dump(config.to_dict(), f, indent=2, sort_keys=True, default=str)
    return path
