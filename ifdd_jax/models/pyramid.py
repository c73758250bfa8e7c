"""Pyramid aggregation: S per-frame feature maps of decreasing size -> one map at the coarsest size.

Each level j is compressed to the coarsest level's size by a dilated 3×3 convolution whose stride,
dilation and padding all equal the size ratio r_j = size_j / size_S; the results are concatenated
along channels and mixed by a 1×1 convolution to `features` channels (no biases, as released).
A 3×3 kernel with dilation r, padding r and stride r maps size h to floor((h - 1) / r) + 1, so
56 -> 14 (r = 4) and 28 -> 14 (r = 2).

Paper vs released code (written here once):
* The paper writes the stride as S - j + 1 (3, 2, 1 for S = 3). That does not take 56 to 14; the
  released code uses the size ratio (4, 2, 1), which agrees with S - j + 1 for the two finer-grained
  levels. Both flavors use the ratio.
* The paper compresses every level, including the coarsest one (a plain 3×3 conv, r = 1); the
  released code passes the coarsest level through unchanged (`pass_through_last`).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ifdd_jax.models.layers import torch_default_init


class PyramidAggregation(nn.Module):
    """Maps per-frame levels `[N, h_j, w_j, c_j]` (finest first) to `[N, h_S, w_S, features]`."""

    features: int
    pass_through_last: bool = False

    @nn.compact
    def __call__(self, levels: Sequence[jax.Array]) -> jax.Array:
        if not levels:
            raise ValueError("the pyramid needs at least one level")
        target_h, target_w = levels[-1].shape[1:3]
        compressed = []
        for j, level in enumerate(levels):
            h, w = level.shape[1:3]
            if h % target_h or w % target_w or h // target_h != w // target_w:
                raise ValueError(
                    f"pyramid level {j} of size {h}x{w} is not an integer multiple of the "
                    f"coarsest size {target_h}x{target_w}"
                )
            ratio = h // target_h
            if j == len(levels) - 1 and self.pass_through_last:
                compressed.append(level)
                continue
            out = nn.Conv(
                level.shape[-1],
                (3, 3),
                strides=(ratio, ratio),
                kernel_dilation=(ratio, ratio),
                padding=((ratio, ratio), (ratio, ratio)),
                use_bias=False,
                kernel_init=torch_default_init,
                name=f"level{j}_conv",
            )(level)
            compressed.append(out)
        x = jnp.concatenate(compressed, axis=-1)
        return nn.Conv(
            self.features, (1, 1), use_bias=False, kernel_init=torch_default_init, name="cat_conv"
        )(x)
