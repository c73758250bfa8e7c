"""ISSM, the Implicit Static-dynamic Split Module (paper Eqs. 1-4).

ISSM splits the feature sequence X `[B, T, H, W, C]` into a static group X_S and a dynamic group
X_D, each `[B, T/2, H, W, C]`, at content-aware fractional frame indices:

1. (Eq. 1) a temporal descriptor Z `[B, T, d]` per frame;
2. (Eq. 2) the frame-similarity S = Z Zᵀ · scale, A_S = softmax(S), A_D = softmax(-S) (rows);
3. (Eq. 3) offsets ΔI = L · tanh(W vec(A) + b) in (-L, L), one per output slot, added to the
   initial indices (even frames for the static group, odd frames for the dynamic group);
4. (Eq. 4) linear interpolation X[I] = (⌈I⌉ - I) X[⌊I⌋] + (I - ⌊I⌋) X[⌈I⌉], so gradients reach
   the offsets through the interpolation weights. (The paper's Eq. 4 as printed gives 0 at
   integer I and writes I_F for I_D; this is the intended form.)

`variant` selects the variant of the ablations (config.model.issm):
  * "even_odd": X_S = X[0::2], X_D = X[1::2], nothing learned;
  * "issm": the module above (default);
  * "entire" (ISSM†): a learned global token attends over all T·H·W tokens and an MLP gives the
    T offsets (T/2 static, T/2 dynamic) instead of the frame-similarity path;
  * "weighting" (ISSM‡): instead of interpolating at one index, each output slot is a softmax
    weighting over all T frames; the two T×T/2 weighting matrices come from vec(A_S) and
    vec(A_D) through a linear map, so they stay content-aware. The reported index of a slot is
    its expected frame Σ_t t·W[t, k].
`init_index` gives the initial indices: "even_odd" (I_S = 0, 2, ..., I_D = 1, 3, ...) or "midpoint"
(both groups start at the pair centres 0.5, 2.5, ...).

Paper vs released code (`flavor`), written here once:
* Eq. 1. paper: 2×2 spatial average pooling, a 3×3 conv compressing channels by D_c, a Linear to
  d_T = 128 and LayerNorm: Z = LN(W_T vec(·) + b_T) with W_T shared by the frames and a bias per
  frame, b_T ∈ R^{T×d_T} (parameter `descriptor_bias` `[T, d_T]`), so each frame position gets
  its own offset before the similarity. reference: adaptive average pooling to 7×7, a 1×1 conv to
  7 channels with GELU, flattened (Z is 343-d); no Linear, no LayerNorm.
* Eq. 2. paper: S scaled by 1/sqrt(d_T), offset Linears with biases. reference: S scaled by 1/C
  (C = channels of X), offset Linears without bias.
* Eq. 3. paper: L = T/2 (the appendix's best range, ±4 for T = 8; configurable) and indices clamped
  to [0, T-1]. reference: L = 2, and the frames are read through
  `grid_sample(align_corners=False, padding_mode="border")` on indices normalised by 2·I/(T-1) - 1:
  the position actually read is p = clip(T·I/(T-1) - 0.5, 0, T-1), so zero offsets read
  {0, 1.79, 4.07, 6.36} / {0.64, 2.93, 5.21, 7} for T = 8, not the even/odd frames.
* The released module also holds an unused `time_project` (Linear T->T, GELU, Linear T->1); the
  reference flavor creates its parameters so parameter counts and converted checkpoints line up.
Eq. 1 names no activation after its conv, and the paper flavor has none (the LayerNorm follows the
Linear); the released GELU belongs to the released 1×1 conv only. Where the paper is silent on
initialisation the paper flavor takes the released choice: offset Linears are trunc-normal(0.03)
(the released AdaptSplit's init, zero bias), the convs of Eq. 1 keep PyTorch's default
U(±1/sqrt(fan_in)) for weight *and* bias (the released 1×1 conv is not touched by AdaptSplit's
init, which covers its Linears only; fan_in = in_channels·kernel area). W_T and b_T have no
released counterpart: W_T is trunc-normal(0.02) (the released backbone's Linear init), b_T starts
at zero.
"""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ifdd_jax.models.layers import (
    attend,
    check_flavor,
    fold_time,
    gelu,
    torch_default_bias_init,
    torch_default_init,
    trunc_normal_init,
)

