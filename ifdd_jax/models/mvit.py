"""MViTv2 (Li et al. 2022) in linen, channels-last, following torchvision's `mvit_v2_s`.

A clip `[B, T, H, W, 3]` is cut into tokens by a Conv3d patch embedding (kernel (3, 7, 7), stride
(2, 4, 4), padding (1, 3, 3); optionally followed by an average pooling over time,
`temporal_pool`); a learned class token is put first unless `class_token=False` (no absolute
position embedding: MViTv2 uses relative positions). A stack of multiscale blocks follows, each

    x = pool_skip(x or project(norm1(x))) + SD(attention(norm1(x)))
    x = x + SD(mlp(norm2(x)))

where the attention
  * projects to q, k, v with one Linear to the block's *output* width (channel expansion happens
    inside the attention, MViTv2's "dim_mul_in_att"),
  * pools q and k/v per head with a depthwise Conv3d (kernel 3×3×3, stride stride_q / stride_kv,
    padding kernel//2, no bias, weights shared over heads) followed by LayerNorm(head_dim); the
    class token (where there is one) skips the convolution but goes through the LayerNorm,
  * adds decomposed relative positions (t, h, w tables) to the logits of the non-class tokens,
  * adds the pooled q to the output of every non-class token ("residual pooling"),
and the skip path is a max pooling (kernel s + 1, stride s, padding (s + 1)//2) on blocks that
stride q. When the width changes, the skip path is `project(norm1(x))`. LayerNorms use eps 1e-6,
the MLP ratio is 4 with exact GELU, stochastic depth rises linearly to `drop_path` over the blocks.

A stage starts at a block whose head count is new; `__call__` returns the output of the requested
stages as per-frame maps `[B, T', h, w, C]` (class token dropped), where a stage's output is the
token sequence just before the next stage's first block and the last stage is the final
LayerNorm's output (so only the last stage is normalised, as in the released IFDD backbone).

Relative-position tables are sized as torchvision sizes them: from the token grid of `input_size`
(the clip's (T, H, W) the model is built for; None: the clip seen at initialisation). A block whose
actual query/key grid needs another length interpolates its tables linearly at run time, exactly as
torchvision's `_interpolate` does, so one set of parameters serves other input sizes too.

Without a class token (`class_token=False`, IFDD-3DViT's paper flavor: "we also remove the class
token of MViT-S") there is no such parameter and every block sees only the t·h·w grid tokens:
attention, pooling LayerNorms and residual pooling run over the grid alone. With it, the class
token takes part in every attention (as a query and as a key) and in the pooling LayerNorms, so
it changes the grid tokens too, even where its own output row is discarded.

Initialisation is torchvision's: Linear trunc-normal(0.02) with zero bias, LayerNorm 1/0, class
token and relative-position tables trunc-normal(0.02); the convolutions keep PyTorch's default
U(±1/sqrt(fan_in)): the patch embedding's weight and bias, the bias-free pooling kernels.

Parameter names mirror torchvision's keys (see ifdd_jax/convert/families.py):
  conv_proj, class_token, blocks_{i}/{norm1, norm2, project, mlp_fc1, mlp_fc2,
  attn/{qkv, project, rel_pos_h, rel_pos_w, rel_pos_t, pool_q|pool_k|pool_v/{pool, norm}}}, norm.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ifdd_jax.models.layers import (
    StochasticDepth,
    gelu,
    torch_default_bias_init,
    torch_default_init,
    trunc_normal_init,
)

Triple = tuple[int, int, int]

LN_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class MViTBlockConfig:
    """One multiscale block (torchvision's MSBlockConfig)."""

    num_heads: int
    input_channels: int
    output_channels: int
    kernel_q: Triple = (3, 3, 3)
    kernel_kv: Triple = (3, 3, 3)
    stride_q: Triple = (1, 1, 1)
    stride_kv: Triple = (1, 1, 1)


def block_configs(
    depths: Sequence[int],
    dims: Sequence[int] = (96, 192, 384, 768),
    heads: Sequence[int] = (1, 2, 4, 8),
    kv_stride: Triple = (1, 8, 8),
    kernel: Triple = (3, 3, 3),
) -> tuple[MViTBlockConfig, ...]:
    """The MViTv2 block list for stage depths `depths`.

    Each stage after the first opens with a block that widens to the stage's width and head count
    (inside its attention) and strides q by (1, 2, 2); the k/v stride starts at `kv_stride` and its
    spatial part halves at every q-stride block (never below 1), so keys and values stay at the
    coarsest grid. `block_configs((1, 2, 11, 2))` is torchvision's `mvit_v2_s`.
    """
    if not depths or any(d < 1 for d in depths):
        raise ValueError(f"every stage needs at least one block, got depths {tuple(depths)}")
    if len(depths) > min(len(dims), len(heads)):
        raise ValueError(f"{len(depths)} stages but only {len(dims)} widths / {len(heads)} heads")
    configs = []
    kv = tuple(kv_stride)
    in_dim = dims[0]
    for stage, depth in enumerate(depths):
        for i in range(depth):
            opens = stage > 0 and i == 0
            stride_q = (1, 2, 2) if opens else (1, 1, 1)
            if opens:
                kv = (kv[0], max(kv[1] // 2, 1), max(kv[2] // 2, 1))
            configs.append(
                MViTBlockConfig(
                    num_heads=heads[stage],
                    input_channels=in_dim,
                    output_channels=dims[stage],
                    kernel_q=tuple(kernel),
                    kernel_kv=tuple(kernel),
                    stride_q=stride_q,
                    stride_kv=kv,
                )
            )
            in_dim = dims[stage]
    return tuple(configs)


# torchvision's mvit_v2_s / PySlowFast MViTv2-S 16x4: 16 blocks, stage depths [1, 2, 11, 2].
MVIT_V2_S_DEPTHS: tuple[int, ...] = (1, 2, 11, 2)
# The released IFDD backbone ("MFViT_XS"): stage 3 shortened from 11 to 5 blocks, 10 blocks in all.
MVIT_V2_XS_DEPTHS: tuple[int, ...] = (1, 2, 5, 2)


def mvit_v2_s_blocks() -> tuple[MViTBlockConfig, ...]:
    return block_configs(MVIT_V2_S_DEPTHS)


def mvit_v2_xs_blocks() -> tuple[MViTBlockConfig, ...]:
    return block_configs(MVIT_V2_XS_DEPTHS)


def stage_starts(blocks: Sequence[MViTBlockConfig]) -> list[int]:
    """Indices of the blocks that open a stage after the first: those whose head count is new
    (the released backbone's rule)."""
    seen = {blocks[0].num_heads}
    starts = []
    for i, cnf in enumerate(blocks):
        if i > 0 and cnf.num_heads not in seen:
            seen.add(cnf.num_heads)
            starts.append(i)
    return starts


# ---------------------------------------------------------------------------------------------
# Relative positions (integer index arithmetic, torchvision's linear table interpolation).


def rel_pos_index(q_size: int, k_size: int) -> np.ndarray:
    """`[q_size, k_size]` table rows for decomposed relative positions along one axis.

    torchvision computes dist = i·max(k/q, 1) - (j + 1 - k)·max(q/k, 1) in floating point and
    truncates it; with L = max(q, k) that is (i·k + (k - 1 - j)·q) / min(q, k) exactly, which we
    evaluate in integers so that non-power-of-two ratios cannot round the wrong way.
    """
    i = np.arange(q_size)[:, None]
    j = np.arange(k_size)[None, :]
    return (i * k_size + (k_size - 1 - j) * q_size) // min(q_size, k_size)


def linear_resize_matrix(old: int, new: int) -> np.ndarray:
    """`[new, old]` weights of PyTorch's `F.interpolate(mode="linear", align_corners=False)`, which
    torchvision uses to stretch a relative-position table to another length."""
    m = np.zeros((new, old), np.float64)
    scale = old / new
    for i in range(new):
        src = max((i + 0.5) * scale - 0.5, 0.0)
        lo = min(int(np.floor(src)), old - 1)
        hi = min(lo + 1, old - 1)
        w = src - lo
        m[i, lo] += 1.0 - w
        m[i, hi] += w
    return m


def resize_table(table: jax.Array, length: int) -> jax.Array:
    """A relative-position table `[L, D]` linearly resized to `[length, D]` (identity if equal)."""
    if table.shape[0] == length:
        return table
    m = jnp.asarray(linear_resize_matrix(table.shape[0], length), table.dtype)
    return m @ table


def rel_pos_tables(
    q_thw: Triple,
    k_thw: Triple,
    rel_pos_t: jax.Array,
    rel_pos_h: jax.Array,
    rel_pos_w: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The per-axis relative-position embeddings of every (query, key) pair: tables `[rows, D]`
    (resized to the grids where needed) -> `[q_t, k_t, D]`, `[q_h, k_h, D]`, `[q_w, k_w, D]`."""
    gathered = []
    for table, qs, ks in zip((rel_pos_t, rel_pos_h, rel_pos_w), q_thw, k_thw):
        table = resize_table(table, 2 * max(qs, ks) - 1)
        gathered.append(table[rel_pos_index(qs, ks)])
    return gathered[0], gathered[1], gathered[2]


def rel_pos_logits(
    q: jax.Array, q_thw: Triple, rt: jax.Array, rh: jax.Array, rw: jax.Array
) -> jax.Array:
    """R_t + R_h + R_w of each (query, key) pair from the gathered embeddings (rel_pos_tables):
    q `[B, heads, q_t·q_h·q_w, D]`, rt `[q_t, k_t, D]`, rh `[q_h, k_h, D]`, rw `[q_w, k_w, D]` ->
    `[B, heads, Nq, k_t·k_h·k_w]`."""
    qt, qh, qw = q_thw
    b, n, _, d = q.shape
    r_q = q.reshape(b, n, qt, qh, qw, d)
    rel_t = jnp.einsum("bnthwc,tkc->bnthwk", r_q, rt)
    rel_h = jnp.einsum("bnthwc,hkc->bnthwk", r_q, rh)
    rel_w = jnp.einsum("bnthwc,wkc->bnthwk", r_q, rw)
    rel = rel_t[..., :, None, None] + rel_h[..., None, :, None] + rel_w[..., None, None, :]
    return rel.reshape(b, n, qt * qh * qw, rt.shape[1] * rh.shape[1] * rw.shape[1])


def decomposed_rel_pos(
    q: jax.Array,
    q_thw: Triple,
    k_thw: Triple,
    rel_pos_t: jax.Array,
    rel_pos_h: jax.Array,
    rel_pos_w: jax.Array,
) -> jax.Array:
    """The relative-position logits of MViTv2.

    Args:
      q: queries without the class token `[B, heads, q_t·q_h·q_w, D]` (already pooled).
      q_thw, k_thw: the query and key grids.
      rel_pos_t, rel_pos_h, rel_pos_w: tables `[rows, D]`.
    Returns:
      `[B, heads, Nq, Nk]` (non-class tokens), R_t + R_h + R_w of each (query, key) pair.
    """
    tables = rel_pos_tables(q_thw, k_thw, rel_pos_t, rel_pos_h, rel_pos_w)
    return rel_pos_logits(q, q_thw, *tables)


# ---------------------------------------------------------------------------------------------
# The attention core: softmax(q·kᵀ/√D + R) v + q (residual pooling), in two equal forms.


def dense_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    q_thw: Triple,
    k_thw: Triple,
    rel_tables: tuple[jax.Array, jax.Array, jax.Array],
    class_token: bool,
) -> jax.Array:
    """The attention core over all queries at once (the form used on accelerators and by the
    exporters). q `[B, heads, (1 +) Nq, D]`, k and v `[B, heads, (1 +) Nk, D]`, rel_tables
    `[rows, D]` x 3 -> `[B, heads, (1 +) Nq, D]`. The class token (row/column 0 where present)
    has no grid position: no relative positions for it, and residual pooling skips it."""
    lead = 1 if class_token else 0
    head_dim = q.shape[-1]
    logits = jnp.einsum("bnqd,bnkd->bnqk", q * head_dim**-0.5, k)
    rel = decomposed_rel_pos(q[:, :, lead:], q_thw, k_thw, *rel_tables)
    logits = logits + jnp.pad(rel, ((0, 0), (0, 0), (lead, 0), (lead, 0)))
    weights = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bnqk,bnkd->bnqd", weights, v)
    return out + jnp.pad(q[:, :, lead:], ((0, 0), (0, 0), (lead, 0), (0, 0)))


def frame_chunked_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    q_thw: Triple,
    k_thw: Triple,
    rel_tables: tuple[jax.Array, jax.Array, jax.Array],
    class_token: bool,
) -> jax.Array:
    """dense_attention's result, one query frame at a time (`lax.map` over the query grid's t):
    each frame's logits `[B, heads, q_h·q_w, Nk]` stay in cache through the relative-position
    add, the softmax and the product with v, where the dense form writes and rereads the whole
    logits tensor several times (MViT-S's first stage: 25088 queries x 392 keys per head and
    clip). The class key's logit is kept as a column of its own in the softmax instead of padding
    the relative positions with it. On a 2-core CPU this halves the attention core's time in the
    first two stages, forward and backward. Same shapes as dense_attention."""
    lead = 1 if class_token else 0
    b, n, _, d = q.shape
    scale = d**-0.5
    qt, qh, qw = q_thw
    rt, rh, rw = rel_pos_tables(q_thw, k_thw, *rel_tables)
    k_cls, k_grid = k[:, :, :lead], k[:, :, lead:]
    v_cls, v_grid = v[:, :, :lead], v[:, :, lead:]

    def one_frame(frame: tuple[jax.Array, jax.Array]) -> jax.Array:
        q_frame, rt_frame = frame  # [B, heads, q_h·q_w, D], [1, k_t, D]
        q_scaled = q_frame * scale
        logits = jnp.einsum("bnqd,bnkd->bnqk", q_scaled, k_grid)
        logits = logits + rel_pos_logits(q_frame, (1, qh, qw), rt_frame, rh, rw)
        peak = jnp.max(logits, axis=-1, keepdims=True)
        if class_token:
            cls_logit = jnp.einsum("bnqd,bnkd->bnqk", q_scaled, k_cls)  # [.., q, 1]
            peak = jnp.maximum(peak, cls_logit)
        # The shift only keeps exp in range; it cancels in the ratio (no gradient through it).
        peak = jax.lax.stop_gradient(peak)
        weights = jnp.exp(logits - peak)
        total = jnp.sum(weights, axis=-1, keepdims=True)
        out = jnp.einsum("bnqk,bnkd->bnqd", weights, v_grid)
        if class_token:
            cls_weight = jnp.exp(cls_logit - peak)
            total = total + cls_weight
            out = out + cls_weight * v_cls
        return out / total + q_frame

    q_grid = q[:, :, lead:].reshape(b, n, qt, qh * qw, d)
    frames = jax.lax.map(one_frame, (jnp.moveaxis(q_grid, 2, 0), rt[:, None]))
    out = jnp.moveaxis(frames, 0, 2).reshape(b, n, qt * qh * qw, d)
    if class_token:
        cls_row = jax.nn.softmax(jnp.einsum("bnqd,bnkd->bnqk", q[:, :, :1] * scale, k), axis=-1)
        out = jnp.concatenate([jnp.einsum("bnqk,bnkd->bnqd", cls_row, v), out], axis=2)
    return out


ATTENTION_IMPLS = {"dense": dense_attention, "chunked": frame_chunked_attention}


# ---------------------------------------------------------------------------------------------
# Modules.


def _dense(features: int, name: str) -> nn.Dense:
    # torchvision's MViT initialises every Linear trunc-normal(0.02) with zero bias.
    return nn.Dense(
        features, kernel_init=trunc_normal_init(0.02), bias_init=nn.initializers.zeros, name=name
    )


def _layer_norm(name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LN_EPS, name=name)


def _pad(kernel: Sequence[int]) -> tuple[tuple[int, int], ...]:
    return tuple((k // 2, k // 2) for k in kernel)


def _split_cls(x: jax.Array, class_token: bool) -> tuple[jax.Array | None, jax.Array]:
    """(class token row or None, grid tokens) along the token axis (-2)."""
    if not class_token:
        return None, x
    return x[..., :1, :], x[..., 1:, :]


def _join_cls(cls: jax.Array | None, tokens: jax.Array) -> jax.Array:
    return tokens if cls is None else jnp.concatenate([cls, tokens], axis=-2)


def shifted_windows(
    x: jax.Array, kernel_size: Sequence[int], stride: Sequence[int], pad_value: float = 0.0
) -> Iterator[tuple[Triple, jax.Array]]:
    """The windows of a 3D pooling / convolution with symmetric padding kernel//2 (filled with
    `pad_value`), one per kernel tap in scan order (t, then h, then w): for tap (a, b, c) the
    strided slice of the padded input that the tap reads for every output position.
    `[N, T, H, W, C]` -> taps of `[N, T', H', W', C]`. Summing or maximising over the taps gives
    the convolution or the pooling as elementwise work, whose gradients (pads of the output-sized
    cotangent) XLA's CPU backend runs far faster than those of its grouped convolution or of
    reduce_window's select-and-scatter."""
    padded = jnp.pad(x, ((0, 0),) + _pad(kernel_size) + ((0, 0),), constant_values=pad_value)
    out = [(n + 2 * (k // 2) - k) // s + 1 for n, k, s in zip(x.shape[1:4], kernel_size, stride)]
    for tap in itertools.product(*(range(k) for k in kernel_size)):
        limit = tuple(a + (o - 1) * s + 1 for a, o, s in zip(tap, out, stride))
        window = jax.lax.slice(
            padded,
            (0,) + tap + (0,),
            (padded.shape[0],) + limit + (padded.shape[4],),
            (1,) + tuple(stride) + (1,),
        )
        yield tap, window


def depthwise_conv3d_shifted(x: jax.Array, kernel: jax.Array, stride: Sequence[int]) -> jax.Array:
    """Depthwise 3D convolution with symmetric padding kernel//2, as a sum of strided, shifted
    slices times the per-channel taps: the grouped convolution's result. `[N, T, H, W, C]`, kernel
    `[kt, kh, kw, 1, C]` -> `[N, T', H', W', C]`. XLA's CPU backend runs grouped convolutions (and
    above all their gradients) 15-35x slower than this form for MViT's pooling."""
    result = None
    for (a, b, c), window in shifted_windows(x, kernel.shape[:3], stride):
        term = window * kernel[a, b, c, 0]
        result = term if result is None else result + term
    return result


def max_pool3d(x: jax.Array, kernel_size: Triple, stride: Triple) -> jax.Array:
    """PyTorch's MaxPool3d(kernel, stride, padding=kernel//2) on `[N, T, H, W, C]` (padding never
    wins: -inf). On CPU as the running maximum of shifted windows, where a later tap replaces the
    running value only if strictly larger, so the gradient goes to the first maximum of each
    window in scan order, as with PyTorch's and XLA's max pooling: the same values and gradients,
    but XLA's CPU backend runs reduce_window's gradient (select-and-scatter) about 4x slower than
    this form's (MViT's skip path at 56², batch 2). Elsewhere reduce_window (nn.max_pool), which
    accelerators run well."""
    if jax.default_backend() != "cpu":
        return nn.max_pool(x, kernel_size, strides=stride, padding=_pad(kernel_size))
    result = None
    for _, window in shifted_windows(x, kernel_size, stride, -jnp.inf):
        result = window if result is None else jnp.where(window > result, window, result)
    return result


# "auto" takes the shifted form on CPU from this many input elements. It runs far faster (2 CPU
# cores, 3x3x3 kernel: 301K elements, the last MViT-S block's pooling at batch 1, 0.45 against
# 100 ms forward, 13 against 216 ms with the gradient) but compiles slower (27 slices: +0.1 s
# forward, +0.4 s with the gradient), which dominates only for the few steps of tests on tiny maps
# (24K elements: 7 against 0.15 ms). Real clips (112 px and up, any batch) are far above it.
SHIFTED_MIN_ELEMENTS = 1 << 16
DEPTHWISE_IMPLS = ("grouped", "shifted")


class DepthwiseConv3d(nn.Module):
    """Depthwise Conv3d without bias, padding kernel//2; parameter `kernel` `[kt, kh, kw, 1, C]`
    as nn.Conv's. `impl`: "grouped" (XLA's grouped convolution), "shifted" (see
    depthwise_conv3d_shifted) or "auto": shifted on CPU for inputs of at least
    SHIFTED_MIN_ELEMENTS elements, grouped otherwise (and always on accelerators)."""

    kernel_size: Triple
    stride: Triple
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        kernel = self.param("kernel", torch_default_init, tuple(self.kernel_size) + (1, channels))
        kernel = kernel.astype(x.dtype)
        impl = self.impl
        if impl == "auto":
            large = x.size >= SHIFTED_MIN_ELEMENTS
            impl = "shifted" if jax.default_backend() == "cpu" and large else "grouped"
        if impl not in DEPTHWISE_IMPLS:
            raise ValueError(f"depthwise impl must be auto, shifted or grouped, got {impl!r}")
        if impl == "shifted":
            return depthwise_conv3d_shifted(x, kernel, self.stride)
        return jax.lax.conv_general_dilated(
            x,
            kernel,
            tuple(self.stride),
            _pad(self.kernel_size),
            dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
            feature_group_count=channels,
        )


class AttentionPool(nn.Module):
    """Pools per-head tokens `[B, heads, (1 +) t·h·w, D]` with a depthwise Conv3d (shared over the
    heads; a class token skips it), then LayerNorm(D) over all tokens. Returns the pooled tokens
    and their grid."""

    kernel: Triple
    stride: Triple
    class_token: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, thw: Triple) -> tuple[jax.Array, Triple]:
        b, n, _, d = x.shape
        cls, tokens = _split_cls(x, self.class_token)
        grid = tokens.reshape((b * n,) + tuple(thw) + (d,))
        grid = DepthwiseConv3d(self.kernel, self.stride, name="pool")(grid)
        new_thw = tuple(grid.shape[1:4])
        x = _join_cls(cls, grid.reshape(b, n, -1, d))
        return _layer_norm("norm")(x), new_thw


class MultiscaleAttention(nn.Module):
    """Pooling attention of one block. `[B, (1 +) N, C_in]` -> `[B, (1 +) N', C_out]` and the new
    grid (the leading class token row only with `class_token`).

    `rel_pos_rows` are the (temporal, spatial) lengths of the relative-position tables.
    `attention_impl`: "dense" (dense_attention), "chunked" (frame_chunked_attention) or "auto":
    chunked on CPU, dense elsewhere (accelerators keep the one-shot form; export traces dense).
    """

    output_channels: int
    num_heads: int
    kernel_q: Triple
    kernel_kv: Triple
    stride_q: Triple
    stride_kv: Triple
    rel_pos_rows: tuple[int, int]
    class_token: bool = True
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, thw: Triple) -> tuple[jax.Array, Triple]:
        b, n_tokens, _ = x.shape
        heads = self.num_heads
        if self.output_channels % heads:
            raise ValueError(f"width {self.output_channels} not divisible by {heads} heads")
        head_dim = self.output_channels // heads
        qkv = _dense(3 * self.output_channels, "qkv")(x)
        # torchvision's layout of the qkv output is [3, heads, head_dim].
        qkv = qkv.reshape(b, n_tokens, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, heads, N, D]

        cls = self.class_token
        k_thw = thw
        if np.prod(self.kernel_kv) > 1 or np.prod(self.stride_kv) > 1:
            k, k_thw = AttentionPool(self.kernel_kv, self.stride_kv, cls, name="pool_k")(k, thw)
            v, _ = AttentionPool(self.kernel_kv, self.stride_kv, cls, name="pool_v")(v, thw)
        q_thw = thw
        if np.prod(self.kernel_q) > 1 or np.prod(self.stride_q) > 1:
            q, q_thw = AttentionPool(self.kernel_q, self.stride_q, cls, name="pool_q")(q, thw)
        impl = self.attention_impl
        if impl == "auto":
            impl = "chunked" if jax.default_backend() == "cpu" else "dense"
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention impl must be auto, dense or chunked, got {impl!r}")
        t_rows, s_rows = self.rel_pos_rows
        init = trunc_normal_init(0.02)
        tables = (
            self.param("rel_pos_t", init, (t_rows, head_dim)),
            self.param("rel_pos_h", init, (s_rows, head_dim)),
            self.param("rel_pos_w", init, (s_rows, head_dim)),
        )
        out = ATTENTION_IMPLS[impl](q, k, v, q_thw, k_thw, tables, cls)
        out = out.transpose(0, 2, 1, 3).reshape(b, -1, self.output_channels)
        return _dense(self.output_channels, "project")(out), q_thw


class MultiscaleBlock(nn.Module):
    """One MViTv2 block: tokens `[B, (1 +) t·h·w, C_in]` -> `[B, (1 +) t'·h'·w', C_out]` + grid
    (the leading class token row only with `class_token`)."""

    config: MViTBlockConfig
    rel_pos_rows: tuple[int, int]
    drop_path: float = 0.0
    class_token: bool = True
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, thw: Triple, *, train: bool) -> tuple[jax.Array, Triple]:
        cnf = self.config
        if x.shape[-1] != cnf.input_channels:
            raise ValueError(f"block expects {cnf.input_channels} channels, got {x.shape[-1]}")
        drop = StochasticDepth(self.drop_path)
        x_norm = _layer_norm("norm1")(x)
        attn, new_thw = MultiscaleAttention(
            cnf.output_channels,
            cnf.num_heads,
            cnf.kernel_q,
            cnf.kernel_kv,
            cnf.stride_q,
            cnf.stride_kv,
            self.rel_pos_rows,
            self.class_token,
            self.attention_impl,
            name="attn",
        )(x_norm, thw)
        if cnf.input_channels != cnf.output_channels:
            # The widened skip path starts from norm1(x) (torchvision's proj_after_attn=True).
            x = _dense(cnf.output_channels, "project")(x_norm)
        if np.prod(cnf.stride_q) > 1:
            kernel = tuple(s + 1 if s > 1 else s for s in cnf.stride_q)
            cls, tokens = _split_cls(x, self.class_token)
            b, c = x.shape[0], x.shape[-1]
            pooled = max_pool3d(tokens.reshape((b,) + tuple(thw) + (c,)), kernel, cnf.stride_q)
            x = _join_cls(cls, pooled.reshape(b, -1, c))
        x = x + drop(attn, deterministic=not train)
        h = _layer_norm("norm2")(x)
        h = gelu(_dense(4 * cnf.output_channels, "mlp_fc1")(h))
        h = _dense(cnf.output_channels, "mlp_fc2")(h)
        return x + drop(h, deterministic=not train), new_thw


class MViT(nn.Module):
    """The MViTv2 trunk. Clips `[B, T, H, W, 3]` -> the requested stage outputs, each a per-frame
    map `[B, t, h, w, C]` (finest first); with `return_tokens` also the final normalised tokens
    `[B, 1 + t·h·w, C]` (class token first; `[B, t·h·w, C]` without a class token).

    Attributes:
      blocks: the block list (`mvit_v2_s_blocks()`, `mvit_v2_xs_blocks()` or `block_configs(...)`).
      input_size: (T, H, W) of the clips the relative-position tables are sized for; None takes
        the clip seen at initialisation.
      stages: which stage outputs to return (None: all).
      drop_path: stochastic depth of the last block (block i gets drop_path · i / (n - 1)).
      class_token: whether a learned class token is put first and carried through the blocks.
      patch_kernel, patch_stride, patch_padding: the Conv3d patch embedding.
      temporal_pool: after the patch embedding, average non-overlapping groups of this many token
        frames (the released IFDD's AvgPool3d((2, 1, 1)) for 32-frame clips; 1: none).
      attention_impl: every block's attention core, "auto", "dense" or "chunked" (see
        MultiscaleAttention); the same computation and parameters either way.
    """

    blocks: Sequence[MViTBlockConfig]
    input_size: Triple | None = None
    stages: Sequence[int] | None = None
    drop_path: float = 0.2
    patch_kernel: Triple = (3, 7, 7)
    patch_stride: Triple = (2, 4, 4)
    patch_padding: Triple = (1, 3, 3)
    class_token: bool = True
    temporal_pool: int = 1
    attention_impl: str = "auto"

    def rel_pos_rows(self, clip_thw: Sequence[int]) -> list[tuple[int, int]]:
        """(temporal, spatial) table lengths of every block for clips of size (T, H, W), sized as
        torchvision sizes them (grids by floor division)."""
        size = [n // s for n, s in zip(clip_thw, self.patch_stride)]
        size[0] //= self.temporal_pool
        rows = []
        for cnf in self.blocks:
            spatial = max(size[1:])
            q_size = spatial // cnf.stride_q[1]
            kv_size = spatial // cnf.stride_kv[1]
            rows.append((2 * size[0] - 1, 2 * max(q_size, kv_size) - 1))
            size = [n // s for n, s in zip(size, cnf.stride_q)]
        return rows

    def num_stages(self) -> int:
        return 1 + len(stage_starts(self.blocks))

    @nn.compact
    def __call__(
        self, clips: jax.Array, *, train: bool = False, return_tokens: bool = False
    ) -> list[jax.Array] | tuple[list[jax.Array], jax.Array]:
        if clips.ndim != 5:
            raise ValueError(f"expected clips [B, T, H, W, C], got shape {clips.shape}")
        if not self.blocks:
            raise ValueError("MViT needs at least one block")
        wanted = tuple(range(self.num_stages())) if self.stages is None else tuple(self.stages)
        if any(not 0 <= s < self.num_stages() for s in wanted):
            raise ValueError(f"stages {wanted} out of range for {self.num_stages()} stages")
        sized_for = tuple(self.input_size) if self.input_size else tuple(clips.shape[1:4])
        rows = self.rel_pos_rows(sized_for)

        if self.temporal_pool < 1:
            raise ValueError(f"temporal_pool must be >= 1, got {self.temporal_pool}")
        x = nn.Conv(
            self.blocks[0].input_channels,
            self.patch_kernel,
            strides=self.patch_stride,
            padding=tuple((p, p) for p in self.patch_padding),
            kernel_init=torch_default_init,
            bias_init=torch_default_bias_init(clips.shape[-1] * int(np.prod(self.patch_kernel))),
            name="conv_proj",
        )(clips)
        if self.temporal_pool > 1:
            if x.shape[1] < self.temporal_pool:
                raise ValueError(
                    f"{x.shape[1]} token frames cannot be pooled by {self.temporal_pool}"
                )
            p = self.temporal_pool
            x = nn.avg_pool(x, (p, 1, 1), strides=(p, 1, 1))  # AvgPool3d((p, 1, 1)), no padding
        b = x.shape[0]
        thw = tuple(x.shape[1:4])
        c = x.shape[-1]
        x = x.reshape(b, -1, c)
        if self.class_token:
            cls = self.param("class_token", trunc_normal_init(0.02), (c,))
            x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, c)), x], axis=1)
        lead = 1 if self.class_token else 0

        def to_map(tokens: jax.Array, grid: Triple) -> jax.Array:
            return tokens[:, lead:].reshape((b,) + tuple(grid) + (tokens.shape[-1],))

        starts = stage_starts(self.blocks)
        outputs = {}
        n = len(self.blocks)
        for i, cnf in enumerate(self.blocks):
            if i in starts:
                outputs[starts.index(i)] = to_map(x, thw)
            rate = self.drop_path * i / (n - 1.0) if n > 1 else 0.0
            block = MultiscaleBlock(
                cnf, rows[i], rate, self.class_token, self.attention_impl, name=f"blocks_{i}"
            )
            x, thw = block(x, thw, train=train)
        x = _layer_norm("norm")(x)
        outputs[len(starts)] = to_map(x, thw)
        levels = [outputs[s] for s in wanted]
        return (levels, x) if return_tokens else levels


