"""Formulations of two model ops that every export target converts, swapped in only while an
export traces the model (`portable`); the model files are unchanged and training never sees them.

* MViT's depthwise Conv3d runs in its "grouped" form (one grouped convolution, the form used on
  accelerators) instead of "auto", whose CPU choice depends on the element count, which a dynamic
  batch leaves unknown (jax.export cannot decide `x.size >= n` for a symbolic batch). Both forms
  compute the same convolution.
* MViT's attention core runs in its "dense" form (mvit.auto_forms_as; the accelerators'
  form) instead of "auto", which on a CPU host would trace the per-frame loop (a while loop the
  exporters' targets would have to carry). Both forms compute the same attention.
For TFLite (`tflite=True`), whose converter accepts fewer forms, two more:
* ISSM's frame reads at the interpolation positions (Eq. 4,
  issm.interpolate_frames) select the two frames with a one-hot product, out[b, k] =
  Σ_t onehot(⌊p⌋)[b, k, t] x[b, t], instead of a per-clip gather: TFLite's converter rejects a
  gather with batch dimensions or a dynamic batch ("'mhlo.gather' op Dynamic shaped operand is not
  supported"). The selection is exact (one term 1·x, the others 0·x = 0), and the interpolation
  (1 - w) x_lower + w x_upper is computed as issm.interpolate_frames computes it, so the result is
  bit-identical for finite features (tests/test_export.py checks it);
* MViT's decomposed relative positions (mvit.decomposed_rel_pos) broadcast-add the three axes'
  terms as 8-D tensors [B, heads, t, h, w, k_t, k_h, k_w], and TFLite's ADD broadcasts at most
  6-D ("failed to legalize operation 'tfl.add'"): the same sums are formed with the batch and head
  axes merged and the query grid flattened, [B·heads, t·h·w, k_t, k_h, k_w], in the same order;
* the depthwise Conv3d runs in its "shifted" form (mvit.depthwise_conv3d_shifted: a sum of
  shifted slices times the kernel taps), since TFLite has no grouped 3-D convolution
  ("'tf.Conv3D' op is neither a custom op nor a flex op").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
import jax.numpy as jnp

from ifdd_jax.models import issm, mvit


def interpolate_frames_onehot(x: jax.Array, positions: jax.Array) -> jax.Array:
    """issm.interpolate_frames with the frame reads as one-hot products.

    x: `[B, T, ...]` features; positions: `[B, K]` frame positions in [0, T-1] -> `[B, K, ...]`.
    """
    num_frames = x.shape[1]
    lower = jnp.clip(jnp.floor(positions), 0, num_frames - 2)
    weight = positions - lower
    frames = jnp.arange(num_frames, dtype=lower.dtype)
    pick_lower = (lower[..., None] == frames).astype(x.dtype)  # [B, K, T]
    pick_upper = (lower[..., None] + 1 == frames).astype(x.dtype)
    x_lower = jnp.einsum("bkt,bt...->bk...", pick_lower, x)
    x_upper = jnp.einsum("bkt,bt...->bk...", pick_upper, x)
    weight = weight.reshape(weight.shape + (1,) * (x.ndim - 2)).astype(x.dtype)
    return (1.0 - weight) * x_lower + weight * x_upper


def decomposed_rel_pos_low_rank(
    q: jax.Array,
    q_thw: tuple,
    k_thw: tuple,
    rel_pos_t: jax.Array,
    rel_pos_h: jax.Array,
    rel_pos_w: jax.Array,
) -> jax.Array:
    """mvit.decomposed_rel_pos with tensors of rank 6 at most: q `[B, heads, Nq, D]`, the tables
    `[rows, D]` -> `[B, heads, Nq, Nk]`."""
    (qt, qh, qw), (kt, kh, kw) = q_thw, k_thw
    tables = []
    for table, qs, ks in ((rel_pos_t, qt, kt), (rel_pos_h, qh, kh), (rel_pos_w, qw, kw)):
        table = mvit.resize_table(table, 2 * max(qs, ks) - 1)
        tables.append(table[mvit.rel_pos_index(qs, ks)])  # [q_size, k_size, D]
    rt, rh, rw = tables
    b, n, _, d = q.shape
    r_q = q.reshape(b * n, qt, qh, qw, d)
    queries = qt * qh * qw
    rel_t = jnp.einsum("mthwc,tkc->mthwk", r_q, rt).reshape(b * n, queries, kt, 1, 1)
    rel_h = jnp.einsum("mthwc,hkc->mthwk", r_q, rh).reshape(b * n, queries, 1, kh, 1)
    rel_w = jnp.einsum("mthwc,wkc->mthwk", r_q, rw).reshape(b * n, queries, 1, 1, kw)
    return (rel_t + rel_h + rel_w).reshape(b, n, queries, kt * kh * kw)


@contextlib.contextmanager
def portable(tflite: bool = False) -> Iterator[None]:
    """Traces the model with the portable forms (module docstring) inside this context; `tflite`:
    also the forms TFLite's converter needs."""
    originals = (issm.interpolate_frames, mvit.decomposed_rel_pos)
    if tflite:
        # The models look these functions up in their modules at call time.
        issm.interpolate_frames = interpolate_frames_onehot
        mvit.decomposed_rel_pos = decomposed_rel_pos_low_rank
    try:
        with mvit.auto_forms_as(attention="dense", depthwise="shifted" if tflite else "grouped"):
            yield
    finally:
        issm.interpolate_frames, mvit.decomposed_rel_pos = originals
