"""Small building blocks shared by the IFDD modules: initialisers, multi-head attention
arithmetic, whole-sample stochastic depth and the flavor check.

Everything is channels-last. Attention works on token sequences `[B, N, C]`.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

FLAVORS = ("paper", "reference")

Initializer = Callable[..., jax.Array]

# PyTorch's default for nn.Linear / nn.Conv (kaiming_uniform with a=sqrt(5)) is U(-1/sqrt(fan_in),
# 1/sqrt(fan_in)); variance_scaling(1/3, fan_in, uniform) draws from exactly that range. The
# released IFDD code keeps this default for the patch embedding, the pyramid, ISSM's 1×1 conv and
# every LADM Linear.
torch_default_init: Initializer = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias_init(fan_in: int) -> Initializer:
    """PyTorch's default bias of nn.Linear / nn.Conv: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in
    being the layer's inputs per output (in_features, or in_channels/groups · kernel volume).
    A bias initialiser only sees the bias shape, so the layer's fan_in is passed in."""
    if fan_in <= 0:
        raise ValueError(f"fan_in must be positive, got {fan_in}")
    bound = fan_in**-0.5

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_dense(features: int, fan_in: int, name: str, use_bias: bool = True) -> nn.Dense:
    """nn.Dense initialised as PyTorch's nn.Linear(fan_in, features): weight and bias both
    U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        kernel_init=torch_default_init,
        bias_init=torch_default_bias_init(fan_in),
        name=name,
    )


# torchvision's MobileNetV2 initialises convolutions with kaiming_normal(mode="fan_out").
kaiming_fan_out_init: Initializer = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


# Truncation beyond this many standard deviations is capped here (see trunc_normal_init).
_MAX_TRUNCATION_SIGMAS = 5.0


def trunc_normal_init(std: float) -> Initializer:
    """PyTorch's / timm's `trunc_normal_(w, std=std)`: N(0, std²) truncated at the *absolute*
    bounds ±2 (its defaults a=-2, b=2), which for the small std used here (0.01-0.03, bounds at
    66-200σ) is a plain normal of that std. JAX's `truncated_normal` takes its bounds in units of
    std (its default ±2σ would shrink the std by 12 %), so the bound is passed as 2/std, capped at
    5σ: beyond about 5.5σ erf rounds to ±1 in float32 and the inverse-CDF sampler then returns the
    bound itself now and then (a weight of ±2 at std 0.02); a normal has under 6e-7 of its mass
    beyond 5σ, so the cap changes nothing measurable."""
    bound = min(2.0 / std, _MAX_TRUNCATION_SIGMAS)
    return nn.initializers.truncated_normal(stddev=std, lower=-bound, upper=bound)


def check_flavor(flavor: str) -> str:
    if flavor not in FLAVORS:
        raise ValueError(f"flavor must be one of {FLAVORS}, got {flavor!r}")
    return flavor


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, as PyTorch's nn.GELU; jax.nn.gelu defaults to the tanh approximation."""
    return jax.nn.gelu(x, approximate=False)


def split_heads(x: jax.Array, num_heads: int) -> jax.Array:
    """`[B, N, C]` -> `[B, heads, N, C // heads]`."""
    b, n, c = x.shape
    if c % num_heads:
        raise ValueError(f"channels {c} are not divisible by num_heads {num_heads}")
    return x.reshape(b, n, num_heads, c // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x: jax.Array) -> jax.Array:
    """`[B, heads, N, D]` -> `[B, N, heads * D]`."""
    b, h, n, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, n, h * d)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, num_heads: int) -> jax.Array:
    """Scaled dot-product attention over all tokens.

    Args:
      q: queries `[B, Nq, C]`; k, v: keys and values `[B, Nk, C]`.
      num_heads: heads; the logits are scaled by 1/sqrt(C // heads).
    Returns:
      `[B, Nq, C]`, heads merged back in the order `[head, head_dim]` (PyTorch's order).
    """
    qh, kh, vh = (split_heads(t, num_heads) for t in (q, k, v))
    scale = qh.shape[-1] ** -0.5
    logits = jnp.einsum("bhqd,bhkd->bhqk", qh * scale, kh)
    weights = jax.nn.softmax(logits, axis=-1)
    return merge_heads(jnp.einsum("bhqk,bhkd->bhqd", weights, vh))


class StochasticDepth(nn.Module):
    """Drops the whole input of a sample with probability `rate` ("row" mode) and rescales the
    survivors by 1/(1 - rate). Uses the `dropout` RNG stream."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"stochastic depth rate must be in [0, 1], got {self.rate}")
        if deterministic or self.rate == 0.0:
            return x
        if self.rate == 1.0:
            return jnp.zeros_like(x)
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


def fold_time(x: jax.Array) -> jax.Array:
    """`[B, T, H, W, C]` -> `[B*T, H, W, C]` so that 2D layers run per frame."""
    b, t = x.shape[:2]
    return x.reshape((b * t,) + x.shape[2:])


def unfold_time(x: jax.Array, batch: int) -> jax.Array:
    """`[B*T, H, W, C]` -> `[B, T, H, W, C]`."""
    return x.reshape((batch, x.shape[0] // batch) + x.shape[1:])


def temporal_pair_mean(x: jax.Array) -> jax.Array:
    """P_T↓2: averages frame pairs (2t, 2t+1). `[B, T, ...]` -> `[B, T//2, ...]`, T even."""
    b, t = x.shape[:2]
    if t % 2:
        raise ValueError(f"temporal pooling by 2 needs an even number of frames, got {t}")
    return x.reshape((b, t // 2, 2) + x.shape[2:]).mean(axis=2)