@contextlib.contextmanager
def auto_forms_as(*, attention: str | None = None, depthwise: str | None = None) -> Iterator[None]:
    """Within this context the modules built with "auto" run in a fixed form, each with its own
    parameters: every MultiscaleAttention as `attention` ("dense" or "chunked"), every
    DepthwiseConv3d as `depthwise` ("grouped" or "shifted"); None leaves that kind on "auto".
    Used where the traced program must not depend on the host or the batch: the exporters (no
    per-frame loop in the graph, no size test on a symbolic batch) and FLOP counts (XLA's cost
    analysis counts a loop body once)."""
    if attention is not None and attention not in ATTENTION_IMPLS:
        raise ValueError(f"attention impl must be dense or chunked, got {attention!r}")
    if depthwise is not None and depthwise not in DEPTHWISE_IMPLS:
        raise ValueError(f"depthwise impl must be shifted or grouped, got {depthwise!r}")
    # (module class, its form field, the form to run) for each kind that is fixed.
    rules = [
        (cls, field, form)
        for cls, field, form in (
            (MultiscaleAttention, "attention_impl", attention),
            (DepthwiseConv3d, "impl", depthwise),
        )
        if form is not None
    ]

    def intercept(next_fun: Callable, args: tuple, kwargs: dict, context: Any) -> Any:
        module = context.module
        if context.method_name == "__call__":
            for cls, field, form in rules:
                if isinstance(module, cls) and getattr(module, field) == "auto":
                    fixed = module.clone(parent=None, **{field: form})
                    return fixed.apply({"params": module.variables["params"]}, *args, **kwargs)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(intercept):
        yield
