"""Losses of IFDD: classification cross entropy and the lifting (global context) loss.

Per-example functions return `[B]` values so that the trainer can mask padded examples;
`ifdd_loss` reduces them into the scalar training objective the flavor prescribes.

Lifting loss (paper Eq. 9): Huber(Avg_{T,C}(Y_S - P_T↓2(X))), where P_T↓2 averages pairs of frames
of the pyramid output X and the average runs over time and channels, leaving an H×W map per clip.
Huber has δ = 1 (0.5 r² for |r| < 1, |r| - 0.5 otherwise) and the map is reduced by its mean over
the H×W positions (as in the released code). It asks the updated static group to keep the clip's
global context. `lift` selects:
  * "tc": average over {T, C}, Huber per position, mean over positions (the paper's form, default);
  * "thwc": average over {T, H, W, C}, one Huber term per clip;
  * "off": no lifting loss.

Paper vs released code (`flavor`), written here once:
* paper: Eq. 9 sums both terms over the clips k of the batch with equal weight and no factor. In
  batch-mean form, L = mean_k CE_k + mean_k Huber_k (`lift_weight` 1, reduction "mean").
* reference: the released `LiftingLoss` iterates over the batch axis of its [B, 7, 7] input and
  adds up the per-clip means, then multiplies by λ1 = 0.1, while its soft cross entropy is a batch
  mean: L = mean_b CE_b + 0.1 · Σ_b Huber_b (`lift_weight` 0.1, reduction "sum"). The sum runs
  over the global batch, so at the released setting (one GPU, batch 16) the lift term weighs
  0.1 · 16 = 1.6 times the per-clip mean; in general it is 0.1 · batch_size · mean_b. Run with
  PyTorch DDP on n GPUs, the released code would sum over each GPU's B/n clips and DDP averages the
  gradients, i.e. 0.1 · (B/n) · mean_b: reproduce that with `--config.loss.lift_weight=0.1/n`.
  The released sign inside the Huber is reversed (irrelevant), and the term is applied in training
  only (evaluation reports the cross entropy).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

LIFT_MODES = ("tc", "thwc", "off")


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Cross entropy with integer labels. logits `[B, K]`, labels `[B]` -> `[B]`."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def soft_target_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Σ_c -y_c log softmax(logits)_c for soft targets (mixup, cutmix, label smoothing).
    logits, targets `[B, K]` -> `[B]`."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.sum(targets * log_probs, axis=-1)


def smooth_labels(labels: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
    """Label-smoothed one-hot targets `[B, K]`: off = s/K, on = 1 - s + s/K (timm's form)."""
    off = smoothing / num_classes
    return jax.nn.one_hot(labels, num_classes) * (1.0 - smoothing) + off


def lift_residual(static: jax.Array, pooled_x: jax.Array, lift: str = "tc") -> jax.Array:
    """Avg(P_T↓2(X) - Y_S): `[B, H, W]` for "tc", `[B]` for "thwc".

    Args:
      static: Y_S `[B, t, H, W, C]`.
      pooled_x: P_T↓2(X) `[B, t, H, W, C]`.
    """
    if static.shape != pooled_x.shape:
        raise ValueError(f"Y_S {static.shape} and P_T↓2(X) {pooled_x.shape} differ in shape")
    diff = pooled_x.astype(jnp.float32) - static.astype(jnp.float32)
    if lift == "tc":
        return diff.mean(axis=(1, 4))
    if lift == "thwc":
        return diff.mean(axis=(1, 2, 3, 4))
    raise ValueError(f"lifting loss mode must be one of {LIFT_MODES}, got {lift!r}")


def lifting_loss(static: jax.Array, pooled_x: jax.Array, lift: str = "tc") -> jax.Array:
    """Per-clip lifting loss `[B]`: Huber(δ=1) of the residual map, mean over its H×W positions
    (zeros when `lift == "off"`). Both flavors share it; they differ in `ifdd_loss`'s reduction."""
    if lift == "off":
        return jnp.zeros(static.shape[:1], jnp.float32)
    residual = lift_residual(static, pooled_x, lift)
    huber = optax.losses.huber_loss(residual, delta=1.0)
    return huber.reshape(huber.shape[0], -1).mean(-1)


LIFT_REDUCTIONS = ("mean", "sum")


def default_lift_weight(flavor: str) -> float:
    """The factor on the lifting term: 1 (paper Eq. 9), 0.1 (the released λ1)."""
    return 1.0 if flavor == "paper" else 0.1


def default_lift_reduction(flavor: str) -> str:
    """How the per-clip lifting terms are reduced over the batch: "mean" (paper Eq. 9, like the
    cross entropy) or "sum" (the released LiftingLoss)."""
    return "mean" if flavor == "paper" else "sum"


def ifdd_loss(
    outputs: dict,
    targets: jax.Array,
    *,
    lift: str = "tc",
    lift_weight: float | None = None,
    lift_reduction: str | None = None,
    flavor: str = "paper",
    mask: jax.Array | None = None,
) -> tuple[jax.Array, dict]:
    """The training objective: mean_b CE_b + lift_weight · reduce_b(lifting_b).

    Args:
      outputs: a model's output dict (`logits`; IFDD models also `static`, `pooled_x`).
      targets: integer labels `[B]` or soft targets `[B, K]`.
      lift, lift_weight, lift_reduction, flavor: see the module docstring; a weight or reduction
        of None takes the flavor's default.
      mask: optional `[B]` weights (0 for padding examples; they count neither in a mean nor in a
        sum).
    Returns:
      (scalar loss, dict of scalar terms: `classification` (mean CE), `lifting` (the lifting term
      exactly as added to the loss, weighted and reduced) and `lifting_per_clip` (the unweighted
      mean per-clip Huber, comparable across flavors and batch sizes)).
    """
    logits = outputs["logits"]
    if targets.ndim == 1:
        ce = cross_entropy(logits, targets)
    else:
        ce = soft_target_cross_entropy(logits, targets)
    if "static" in outputs and lift != "off":
        lifting = lifting_loss(outputs["static"], outputs["pooled_x"], lift)
    else:
        lifting = jnp.zeros_like(ce)
    if mask is None:
        mask = jnp.ones_like(ce)
    mask = mask.astype(jnp.float32)
    denom = jnp.maximum(mask.sum(), 1.0)
    ce_mean = jnp.sum(ce * mask) / denom
    lift_sum = jnp.sum(lifting * mask)
    weight = default_lift_weight(flavor) if lift_weight is None else lift_weight
    reduction = default_lift_reduction(flavor) if lift_reduction is None else lift_reduction
    if reduction not in LIFT_REDUCTIONS:
        raise ValueError(f"lift reduction must be one of {LIFT_REDUCTIONS}, got {reduction!r}")
    lift_term = weight * (lift_sum if reduction == "sum" else lift_sum / denom)
    return ce_mean + lift_term, dict(
        classification=ce_mean, lifting=lift_term, lifting_per_clip=lift_sum / denom
    )
