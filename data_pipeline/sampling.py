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

Strided-window sampling (`temporal_sampling="strided_window"`, the reference flavor's for MAFW)
is the released MAFW dataset's rule (`MAFW_pretrain.get_clip` with clip_duration 32,
clip_stride 2, single_val_view on): T frames `stride` apart, frames start + stride·i of a window of
L = (T - 1)·stride + 1 consecutive frames whose start is uniform over [0, n - L]. A clip shorter
than L is first stretched to L frames in order, each frame repeated L // n times and the last
L % n frames once more, and the window is all of it (no randomness). The released code draws the
window in validation and test too; here evaluation view v draws it from a key of the run's seed,
the clip's index and v, so an evaluation is repeatable. short_clip_policy "skip" still drops
clips shorter than T; "stretch" and "loop" do not apply (the released stretch always does).
"""

from __future__ import annotations

import ml_collections
import tensorflow as tf

SHORT_CLIP_POLICIES = ("stretch", "loop", "skip")
TEMPORAL_SAMPLINGS = ("segments", "strided_window")


def options(data_config: ml_collections.ConfigDict) -> dict:
    """The keyword arguments of train_indices / eval_indices that a data config sets (configs
    written before these fields existed sample segments)."""
    sampling = data_config.get("temporal_sampling") or "segments"
    if sampling not in TEMPORAL_SAMPLINGS:
        raise ValueError(f"temporal_sampling must be one of {TEMPORAL_SAMPLINGS}, got {sampling!r}")
    stride = int(data_config.get("window_stride", 2))
    if stride < 1:
        raise ValueError(f"window_stride must be at least 1, got {stride}")
    return dict(temporal_sampling=sampling, window_stride=stride)


def window_length(num_samples: int, stride: int) -> int:
    """L: the frames a strided window of T samples spans."""
    return (num_samples - 1) * stride + 1


def window_start(num_frames: tf.Tensor, length: int, seed: tf.Tensor) -> tf.Tensor:
    """int32 []: a start uniform over [0, n - L] (the released `random.randrange(0, n - L + 1)`),
    0 when the clip is shorter than the window."""
    n = tf.cast(num_frames, tf.int32)
    count = tf.maximum(n - length + 1, 1)
    return tf.random.stateless_uniform([], seed=seed, minval=0, maxval=count, dtype=tf.int32)


def strided_window_indices(
    num_frames: tf.Tensor, num_samples: int, stride: int, start: tf.Tensor
) -> tf.Tensor:
    """int32 [T]: frames start + stride·i of the window; for a clip shorter than the window, the
    same positions of the clip stretched to L frames (see the module docstring)."""
    n = tf.cast(num_frames, tf.int32)
    length = window_length(num_samples, stride)
    positions = tf.range(num_samples, dtype=tf.int32) * stride
    # Stretched clip: frames 0 .. n-r-1 take `copies` positions each, the last r one more.
    copies = tf.maximum(length // tf.maximum(n, 1), 1)  # >= 1 also where n >= L (unused there)
    extra = length % tf.maximum(n, 1)
    head = (n - extra) * copies
    stretched = tf.where(
        positions < head, positions // copies, n - extra + (positions - head) // (copies + 1)
    )
    return tf.where(n >= length, start + positions, stretched)


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
    num_frames: tf.Tensor,
    num_samples: int,
    seed: tf.Tensor,
    short_clip_policy: str = "stretch",
    *,
    temporal_sampling: str = "segments",
    window_stride: int = 2,
) -> tf.Tensor:
    """int32 [T]: one random frame per segment, or a random strided window (stateless, from seed
    int32 [2])."""
    if temporal_sampling == "strided_window":
        length = window_length(num_samples, window_stride)
        start = window_start(num_frames, length, seed)
        return strided_window_indices(num_frames, num_samples, window_stride, start)
    offsets = tf.random.stateless_uniform([num_samples], seed=seed, dtype=tf.float32)
    return segment_indices(num_frames, num_samples, offsets, short_clip_policy)


def eval_indices(
    num_frames: tf.Tensor,
    num_samples: int,
    num_views: int = 1,
    short_clip_policy: str = "stretch",
    *,
    temporal_sampling: str = "segments",
    window_stride: int = 2,
    seed: tf.Tensor | None = None,
) -> tf.Tensor:
    """int32 [V, T]: view v samples position (v + 0.5) / V inside every segment, or (strided
    windows) the window of a start drawn from `seed` (int32 [2], the clip's own) folded with v."""
    views = []
    if temporal_sampling == "strided_window":
        if seed is None:
            raise ValueError("strided-window evaluation draws its windows from a seed; pass one")
        length = window_length(num_samples, window_stride)
        for v in range(num_views):
            view_seed = tf.random.experimental.stateless_fold_in(seed, v)
            start = window_start(num_frames, length, view_seed)
            views.append(strided_window_indices(num_frames, num_samples, window_stride, start))
        return tf.stack(views)
    for v in range(num_views):
        offsets = tf.fill([num_samples], (v + 0.5) / num_views)
        views.append(segment_indices(num_frames, num_samples, offsets, short_clip_policy))
    return tf.stack(views)
