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
  4. stops early after a validation whose accuracy (WAR as a fraction) is above
     `config.early_stop_accuracy` (the released rule, reference flavor: 0.95; paper: never);
  5. evaluates the best checkpoint on the test split (logits averaged over each clip's views) and
     writes `results.json`.
A non-finite loss or gradient is never applied: the step records it, the later steps go on, and
the run stops with an error at the next log or validation step (`_check_finite`).
"""

from __future__ import annotations

import json
import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions

from ifdd_jax import checkpointing, evaluate, input_pipeline, recipe, sharding
from ifdd_jax.models import build_model
from ifdd_jax.optim import make_optimizer, steps_for
from ifdd_jax.train_state import TrainState, create_state, load_initial_weights
from ifdd_jax.train_step import make_train_step, train_keys

# Where a run that stopped early records the step, so that rerunning it trains no further.
EARLY_STOP_FILE = "early_stop.json"


class NonFiniteLossError(FloatingPointError):
    """The loss or a gradient became NaN or infinite."""


def _format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _check_finite(state: TrainState) -> None:
    """Raises NonFiniteLossError when a step of the run had a non-finite loss or gradient.

    The train step never applies such an update but keeps going (stopping it there would need a
    device-to-host sync every step), so the finite steps between the bad one and this check
    were applied; the message says how many.
    """
    bad = int(jax.device_get(state.nonfinite_step))
    if bad >= 0:
        done = int(jax.device_get(state.step))
        raise NonFiniteLossError(
            f"the loss or a gradient became NaN/infinite at step {bad} (counting from 0); that "
            f"update was skipped (parameters, batch statistics and optimizer state kept), then "
            f"{done - bad - 1} more step(s) ran, any other non-finite one skipped too, until "
            f"this check stopped the run after {done} steps. Lower config.optim.lr, set "
            f"config.optim.grad_clip, or check the input data."
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
    stopped = _resumed_stop(workdir, start_step, config)  # a rerun of a stopped run stays stopped
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
    last_val: dict | None = stopped and stopped["validation"]
    t_start, s_start = time.time(), start_step
    try:
        with metric_writers.ensure_flushes(writer):
            for step in range(start_step, start_step if stopped else total_steps):
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
                    with report.timed("eval"):
                        last_val = _validate(writer, ckpt, done, state, model, data, mesh, config)
                    if done < total_steps and early_stop_reached(last_val, config):
                        stopped = _stop_early(workdir, done, last_val, config)
                        break
                elif done % config.checkpoint_every_steps == 0:
                    ckpt.save(done, state, data.train.get_state(), config)
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM, an error): finish the saves already started, so that
        # rerunning the same command resumes from the last checkpoint.
        ckpt.close()
        raise

    ckpt.wait()
    results = _test_best(ckpt, state, model, data, mesh, config, writer, workdir, last_val, stopped)
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


def _validate(
    writer, ckpt, done: int, state: TrainState, model, data, mesh, config: ml_collections.ConfigDict
) -> dict:
    """Validates the state after `done` steps, writes the report and saves the step, offered to
    the best checkpoint; returns the report."""
    _check_finite(state)  # never validate, or checkpoint as the best, a run that went non-finite
    report = evaluate.evaluate_split(state.variables(), model, data, "val", mesh, config)
    evaluate.write_report(writer, done, "val", report, data.meta["class_names"])
    ckpt.save(
        done, state, data.train.get_state(), config, val_metrics=checkpointing.val_metrics(report)
    )
    return report


def released_val_accuracy(report: dict) -> np.float32:
    """The validation accuracy the released trainer stops on: torchmetrics' micro precision of the
    argmax predictions (correct / total: WAR as a fraction), a float32 as its tensors are."""
    counts = np.asarray(report["confusion_matrix"], np.int64)
    return np.float32(np.trace(counts)) / np.float32(counts.sum())


def early_stop_reached(report: dict, config: ml_collections.ConfigDict) -> bool:
    """The released trainer's `if max_val_p > 0.95: break` with `config.early_stop_accuracy` for
    0.95 (None: never): strictly greater, in float32 (torch casts the Python number to the
    tensor's dtype). The released code tests the best accuracy so far after every epoch; as the
    run stops at the first validation above the threshold, testing each validation's own
    accuracy right after it stops at the same point. Accuracy never exceeds 1, so a threshold of
    1 or more never stops a run."""
    threshold = config.get("early_stop_accuracy")
    if threshold is None:
        return False
    return bool(released_val_accuracy(report) > np.float32(threshold))


def _stop_early(workdir: str, done: int, report: dict, config) -> dict:
    """Records (in `workdir/early_stop.json`) and logs that the run stops after `done` steps."""
    accuracy = float(released_val_accuracy(report))
    stopped = dict(
        step=done, accuracy=accuracy, validation=dict(uar=report["uar"], war=report["war"])
    )
    if jax.process_index() == 0:
        with open(os.path.join(workdir, EARLY_STOP_FILE), "w") as f:
            json.dump(stopped, f, indent=2)
    logging.info(
        "Early stop after step %d: validation accuracy %.4f > config.early_stop_accuracy %g.",
        done,
        accuracy,
        config.early_stop_accuracy,
    )
    return stopped


def _resumed_stop(workdir: str, start_step: int, config) -> dict | None:
    """The early stop recorded at `start_step` when the run resumes exactly there and the config's
    threshold still stops it (rerunning a stopped run tests it again and trains no further; a
    raised threshold lets it go on), else None."""
    path = os.path.join(workdir, EARLY_STOP_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        stopped = json.load(f)
    threshold = config.get("early_stop_accuracy")
    if stopped["step"] != start_step or threshold is None:
        return None
    return stopped if np.float32(stopped["accuracy"]) > np.float32(threshold) else None


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
    ckpt,
    state,
    model,
    data,
    mesh,
    config,
    writer,
    workdir: str,
    last_val: dict | None,
    stopped: dict | None,
) -> dict:
    """Tests the best checkpoint (the final state when no validation happened), writes the
    report and, on process 0, results.json (with whether and where the run stopped early);
    returns the results."""
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
    results["early_stop"] = dict(
        accuracy_above=config.get("early_stop_accuracy"),
        stopped_after_step=stopped and stopped["step"],
        val_accuracy=stopped and stopped["accuracy"],
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
