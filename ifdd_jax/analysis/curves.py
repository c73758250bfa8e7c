"""Training curves of one or several runs from their TensorBoard events: loss, UAR and WAR.

    python -m ifdd_jax.analysis.curves --workdirs runs/a runs/b --out figs/curves.png

Three panels over the training step: the loss (train solid, validation dashed), UAR and WAR in %
(validation as lines, the final test value of the best checkpoint as a marker), one colour per
run. The events are the ones the trainer writes (`train_loss`, `val_loss`, `val_uar`, `val_war`,
`test_uar`, `test_war`), read as scalars or as summary-v2 tensors.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from tensorboard.backend.event_processing import event_accumulator

from ifdd_jax.analysis import figures

Series = tuple[np.ndarray, np.ndarray]  # steps [N], values [N]
TAGS = ("train_loss", "val_loss", "val_uar", "val_war", "test_uar", "test_war")


def read_scalars(workdir: str, tags: Sequence[str] = TAGS) -> dict[str, Series]:
    """{tag: (steps, values)} of the run's event files (all of them, in step order; a step
    logged twice, as after a resume, keeps its last value)."""
    files = sorted(glob.glob(os.path.join(workdir, "**", "events.out.tfevents.*"), recursive=True))
    if not files:
        raise FileNotFoundError(f"{workdir}: no TensorBoard event files (events.out.tfevents.*)")
    points: dict[str, dict[int, float]] = {}
    for path in files:
        events = event_accumulator.EventAccumulator(
            path, size_guidance={"scalars": 0, "tensors": 0, "images": 1}
        )
        events.Reload()
        available = events.Tags()
        for tag in tags:
            if tag in available.get("scalars", []):
                for e in events.Scalars(tag):
                    points.setdefault(tag, {})[int(e.step)] = float(e.value)
            elif tag in available.get("tensors", []):
                import tensorflow as tf  # deferred: TensorFlow only for summary-v2 tensors

                for e in events.Tensors(tag):
                    value = tf.make_ndarray(e.tensor_proto)
                    if value.size == 1:
                        points.setdefault(tag, {})[int(e.step)] = float(value.reshape(()))
    return {
        tag: (np.array(sorted(p)), np.array([p[s] for s in sorted(p)])) for tag, p in points.items()
    }


def plot_curves(
    runs: Sequence[tuple[str, dict[str, Series]]], path: str, dpi: int | None = None
) -> str:
    """runs: (label, scalars) pairs; writes the three-panel figure."""
    fig, axes = figures.new_figure(1, 3, figsize=(10.5, 3.0))
    colours = plt.get_cmap("tab10")
    panels = [
        ("loss", "loss (cross entropy + lifting)", "train_loss", "val_loss"),
        ("uar", "UAR (%)", None, "val_uar"),
        ("war", "WAR (%)", None, "val_war"),
    ]
    for i, (label, scalars) in enumerate(runs):
        colour = colours(i % 10)
        for ax, (key, _, train_tag, val_tag) in zip(axes, panels):
            if train_tag and train_tag in scalars:
                ax.plot(*scalars[train_tag], color=colour, lw=1.2, label=f"{label} train")
            if val_tag in scalars:
                steps, values = scalars[val_tag]
                ax.plot(
                    steps,
                    values,
                    color=colour,
                    lw=1.2,
                    ls="--" if key == "loss" else "-",
                    marker="o",
                    ms=3,
                    label=f"{label} validation",
                )
            test_tag = f"test_{key}"
            if test_tag in scalars:
                steps, values = scalars[test_tag]
                ax.plot(
                    steps[-1:],
                    values[-1:],
                    color=colour,
                    marker="*",
                    ms=9,
                    ls="none",
                    label=f"{label} test (best checkpoint)",
                )
    for ax, (_, ylabel, _, _) in zip(axes, panels):
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    if not any(ax.lines for ax in axes):
        raise ValueError("the runs' events hold none of " + ", ".join(TAGS))
    handles, labels = [], []
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            if name not in labels:
                handles.append(handle)
                labels.append(name)
    fig.legend(
        handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(3, len(labels))
    )
    fig.tight_layout()
    return figures.save(fig, path, dpi or figures.DPI)


def curves_figure(
    workdirs: Sequence[str],
    path: str,
    *,
    labels: Sequence[str] | None = None,
    dpi: int | None = None,
) -> str:
    if labels and len(labels) != len(workdirs):
        raise ValueError(f"{len(labels)} labels for {len(workdirs)} runs")
    runs: list[tuple[str, dict[str, Series]]] = []
    for i, workdir in enumerate(workdirs):
        label = labels[i] if labels else os.path.basename(os.path.abspath(workdir))
        runs.append((label, read_scalars(workdir)))
    return plot_curves(runs, path, dpi)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ifdd_jax.analysis.curves", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--workdirs", nargs="+", required=True, help="run folders")
    parser.add_argument("--labels", nargs="*", default=None, help="legend names, one per run")
    figures.add_output_args(parser, "curves.png")
    parser.add_argument("--dpi", type=int, default=None)
    args = parser.parse_args(argv)
    out = figures.output_path(args, "curves.png")
    return figures.run_command(
        lambda: curves_figure(args.workdirs, out, labels=args.labels, dpi=args.dpi)
    )


if __name__ == "__main__":
    sys.exit(main())