VARIANTS = ("even_odd", "issm", "entire", "weighting")
INITS = ("even_odd", "midpoint")
OFFSET_INPUTS = ("vec_a", "standardized")


def initial_indices(num_frames: int, init: str) -> tuple[np.ndarray, np.ndarray]:
    """Initial (static, dynamic) frame indices, each `[T/2]` float32."""
    if num_frames < 2 or num_frames % 2:
        raise ValueError(f"ISSM needs an even number of frames >= 2, got {num_frames}")
    even = np.arange(0, num_frames, 2, dtype=np.float32)
    if init == "even_odd":
        return even, even + 1.0
    if init == "midpoint":
        return even + 0.5, even + 0.5
    raise ValueError(f"ISSM init must be one of {INITS}, got {init!r}")


def resolve_index_range(index_range: float | str | None, num_frames: int, flavor: str) -> float:
    """The allowable range L in frames: None -> the flavor's default (T/2 paper, 2 reference),
    a number, or a string "T/k" relative to the number of frames T of X."""
    if index_range is None or index_range == "":
        return num_frames / 2.0 if flavor == "paper" else 2.0
    if isinstance(index_range, str):
        text = index_range.replace(" ", "")
        match = re.fullmatch(r"T/(\d+(?:\.\d+)?)", text)
        try:
            value = num_frames / float(match.group(1)) if match else float(text)
        except ValueError:
            raise ValueError(
                f"ISSM index range must be a number or 'T/k', got {index_range!r}"
            ) from None
    else:
        value = float(index_range)
    if not value > 0:
        raise ValueError(f"ISSM index range must be positive, got {index_range!r}")
    return value


def paper_positions(index: jax.Array, num_frames: int) -> jax.Array:
    """Eq. 3's clamp: the frame position read for index I is clip(I, 0, T-1)."""
    return jnp.clip(index, 0.0, num_frames - 1.0)


def reference_positions(index: jax.Array, num_frames: int) -> jax.Array:
    """The released code's reading position: grid_sample with align_corners=False on
    g = 2·I/(T-1) - 1 reads p = ((g + 1)·T - 1)/2 = T·I/(T-1) - 0.5, clamped by border padding."""
    return jnp.clip(num_frames * index / (num_frames - 1.0) - 0.5, 0.0, num_frames - 1.0)


def interpolate_frames(x: jax.Array, positions: jax.Array) -> jax.Array:
    """Linear interpolation of frames at fractional positions (Eq. 4).

    Args:
      x: `[B, T, ...]` features.
      positions: `[B, K]` frame positions in [0, T-1].
    Returns:
      `[B, K, ...]` with out[b, k] = (1 - w) x[b, ⌊p⌋] + w x[b, ⌊p⌋ + 1], w = p - ⌊p⌋; the gradient
      with respect to p is x[⌊p⌋ + 1] - x[⌊p⌋].
    """
    num_frames = x.shape[1]
    lower = jnp.clip(jnp.floor(positions), 0, num_frames - 2)
    weight = positions - lower
    lower = lower.astype(jnp.int32)
    take = jax.vmap(lambda frames, idx: frames[idx])
    x_lower, x_upper = take(x, lower), take(x, lower + 1)
    weight = weight.reshape(weight.shape + (1,) * (x.ndim - 2)).astype(x.dtype)
    return (1.0 - weight) * x_lower + weight * x_upper


def adaptive_avg_pool_2d(x: jax.Array, size: int) -> jax.Array:
    """PyTorch's adaptive average pooling to `size`×`size`: bin i averages rows
    [floor(i·H/size), ceil((i+1)·H/size)). `[N, H, W, C]` -> `[N, size, size, C]`."""

    def pooling_matrix(n: int) -> np.ndarray:
        m = np.zeros((size, n), np.float32)
        for i in range(size):
            start, end = (i * n) // size, -((-(i + 1) * n) // size)
            m[i, start:end] = 1.0 / (end - start)
        return m

    ph, pw = pooling_matrix(x.shape[1]), pooling_matrix(x.shape[2])
    return jnp.einsum("ih,jw,nhwc->nijc", ph, pw, x)


class _UnusedTimeProject(nn.Module):
    """Parameters of the released `time_project` (Linear T->T, GELU, Linear T->1), never applied."""

    num_frames: int

    @nn.compact
    def __call__(self) -> None:
        t = self.num_frames
        init = trunc_normal_init(0.03)
        self.param("layer0_kernel", init, (t, t))
        self.param("layer0_bias", nn.initializers.zeros, (t,))
        self.param("layer2_kernel", init, (t, 1))
        self.param("layer2_bias", nn.initializers.zeros, (1,))


