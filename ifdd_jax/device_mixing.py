"""Mixup / CutMix and label smoothing of a batch inside the jitted train step
(`config.data.augment_on_device`), with the semantics of data_pipeline/mixing.py (timm's batch
mode, docs/reference-ifdd.md §5).

One draw per batch: with probability mix_prob the batch is mixed; CutMix is chosen with
probability switch_prob when both are enabled (λ ~ Beta(cutmix_alpha)), else Mixup
(λ ~ Beta(mixup_alpha)). The partner of sample i is sample B-1-i (the batch flipped). CutMix pastes
one H×W box shared by every frame and channel, and λ is corrected to the box's actual area.
Targets: one-hot smoothed to off = ε/K, on = 1 - ε + ε/K, then λ·y + (1-λ)·y_flipped.

Pure jax.numpy: with the batch sharded over a mesh, the flip is a collective XLA inserts.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class MixOptions:
    """data_pipeline.mixing.MixOptions' fields (kept separate so that this module needs no
    TensorFlow); `enabled` False leaves the clips as they are and only smooths the labels."""

    enabled: bool = True
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.1


def smooth_one_hot(labels: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
    """int [B] -> float32 [B, K]."""
    off = smoothing / num_classes
    hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    return hot * (1.0 - smoothing) + off


def cutmix_weight(key: jax.Array, lam: jax.Array, height: int, width: int) -> tuple:
    """The CutMix box for a drawn λ as a per-pixel weight of the sample itself.

    Returns (weight float32 [H, W]: 0 inside the box, 1 outside; λ corrected to the box area []).
    The box is sqrt(1-λ)·H × sqrt(1-λ)·W (truncated) around a uniform centre, clipped to the frame.
    """
    ratio = jnp.sqrt(1.0 - lam)
    cut_h = (height * ratio).astype(jnp.int32)
    cut_w = (width * ratio).astype(jnp.int32)
    ky, kx = jax.random.split(key)
    cy = jax.random.randint(ky, (), 0, height)
    cx = jax.random.randint(kx, (), 0, width)
    y0, y1 = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
    x0, x1 = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
    rows = (jnp.arange(height) >= y0) & (jnp.arange(height) < y1)
    cols = (jnp.arange(width) >= x0) & (jnp.arange(width) < x1)
    inside = rows[:, None] & cols[None, :]
    area = ((y1 - y0) * (x1 - x0)).astype(jnp.float32)
    return jnp.where(inside, 0.0, 1.0), 1.0 - area / (height * width)


def mix_weight(key: jax.Array, height: int, width: int, opts: MixOptions) -> tuple:
    """One batch's draw: (weight float32 [H, W] of each sample against its partner, λ []).

    Mixup gives a constant weight λ, CutMix 0 in its box and 1 elsewhere, no mixing 1 (λ = 1).
    """
    use_mixup, use_cutmix = opts.mixup_alpha > 0, opts.cutmix_alpha > 0
    ones = jnp.ones((height, width), jnp.float32)
    if not opts.enabled or not (use_mixup or use_cutmix) or opts.mix_prob <= 0:
        return ones, jnp.ones((), jnp.float32)
    k_mix, k_switch, k_lam, k_box = jax.random.split(key, 4)
    do_mix = jax.random.uniform(k_mix) < opts.mix_prob
    if use_mixup and use_cutmix:
        do_cutmix = jax.random.uniform(k_switch) < opts.switch_prob
    else:
        do_cutmix = jnp.asarray(use_cutmix)
    # One λ stream for both: only the chosen one is used, as in the TF pipeline.
    lam_cut = jax.random.beta(k_lam, opts.cutmix_alpha or 1.0, opts.cutmix_alpha or 1.0)
    lam_mixup = jax.random.beta(k_lam, opts.mixup_alpha or 1.0, opts.mixup_alpha or 1.0)
    box, lam_box = cutmix_weight(k_box, lam_cut, height, width)
    weight = jnp.where(do_cutmix, box, lam_mixup * ones)
    lam = jnp.where(do_cutmix, lam_box, lam_mixup)
    return jnp.where(do_mix, weight, ones), jnp.where(do_mix, lam, 1.0)


def mix_batch(
    key: jax.Array, clips: jax.Array, labels: jax.Array, num_classes: int, opts: MixOptions
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Mixes a batch with its flipped self.

    Args:
      key: the batch's key (one draw per batch).
      clips: float32 [B, T, H, W, C].
      labels: int [B].
    Returns:
      (clips float32 [B, T, H, W, C], target float32 [B, K], λ float32 []).
    """
    target = smooth_one_hot(labels, num_classes, opts.label_smoothing)
    weight, lam = mix_weight(key, clips.shape[2], clips.shape[3], opts)
    if opts.enabled and (opts.mixup_alpha > 0 or opts.cutmix_alpha > 0) and opts.mix_prob > 0:
        w = weight[None, None, :, :, None]
        # w·x + (1-w)·partner: Mixup's blend, and for w in {0, 1} CutMix's paste (exact).
        clips = w * clips + (1.0 - w) * jnp.flip(clips, 0)
    return clips, lam * target + (1.0 - lam) * jnp.flip(target, 0), lam
