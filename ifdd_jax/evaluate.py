"""Evaluation: video-level predictions, UAR/WAR reports, `results.json`, and `--mode=eval`.

A clip's prediction averages the logits of its V evaluation views (`config.data.num_eval_views`
temporal windows; ifdd_jax/views.py). Every clip of a split is evaluated exactly once: the input
pipeline pads the last batch and marks padding with `mask`, which the metrics ignore.
`--mode=eval` restores the checkpoint's parameters and batch statistics only
(train_state.restore_variables); the data is built by ifdd_jax/input_pipeline.py.
"""

from __future__ import annotations

import csv
import functools
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from ifdd_jax import recipe, sharding
from ifdd_jax.input_pipeline import build_data, resolve_classes
from ifdd_jax.metrics import EvalMetrics, confusion_image, recall_report
from ifdd_jax.models import build_model
from ifdd_jax.models.losses import cross_entropy
from ifdd_jax.train_state import compute_dtype, restore_variables
from ifdd_jax.views import view_logits

EVAL_KEYS = ("clips", "label", "mask")


def eval_step(variables: dict, batch: dict, *, model, dtype) -> tuple[EvalMetrics, jax.Array]:
    """Metrics and video-level logits `[B, K]` of a batch {clips [B, V, T, H, W, 3], label,
    mask}."""
    logits = view_logits(model, variables, batch["clips"], dtype)
    metrics = EvalMetrics.single_from_model_output(
        loss=cross_entropy(logits, batch["label"]),
        mask=batch["mask"],
        logits=logits,
        label=batch["label"],
    )
    return metrics, logits


@functools.lru_cache(maxsize=8)
def _compiled_eval_step(model, mesh, dtype) -> Callable:
    repl, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
    return jax.jit(
        functools.partial(eval_step, model=model, dtype=dtype),
        in_shardings=(repl, data),
        out_shardings=(repl, repl),
    )


def evaluate_split(
    variables: dict,
    model,
    data,
    split: str,
    mesh,
    config: ml_collections.ConfigDict,
    *,
    predictions: bool = False,
) -> dict:
    """UAR/WAR report of `split` ("val" or "test") for the model's `variables` ({"params",
    "batch_stats"}); with `predictions`, per-clip rows too."""
    step_fn = _compiled_eval_step(model, mesh, compute_dtype(config))
    metrics = None
    rows = []
    for local in data.make_eval_iter(split):
        batch = sharding.global_batch(mesh, local, EVAL_KEYS)
        m, logits = step_fn(variables, batch)
        metrics = m if metrics is None else metrics.merge(m)
        if predictions:
            rows.extend(_prediction_rows(local, logits, data.meta["class_names"]))
    if metrics is None:
        raise ValueError(f"the {split} split has no clips")
    counts = metrics.confusion.compute()
    report = recall_report(counts, data.meta["class_names"])
    report["loss"] = float(metrics.loss.compute())
    report["confusion_matrix"] = counts.tolist()
    if predictions:
        report["predictions"] = rows
    if report["absent_classes"]:
        logging.warning(
            "%s split: classes without clips, excluded from UAR: %s",
            split,
            ", ".join(report["absent_classes"]),
        )
    return report


def _prediction_rows(local: dict, logits: jax.Array, class_names) -> list:
    """Per-clip rows (clip_id, label, prediction, probabilities) of this process's share."""
    if jax.process_count() > 1:
        gathered = multihost_utils.process_allgather(logits, tiled=True)
        logits_np = np.asarray(gathered).reshape(jax.process_count(), -1, logits.shape[-1])
        logits_np = logits_np[jax.process_index()]
    else:
        logits_np = np.asarray(logits)
    probs = np.asarray(jax.nn.softmax(logits_np, axis=-1))
    rows = []
    for i in range(len(local["label"])):
        if not local["mask"][i]:
            continue
        clip_id = local["clip_id"][i]
        rows.append(
            dict(
                clip_id=clip_id.decode() if isinstance(clip_id, bytes) else str(clip_id),
                label=class_names[int(local["label"][i])],
                prediction=class_names[int(np.argmax(probs[i]))],
                probabilities={n: round(float(p), 6) for n, p in zip(class_names, probs[i])},
            )
        )
    return rows


def write_report(writer, step: int, split: str, report: dict, class_names) -> None:
    """Scalars (UAR, WAR, loss, per-class recall) and a confusion-matrix image."""
    scalars = {
        f"{split}_uar": report["uar"],
        f"{split}_war": report["war"],
        f"{split}_loss": report["loss"],
    }
    for name, recall in report["per_class_recall"].items():
        if recall is not None:
            scalars[f"{split}_recall/{name}"] = recall
    writer.write_scalars(step, scalars)
    image = confusion_image(
        np.asarray(report["confusion_matrix"]),
        class_names,
        title=f"{split} step {step}: UAR {report['uar']:.1f} WAR {report['war']:.1f}",
    )
    writer.write_images(step, {f"{split}_confusion_matrix": image[None]})
    logging.info(
        "%s @ step %d: UAR %.2f WAR %.2f loss %.4f",
        split,
        step,
        report["uar"],
        report["war"],
        report["loss"],
    )


