"""Temporal sampling of T frame indices from a clip of n frames (TF ops, graph-safe).

Uniform segment sampling: the clip is cut into T equal segments and one frame is taken from each,
at a random position inside the segment in training and at the segment centre in evaluation.
Evaluation view v of V takes position (v + 0.5) / V inside every segment, so views spread over the
clip. For DFEW's 16-frame version with T = 16 this returns all frames in order, as the authors do.

Clips shorter than T (FERV39k has 8-frame clips) follow `short_clip_policy`:
  "stretch" (default): the same segment formula, which repeats frames in temporal order
            (each frame about T/n times), keeping the clip's duration and its order of events.
  "loop":   the clip is repeated cyclically from a start frame (random in training, 0 / spread
            over views in evaluation), as dmvr does; this introduces a jump back in time.
  "skip":   such clips are filtered out before sampling and counted (see pipeline.py).
"""

from __future__ import annotations

import tensorflow as tf

SHORT_CLIP_POLICIES = ("stretch", "loop", "skip")


def segment_indices(
    num_frames: tf.Tensor, num_samples: int, offsets: tf.Tensor, short_clip_policy: str = "stretch"
) -> tf.Tensor:
    """Frame indices for one view.

    Args:
      num_frames: int scalar n >= 1.
      num_samples: T.
      offsets: float32 [T] positions in [0, 1) inside each segment (0.5 = centre).
      short_clip_policy: see module docstring; only matters when n < T.
    Returns:
      int32 [T] indices in [0, n).
    """
    if short_clip_policy not in SHORT_CLIP_POLICIES:
        raise ValueError(
            f"short_clip_policy must be one of {SHORT_CLIP_POLICIES}, got {short_clip_policy!r}"
        )
    n = tf.cast(num_frames, tf.int32)
    n_f = tf.cast(n, tf.float32)
    i = tf.range(num_samples, dtype=tf.float32)
    seg = tf.cast(tf.floor((i + offsets) * n_f / num_samples), tf.int32)
    seg = tf.clip_by_value(seg, 0, n - 1)
    if short_clip_policy != "loop":
        return seg
    # Loop: the first offset picks the start frame, then consecutive frames wrap around.
    start = tf.cast(tf.floor(offsets[0] * n_f), tf.int32)
    looped = tf.math.floormod(start + tf.range(num_samples, dtype=tf.int32), n)
    return tf.where(n < num_samples, looped, seg)


def train_indices(
    num_frames: tf.Tensor, num_samples: int, seed: tf.Tensor, short_clip_policy: str = "stretch"
) -> tf.Tensor:
    """int32 [T]: one random frame per segment (stateless, from seed int32 [2])."""
    offsets = tf.random.stateless_uniform([num_samples], seed=seed, dtype=tf.float32)
    return segment_indices(num_frames, num_samples, offsets, short_clip_policy)


def eval_indices(
    num_frames: tf.Tensor, num_samples: int, num_views: int = 1, short_clip_policy: str = "stretch"
) -> tf.Tensor:
    """int32 [V, T]: view v samples position (v + 0.5) / V inside every segment."""
    views = []
    for v in range(num_views):
        offsets = tf.fill([num_samples], (v + 0.5) / num_views)
        views.append(segment_indices(num_frames, num_samples, offsets, short_clip_policy))
    return tf.stack(views)
