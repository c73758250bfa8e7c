"""Metrics of DFER: WAR, UAR and per-class recall from a confusion matrix, as clu metrics.

WAR (weighted average recall) is the overall accuracy over all clips. UAR (unweighted average
recall) is the mean over classes of per-class recall; a class with no clip in the evaluated split
has no recall and is excluded from the mean (the report names such classes).
"""

import io
from collections.abc import Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics as clu_metrics
from matplotlib.figure import Figure
from PIL import Image


@flax.struct.dataclass
class ConfusionMatrix(clu_metrics.Metric):
    """Counts `[K, K]`: rows are true classes, columns predicted classes."""

    counts: jax.Array

    @classmethod
    def from_model_output(
        cls, *, logits: jax.Array, label: jax.Array, mask: jax.Array | None = None, **_
    ) -> "ConfusionMatrix":
        num_classes = logits.shape[-1]
        pred = jnp.argmax(logits, axis=-1)
        weight = jnp.ones(label.shape, jnp.int32) if mask is None else mask.astype(jnp.int32)
        true_onehot = jax.nn.one_hot(label, num_classes, dtype=jnp.int32) * weight[:, None]
        pred_onehot = jax.nn.one_hot(pred, num_classes, dtype=jnp.int32)
        return cls(counts=true_onehot.T @ pred_onehot)

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        return type(self)(counts=self.counts + other.counts)

    def reduce(self) -> "ConfusionMatrix":
        return self if self.counts.ndim == 2 else type(self)(counts=self.counts.sum(0))

    def compute(self) -> np.ndarray:
        return np.asarray(self.counts)


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
    loss: clu_metrics.Average.from_output("loss")
    confusion: ConfusionMatrix


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
    loss: clu_metrics.Average.from_output("loss")
    classification_loss: clu_metrics.Average.from_output("classification_loss")
    lifting_loss: clu_metrics.Average.from_output("lifting_loss")
    accuracy: clu_metrics.Average.from_output("accuracy")


def recall_report(counts: np.ndarray, class_names: Sequence[str] | None = None) -> dict:
    """WAR, UAR and per-class recall from confusion counts `[K, K]` (rows true, columns predicted).

    Returns JSON-ready values: `war`, `uar` (percent), `per_class_recall` (name -> percent, None
    for absent classes), `support` (name -> clips), `absent_classes` and `num_clips`.
    """
    counts = np.asarray(counts, np.int64)
    k = counts.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for a {k}x{k} confusion matrix")
    support = counts.sum(axis=1)
    correct = np.diag(counts)
    total = int(support.sum())
    present = support > 0
    recall = np.where(present, correct / np.maximum(support, 1), np.nan)
    return dict(
        war=float(100.0 * correct.sum() / total) if total else float("nan"),
        uar=float(100.0 * np.mean(recall[present])) if present.any() else float("nan"),
        per_class_recall={
            n: (float(100.0 * r) if p else None) for n, r, p in zip(names, recall, present)
        },
        support={n: int(s) for n, s in zip(names, support)},
        absent_classes=[n for n, p in zip(names, present) if not p],
        num_clips=total,
    )


def confusion_image(
    counts: np.ndarray, class_names: Sequence[str], title: str = "", dpi: int = 100
) -> np.ndarray:
    """The row-normalised confusion matrix as an RGB image `[H, W, 3]` uint8 (matplotlib, Agg)."""
    counts = np.asarray(counts, np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    k = len(class_names)
    # A Figure of its own (no pyplot): rendered by Agg, touching no global backend state.
    fig = Figure(figsize=(1.0 + 0.6 * k, 1.0 + 0.55 * k), dpi=dpi)
    ax = fig.subplots()
    ax.imshow(normalised, vmin=0.0, vmax=1.0, cmap="Blues")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=9)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{int(counts[i, j])}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if normalised[i, j] > 0.5 else "black",
            )
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))
