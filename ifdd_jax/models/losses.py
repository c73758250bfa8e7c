"""Losses of IFDD: classification cross entropy and the lifting (global context) loss.

All functions return per-example values `[B]` so that the trainer can mask padded examples and
choose its own reduction; `ifdd_loss` combines them into the scalar training objective.

Lifting loss (paper Eq. 9): L_Lift = Σ_k Huber(Avg_{T,C}(Y_S - P_T↓2(X))), where P_T↓2 averages
pairs of frames of the pyramid output X, the average runs over time and channels, k runs over the
H×W spatial positions, and Huber has δ = 1 (0.5 r² for |r| < 1, |r| - 0.5 otherwise). It asks the
updated static group to keep the clip's global context. `lift` selects:
  * "tc": average over {T, C}, Huber per position (the paper's form, default);
  * "thwc": average over {T, H, W, C}, one Huber term per clip;
  * "off": no lifting loss.

Paper vs released code (`flavor`), written here once:
* paper: the positions are summed (Σ_k) and the loss enters with weight 1, L = L_CLS + L_Lift.
* reference: the positions are averaged and the loss is weighted by 0.1 (the sign inside the
  Huber is reversed, which does not matter). The released code applies it in training only.
Both flavors take the mean over the batch for both terms (the paper writes a sum over the batch;
a mean keeps the balance with the classification term independent of the batch size).
"""

from __future__ import annotations

from typing import Optional, Tuple

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


def lifting_loss(
    static: jax.Array, pooled_x: jax.Array, lift: str = "tc", flavor: str = "paper"
) -> jax.Array:
    """Per-example lifting loss `[B]` (zeros when `lift == "off"`). See the module docstring."""
    if lift == "off":
        return jnp.zeros(static.shape[:1], jnp.float32)
    residual = lift_residual(static, pooled_x, lift)
    huber = optax.losses.huber_loss(residual, delta=1.0)
    if huber.ndim == 1:
        return huber
    per_position = huber.reshape(huber.shape[0], -1)
    return per_position.sum(-1) if flavor == "paper" else per_position.mean(-1)


def default_lift_weight(flavor: str) -> float:
    return 1.0 if flavor == "paper" else 0.1


def ifdd_loss(
    outputs: dict,
    targets: jax.Array,
    *,
    lift: str = "tc",
    lift_weight: Optional[float] = None,
    flavor: str = "paper",
    mask: Optional[jax.Array] = None,
) -> Tuple[jax.Array, dict]:
    """The training objective: mean CE + lift_weight · mean lifting loss.

    Args:
      outputs: a model's output dict (`logits`; IFDD models also `static`, `pooled_x`).
      targets: integer labels `[B]` or soft targets `[B, K]`.
      lift, lift_weight, flavor: see the module docstring; weight None -> the flavor's default.
      mask: optional `[B]` weights (0 for padding examples).
    Returns:
      (scalar loss, dict of the scalar terms `classification`, `lifting`).
    """
    logits = outputs["logits"]
    if targets.ndim == 1:
        ce = cross_entropy(logits, targets)
    else:
        ce = soft_target_cross_entropy(logits, targets)
    if "static" in outputs and lift != "off":
        lifting = lifting_loss(outputs["static"], outputs["pooled_x"], lift, flavor)
    else:
        lifting = jnp.zeros_like(ce)
    if mask is None:
        mask = jnp.ones_like(ce)
    mask = mask.astype(jnp.float32)
    denom = jnp.maximum(mask.sum(), 1.0)
    ce_mean = jnp.sum(ce * mask) / denom
    lift_mean = jnp.sum(lifting * mask) / denom
    weight = default_lift_weight(flavor) if lift_weight is None else lift_weight
    return ce_mean + weight * lift_mean, dict(classification=ce_mean, lifting=lift_mean)