class ISSM(nn.Module):
    """Splits X `[B, T, H, W, C]` into static and dynamic groups `[B, T/2, H, W, C]`.

    Returns a dict with `static`, `dynamic` (the two groups), `static_index`, `dynamic_index`
    (`[B, T/2]`, the frame positions actually read, for analysis) and, where computed,
    `similarity` (`[B, T, T]`, the scaled S of Eq. 2).
    """

    # The fields without a default are config.model's (ifdd_jax/config_lib.py documents each).
    variant: str  # VARIANTS
    flavor: str
    init_index: str  # initial indices: "even_odd" | "midpoint"
    # L: None -> T/2 (paper) or 2 (reference); a number of frames; or "T/k" (T = frames of X).
    index_range: float | str | None
    similarity_dim: int  # d_T of Eq. 1 (paper flavor)
    channel_compression: int  # D_c of Eq. 1 (paper flavor)
    # What Eq. 3's Linear reads: "vec_a" (Eqs. 2-3 as written) or "standardized" (see _offset).
    offset_input: str = "vec_a"
    reference_pool_size: int = 7  # the released `down_size`
    reference_channels: int = 7  # the released 1×1 conv's output channels

    def _range(self, num_frames: int) -> float:
        return resolve_index_range(self.index_range, num_frames, self.flavor)

    def _positions(self, index: jax.Array, num_frames: int) -> jax.Array:
        if self.flavor == "paper":
            return paper_positions(index, num_frames)
        return reference_positions(index, num_frames)

    def _descriptor(self, x: jax.Array) -> jax.Array:
        """Eq. 1: per-frame descriptor Z `[B, T, d]`."""
        b, t, _, _, c = x.shape
        frames = fold_time(x)
        if self.flavor == "paper":
            if c % self.channel_compression:
                raise ValueError(f"channels {c} not divisible by D_c={self.channel_compression}")
            z = nn.avg_pool(frames, (2, 2), strides=(2, 2)) if frames.shape[1] >= 2 else frames
            z = nn.Conv(
                c // self.channel_compression,
                (3, 3),
                padding=((1, 1), (1, 1)),
                kernel_init=torch_default_init,
                bias_init=torch_default_bias_init(9 * c),
                name="descriptor_conv",
            )(z)
            z = z.reshape(b, t, -1)
            # W_T is shared by the frames; b_T has one row per frame (Eq. 1's b_T ∈ R^{T×d_T}).
            z = nn.Dense(
                self.similarity_dim,
                use_bias=False,
                kernel_init=trunc_normal_init(0.02),
                name="descriptor_dense",
            )(z)
            frame_bias = self.param(
                "descriptor_bias", nn.initializers.zeros, (t, self.similarity_dim)
            )
            z = z + frame_bias.astype(z.dtype)
            return nn.LayerNorm(epsilon=1e-5, name="descriptor_norm")(z)
        z = adaptive_avg_pool_2d(frames, self.reference_pool_size)
        z = nn.Conv(
            self.reference_channels,
            (1, 1),
            kernel_init=torch_default_init,
            bias_init=torch_default_bias_init(c),  # PyTorch's default: fan_in = C·1·1
            name="dim_project",
        )(z)
        return gelu(z).reshape(b, t, -1)

    def _similarity(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Eq. 2: S and the row-softmaxed A_S = softmax(S), A_D = softmax(-S), each `[B, T, T]`."""
        z = self._descriptor(x)
        scale = z.shape[-1] ** -0.5 if self.flavor == "paper" else 1.0 / x.shape[-1]
        s = jnp.einsum("btd,bsd->bts", z * scale, z)
        return s, jax.nn.softmax(s, axis=-1), jax.nn.softmax(-s, axis=-1)

    def _offset(self, a: jax.Array, num_out: int, limit: float, name: str) -> jax.Array:
        """Eq. 3: L · tanh(W vec(A) (+ b)) -> `[B, num_out]`.

        With `offset_input="standardized"` the Linear reads (vec(A) - m) / sqrt(v + 1e-5), m and v
        the mean and variance of vec(A)'s T² entries. Every row of A sums to 1, so m = 1/T for
        every clip: vec(A) is a constant plus a small clip-dependent part, and with the offset
        Linear's small weights the constant part sets the indices (the dilution study measured
        the clip-dependent part of W vec(A) about 20x below the constant one). Standardising
        removes the constant and brings the clip-dependent part to unit scale; the bias b is then
        the only clip-independent term.
        """
        flat = a.reshape(a.shape[0], -1)
        if self.offset_input == "standardized":
            mean = jnp.mean(flat, axis=-1, keepdims=True)
            var = jnp.var(flat, axis=-1, keepdims=True)
            flat = (flat - mean) * jax.lax.rsqrt(var + 1e-5)
        y = nn.Dense(
            num_out,
            use_bias=self.flavor == "paper",
            kernel_init=trunc_normal_init(0.03),
            name=name,
        )(flat)
        return limit * jnp.tanh(y)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> dict:
        del train  # ISSM has no train-time randomness; kept for a uniform module signature.
        check_flavor(self.flavor)
        if self.variant not in VARIANTS:
            raise ValueError(f"ISSM variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.offset_input not in OFFSET_INPUTS:
            raise ValueError(
                f"ISSM offset_input must be one of {OFFSET_INPUTS}, got {self.offset_input!r}"
            )
        if x.ndim != 5:
            raise ValueError(f"ISSM expects X [B, T, H, W, C], got shape {x.shape}")
        b, t = x.shape[:2]
        static0, dynamic0 = initial_indices(t, self.init_index)
        half = t // 2

        if self.variant == "even_odd":
            static_index = jnp.broadcast_to(jnp.asarray(np.arange(0, t, 2), jnp.float32), (b, half))
            return dict(
                static=x[:, 0::2],
                dynamic=x[:, 1::2],
                static_index=static_index,
                dynamic_index=static_index + 1.0,
            )

        limit = self._range(t)
        out: dict = {}
        if self.variant == "entire":
            tokens = x.reshape(b, -1, x.shape[-1])
            c = tokens.shape[-1]
            global_token = self.param("global_token", trunc_normal_init(0.02), (1, 1, c))
            q = nn.Dense(c, name="global_q")(jnp.broadcast_to(global_token, (b, 1, c)))
            kv = nn.Dense(2 * c, name="global_kv")(tokens)
            pooled = attend(q, kv[..., :c], kv[..., c:], num_heads=1)[:, 0]
            hidden = gelu(nn.Dense(c, name="index_mlp_hidden")(pooled))
            offsets = limit * jnp.tanh(
                nn.Dense(t, kernel_init=trunc_normal_init(0.03), name="index_mlp_out")(hidden)
            )
            static_offset, dynamic_offset = offsets[:, :half], offsets[:, half:]
        else:
            s, a_static, a_dynamic = self._similarity(x)
            out["similarity"] = s
            if self.variant == "weighting":
                return out | self._weighting(x, a_static, a_dynamic)
            static_offset = self._offset(a_static, half, limit, "static_offset")
            dynamic_offset = self._offset(a_dynamic, half, limit, "dynamic_offset")
            if self.flavor == "reference":
                _UnusedTimeProject(t, name="time_project")()

        static_pos = self._positions(static0[None] + static_offset, t)
        dynamic_pos = self._positions(dynamic0[None] + dynamic_offset, t)
        return out | dict(
            static=interpolate_frames(x, static_pos),
            dynamic=interpolate_frames(x, dynamic_pos),
            static_index=static_pos,
            dynamic_index=dynamic_pos,
        )

    def _weighting(self, x: jax.Array, a_static: jax.Array, a_dynamic: jax.Array) -> dict:
        """ISSM‡: content-aware T×T/2 weighting matrices instead of index interpolation."""
        b, t = x.shape[:2]
        half = t // 2
        frame_ids = jnp.arange(t, dtype=jnp.float32)
        result = {}
        for group, a in (("static", a_static), ("dynamic", a_dynamic)):
            logits = nn.Dense(
                t * half, kernel_init=trunc_normal_init(0.03), name=f"{group}_weighting"
            )(a.reshape(b, -1))
            weights = jax.nn.softmax(logits.reshape(b, t, half), axis=1)  # over frames
            result[group] = jnp.einsum("btk,bt...->bk...", weights.astype(x.dtype), x)
            result[f"{group}_index"] = jnp.einsum("btk,t->bk", weights, frame_ids)
        return result
