"""Mixup / CutMix and label smoothing on a batch (docs/reference-ifdd.md §5, timm's batch mode).

One draw per batch: with probability mix_prob the batch is mixed; CutMix is chosen with
probability switch_prob when both are enabled (λ ~ Beta(cutmix_alpha)), else Mixup
(λ ~ Beta(mixup_alpha)). The partner of sample i is sample B-1-i (the batch flipped). CutMix pastes
one H×W box shared by all frames and channels, and λ is corrected to the box's actual area.
Targets: one-hot smoothed to off = ε/K, on = 1 - ε + ε/K, then λ·y + (1-λ)·y_flipped.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class MixOptions:
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.1


def smooth_one_hot(labels: tf.Tensor, num_classes: int, smoothing: float) -> tf.Tensor:
    """int [B] -> float32 [B, K]."""
    off = smoothing / num_classes
    return tf.one_hot(labels, num_classes, on_value=1.0 - smoothing + off, off_value=off)


def _beta(seed: tf.Tensor, alpha: float) -> tf.Tensor:
    seeds = tf.random.experimental.stateless_split(seed, 2)
    a = tf.random.stateless_gamma([], seeds[0], alpha=alpha)
    b = tf.random.stateless_gamma([], seeds[1], alpha=alpha)
    return a / tf.maximum(a + b, 1e-12)


def _cutmix(clips: tf.Tensor, lam: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    shape = tf.shape(clips)  # [B, T, H, W, 3]
    h, w = shape[2], shape[3]
    ratio = tf.sqrt(1.0 - lam)
    cut_h = tf.cast(tf.cast(h, tf.float32) * ratio, tf.int32)
    cut_w = tf.cast(tf.cast(w, tf.float32) * ratio, tf.int32)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    cy = tf.random.stateless_uniform([], seeds[0], 0, h, dtype=tf.int32)
    cx = tf.random.stateless_uniform([], seeds[1], 0, w, dtype=tf.int32)
    y0, y1 = tf.clip_by_value(cy - cut_h // 2, 0, h), tf.clip_by_value(cy + cut_h // 2, 0, h)
    x0, x1 = tf.clip_by_value(cx - cut_w // 2, 0, w), tf.clip_by_value(cx + cut_w // 2, 0, w)
    rows = tf.logical_and(tf.range(h) >= y0, tf.range(h) < y1)
    cols = tf.logical_and(tf.range(w) >= x0, tf.range(w) < x1)
    box = tf.logical_and(rows[:, None], cols[None, :])[None, None, :, :, None]
    mixed = tf.where(box, tf.reverse(clips, [0]), clips)
    area = tf.cast((y1 - y0) * (x1 - x0), tf.float32)
    return mixed, 1.0 - area / tf.cast(h * w, tf.float32)


def mix_batch(
    clips: tf.Tensor, labels: tf.Tensor, num_classes: int, opts: MixOptions, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Mixes a batch.

    Args:
      clips: float32 [B, T, H, W, 3].
      labels: int32 [B].
      seed: int32 [2], one per batch (stateless, so a resumed run repeats the same draws).
    Returns:
      (clips float32 [B, T, H, W, 3], target float32 [B, K]).
    """
    target = smooth_one_hot(labels, num_classes, opts.label_smoothing)
    use_mixup, use_cutmix = opts.mixup_alpha > 0, opts.cutmix_alpha > 0
    if not (use_mixup or use_cutmix) or opts.mix_prob <= 0:
        return clips, target
    seeds = tf.random.experimental.stateless_split(seed, 4)
    do_mix = tf.random.stateless_uniform([], seeds[0]) < opts.mix_prob
    if use_mixup and use_cutmix:
        do_cutmix = tf.random.stateless_uniform([], seeds[1]) < opts.switch_prob
    else:
        do_cutmix = tf.constant(use_cutmix)

    def cutmix():
        return _cutmix(clips, _beta(seeds[2], opts.cutmix_alpha or 1.0), seeds[3])

    def mixup():
        lam = _beta(seeds[2], opts.mixup_alpha or 1.0)
        return lam * clips + (1.0 - lam) * tf.reverse(clips, [0]), lam

    def no_mix():
        return clips, tf.constant(1.0)

    mixed, lam = tf.cond(do_mix, lambda: tf.cond(do_cutmix, cutmix, mixup), no_mix)
    return mixed, lam * target + (1.0 - lam) * tf.reverse(target, [0])