def results_dict(
    config: ml_collections.ConfigDict,
    meta: dict,
    report: dict,
    *,
    checkpoint_step: int,
    val: dict | None,
    split: str,
) -> dict:
    return dict(
        dataset=meta["dataset"],
        fold=meta.get("fold"),
        model=config.model_name,
        flavor=config.flavor,
        split=split,
        checkpoint_step=int(checkpoint_step),
        validation_protocol=meta.get("val_protocol"),
        num_eval_views=meta.get("num_eval_views"),
        uar=report["uar"],
        war=report["war"],
        loss=report["loss"],
        per_class_recall=report["per_class_recall"],
        support=report["support"],
        absent_classes=report["absent_classes"],
        num_clips=report["num_clips"],
        class_names=list(meta["class_names"]),
        confusion_matrix=report["confusion_matrix"],
        last_validation=None if val is None else dict(uar=val["uar"], war=val["war"]),
        recipe=recipe.describe(config),
        initialised_from=_init_description(config),
        environment=environment(),
    )


# The distributions whose versions results.json records (TensorFlow apart: environment()).
VERSIONED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _tensorflow_version() -> str | None:
    """The TensorFlow version, without importing it (the TF-free modules run where it is absent):
    the loaded module's when a pipeline imported it, else the installed distribution's."""
    module = sys.modules.get("tensorflow")
    if module is not None:
        return getattr(module, "__version__", None)
    if importlib.util.find_spec("tensorflow") is None:
        return None
    # Wheels other than "tensorflow" install the same module (CPU-only builds, nightlies).
    for distribution in ("tensorflow", "tensorflow-cpu", "tf-nightly"):
        if (found := _version(distribution)) is not None:
            return found
    return None


def _cpu_model() -> str | None:
    """The host CPU's name: /proc/cpuinfo's "model name" (Linux on x86; ARM kernels may not
    give it), else what `platform.processor()` says, else None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def environment() -> dict:
    """Where a result was computed, for results.json: the CPU, JAX's devices, and the versions of
    Python and of the packages that compute it (None for a package that is not installed)."""
    device = jax.devices()[0]
    versions = {name: _version(name) for name in VERSIONED_PACKAGES}
    versions["tensorflow"] = _tensorflow_version()
    versions["python"] = platform.python_version()
    return dict(
        cpu=_cpu_model(),
        platform=device.platform,
        device_kind=device.device_kind,
        device_count=jax.device_count(),
        process_count=jax.process_count(),
        versions=versions,
    )


def _init_description(config: ml_collections.ConfigDict) -> dict | None:
    """Where the weights started (`config.init_from`) and, for another run, whether its
    classification head fitted this run's classes or was re-initialised (fine-tuning)."""
    source = config.get("init_from")
    if not source:
        return None
    described = {"source": source}
    run_config = os.path.join(source, "config.json")
    if os.path.isfile(run_config):
        with open(run_config) as f:
            source_classes = json.load(f).get("num_classes")
        described["source_num_classes"] = source_classes
        fits = source_classes == config.num_classes
        described["classification_head"] = "loaded" if fits else "re-initialised"
    return described


def write_results(
    workdir: str, results: dict, predictions: list | None = None, name: str = "results"
) -> str:
    """Writes `<name>.json` and, with predictions, `<name>_predictions.csv` in `workdir`."""
    path = os.path.join(workdir, f"{name}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    if predictions:
        with open(os.path.join(workdir, f"{name}_predictions.csv"), "w", newline="") as f:
            names = results["class_names"]
            writer = csv.writer(f)
            writer.writerow(["clip_id", "label", "prediction"] + [f"p_{n}" for n in names])
            for row in predictions:
                writer.writerow(
                    [row["clip_id"], row["label"], row["prediction"]]
                    + [row["probabilities"][n] for n in names]
                )
    return path


def evaluate_checkpoint(
    config: ml_collections.ConfigDict,
    workdir: str,
    checkpoint: str | None = None,
    split: str = "test",
) -> dict:
    """`--mode=eval`: evaluates a checkpoint (a run's workdir, a checkpoint folder or one step)
    on `split` and writes `results_eval_<split>.json` in `workdir`."""
    mesh = sharding.make_mesh()
    sharding.check_batch_size(config.eval_batch_size, mesh, "eval batch size")
    resolve_classes(config, workdir)  # a custom dataset's class count, before the model
    model = build_model(config)
    data = build_data(config, workdir)
    variables, step, directory = restore_variables(model, config, checkpoint or workdir, mesh)
    report = evaluate_split(variables, model, data, split, mesh, config, predictions=True)
    results = results_dict(config, data.meta, report, checkpoint_step=step, val=None, split=split)
    results["checkpoint"] = directory
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        write_results(workdir, results, report.get("predictions"), name=f"results_eval_{split}")
    logging.info(
        "%s UAR %.2f WAR %.2f (checkpoint %s step %d)",
        split,
        report["uar"],
        report["war"],
        directory,
        step,
    )
    return results
