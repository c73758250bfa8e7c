"""MobileNetV2 trunks applied per frame: the IFDD-2DCNN arrangement and the vanilla baseline.

MobileNetV2 (Sandler et al. 2018) stacks inverted residual blocks: a 1×1 expansion (ratio t),
a 3×3 depthwise convolution, a linear 1×1 projection, BatchNorm after each and ReLU6 after the
first two; a residual joins input and output when the stride is 1 and the widths agree. The seven
bottleneck groups (t, c, n, s) are those of the paper and torchvision.

IFDD-2DCNN arrangement (the paper's appendix, "Backbone Details"; docs/reference-ifdd.md §7)
--------------------------------------------------------------------------------------------
The paper says: an input convolution halves T and quarters H and W (16×224² -> 8×56²), only the
first five bottleneck groups are used, and the pyramid takes widths {56, 28, 14} from groups 3, 4
and 5. It gives neither the stem nor the channel widths nor how MobileNetV2's own strides are
changed. Our choice, which reproduces the paper's cost (1.18 M params, 3.86 GMACs) within 2 %
(1.171 M, 3.79 GMACs in `model_summary`):

* stem: Conv3d 3->32, kernel (3, 7, 7), stride (2, 4, 4), padding (1, 3, 3), BN, ReLU6 — the
  MViT patch-embedding geometry with MobileNetV2's 32 stem channels;
* groups 1-5 with MobileNetV2's widths 16, 24, 32, 64, 96 and strides moved so that group 3 ends
  at 56², group 4 at 28² and group 5 at 14²: strides (1, 1, 1, 2, 2) instead of (1, 2, 2, 2, 1);
* pyramid levels: the outputs of groups 3, 4, 5 (32 ch @ 56², 64 ch @ 28², 96 ch @ 14²).

Vanilla baseline
----------------
The paper's "MobileNetV2 + MLP" baseline has 1.55 M params / 3.73 GMACs. Torchvision's stem
(3×3 stride-2 conv, 32 ch) with groups 1-6 (up to 160 channels) per frame, average pooling over
T×H×W, and an MLP 160->1280->classes has 1.553 M params, which matches; its cost at 16×224² is
4.10 GMACs for convolutions and linears alone and 4.21 in `model_summary`'s count (which adds
the BatchNorm scales), 13 % above the paper's 3.73. The paper states neither the baseline's
layers nor its FLOP counter; we keep the layout that matches the parameter count and report the
difference in `model_summary`.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ifdd_jax.models.layers import fold_time, kaiming_fan_out_init, unfold_time

# (expansion t, output channels c, repeats n, first stride s) of MobileNetV2's bottleneck groups.
MOBILENET_V2_GROUPS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

# IFDD-2DCNN: the first five groups, strides moved so groups 3/4/5 end at 56²/28²/14² after the
# stride-4 stem (see the module docstring).
IFDD_2DCNN_GROUPS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 1),
    (6, 64, 4, 2),
    (6, 96, 3, 2),
)
IFDD_2DCNN_PYRAMID_GROUPS: tuple[int, ...] = (3, 4, 5)

# The vanilla baseline: groups 1-6 with torchvision's strides.
BASELINE_GROUPS: tuple[tuple[int, int, int, int], ...] = MOBILENET_V2_GROUPS[:6]


def scale_width(channels: int, multiplier: float, divisor: int = 8) -> int:
    """MobileNetV2's width multiplier α: channels · α rounded to a multiple of 8, never more than
    10 % below channels · α (torchvision's `_make_divisible`)."""
    if multiplier == 1.0:
        return channels
    scaled = max(divisor, int(channels * multiplier + divisor / 2) // divisor * divisor)
    if scaled < 0.9 * channels * multiplier:
        scaled += divisor
    return scaled


def scale_groups(groups, multiplier: float):
    return tuple((t, scale_width(c, multiplier), n, s) for t, c, n, s in groups)


def depthwise_conv3x3_shifted(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """3×3 depthwise convolution (padding 1) as a sum of nine strided, shifted slices times the
    per-channel taps: the same result as a grouped convolution. `[N, H, W, C]`, kernel
    `[3, 3, 1, C]` -> `[N, H', W', C]`. XLA's CPU backend runs grouped convolutions, and above all
    their gradients, 5-12x slower than this form."""
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out_h = (x.shape[1] - 1) // stride + 1
    out_w = (x.shape[2] - 1) // stride + 1
    out = None
    for i in range(3):
        for j in range(3):
            window = jax.lax.slice(
                padded,
                (0, i, j, 0),
                (
                    padded.shape[0],
                    i + (out_h - 1) * stride + 1,
                    j + (out_w - 1) * stride + 1,
                    padded.shape[3],
                ),
                (1, stride, stride, 1),
            )
            term = window * kernel[i, j, 0]
            out = term if out is None else out + term
    return out


class DepthwiseConv3x3(nn.Module):
    """Depthwise 3×3 conv, no bias, padding 1; parameter `kernel` `[3, 3, 1, C]` as nn.Conv's.

    `impl`: "grouped" (XLA's grouped convolution), "shifted" (see depthwise_conv3x3_shifted) or
    "auto": shifted on CPU, grouped on accelerators.
    """

    stride: int = 1
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        kernel = self.param("kernel", kaiming_fan_out_init, (3, 3, 1, channels))
        impl = self.impl
        if impl == "auto":
            impl = "shifted" if jax.default_backend() == "cpu" else "grouped"
        if impl == "shifted":
            return depthwise_conv3x3_shifted(x, kernel.astype(x.dtype), self.stride)
        if impl != "grouped":
            raise ValueError(f"depthwise impl must be auto, shifted or grouped, got {impl!r}")
        return jax.lax.conv_general_dilated(
            x,
            kernel.astype(x.dtype),
            (self.stride, self.stride),
            ((1, 1), (1, 1)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=channels,
        )


class Pointwise(nn.Module):
    """1×1 convolution without bias as a matrix product over channels (faster than XLA's 1×1
    convolution on CPU, same result); parameter `kernel` `[1, 1, C_in, C_out]` as nn.Conv's."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", kaiming_fan_out_init, (1, 1, x.shape[-1], self.features))
        return jnp.einsum("...c,cd->...d", x, kernel[0, 0].astype(x.dtype))


def batch_norm(train: bool, name: str) -> nn.BatchNorm:
    # PyTorch's BN momentum 0.1 is flax's 0.9; eps 1e-5 as PyTorch.
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class ConvBNReLU6(nn.Module):
    """2D conv (no bias, symmetric padding) + BN + optional ReLU6. `[N, H, W, C]` in and out.

    Depthwise 3×3 and pointwise 1×1 convolutions use the CPU-friendly forms above; the parameter
    names and shapes are nn.Conv's either way."""

    features: int
    kernel: int = 3
    stride: int = 1
    groups: int = 1
    activation: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        pad = self.kernel // 2
        depthwise = self.groups > 1 and self.groups == self.features == x.shape[-1]
        if depthwise and self.kernel == 3:
            x = DepthwiseConv3x3(self.stride, name="conv")(x)
        elif self.kernel == 1 and self.groups == 1 and self.stride == 1:
            x = Pointwise(self.features, name="conv")(x)
        else:
            x = nn.Conv(
                self.features,
                (self.kernel, self.kernel),
                strides=(self.stride, self.stride),
                padding=((pad, pad), (pad, pad)),
                feature_group_count=self.groups,
                use_bias=False,
                kernel_init=kaiming_fan_out_init,
                name="conv",
            )(x)
        x = batch_norm(train, "bn")(x)
        return jax.nn.relu6(x) if self.activation else x


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck block. `[N, H, W, C_in]` -> `[N, H/stride, W/stride, features]`."""

    features: int
    stride: int
    expand_ratio: int

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        in_features = x.shape[-1]
        hidden = in_features * self.expand_ratio
        y = x
        if self.expand_ratio != 1:
            y = ConvBNReLU6(hidden, kernel=1, name="expand")(y, train=train)
        y = ConvBNReLU6(hidden, kernel=3, stride=self.stride, groups=hidden, name="depthwise")(
            y, train=train
        )
        y = ConvBNReLU6(self.features, kernel=1, activation=False, name="project")(y, train=train)
        if self.stride == 1 and in_features == self.features:
            y = x + y
        return y


class MobileNetV2Groups(nn.Module):
    """Bottleneck groups `groups` applied to `[N, H, W, C]`; returns the output of every group
    listed (1-based) in `outputs`."""

    groups: Sequence[tuple[int, int, int, int]]
    outputs: Sequence[int]

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> list[jax.Array]:
        collected = []
        for g, (t, c, n, s) in enumerate(self.groups, start=1):
            for i in range(n):
                x = InvertedResidual(
                    c, stride=s if i == 0 else 1, expand_ratio=t, name=f"group{g}_block{i}"
                )(x, train=train)
            if g in self.outputs:
                collected.append(x)
        return collected


class IFDD2DTrunk(nn.Module):
    """IFDD-2DCNN trunk: Conv3d stem (T/2, H/4, W/4) then MobileNetV2 groups 1-5 per frame.

    (T/2 with the released temporal stride 2; `temporal_stride=1` keeps all T frames.)

    Input clips `[B, T, H, W, 3]`; returns the pyramid levels as a list of per-frame maps
    `[B, T/2, H/4, W/4, 32]`, `[B, T/2, H/8, W/8, 64]`, `[B, T/2, H/16, W/16, 96]`
    (56², 28², 14² at 224 px).
    """

    width_multiplier: float  # α (config.model.width_multiplier): scales the stem and group widths
    temporal_stride: int = 2  # the stem's stride over T (config.model.stem_temporal_stride)
    stem_features: int = 32
    groups: Sequence[tuple[int, int, int, int]] = IFDD_2DCNN_GROUPS
    pyramid_groups: Sequence[int] = IFDD_2DCNN_PYRAMID_GROUPS

    @nn.compact
    def __call__(self, clips: jax.Array, *, train: bool) -> list[jax.Array]:
        if clips.ndim != 5:
            raise ValueError(f"expected clips [B, T, H, W, C], got shape {clips.shape}")
        x = nn.Conv(
            scale_width(self.stem_features, self.width_multiplier),
            (3, 7, 7),
            strides=(self.temporal_stride, 4, 4),
            padding=((1, 1), (3, 3), (3, 3)),
            use_bias=False,
            kernel_init=kaiming_fan_out_init,
            name="stem_conv",
        )(clips)
        x = jax.nn.relu6(batch_norm(train, "stem_bn")(x))
        batch = x.shape[0]
        groups = scale_groups(self.groups, self.width_multiplier)
        levels = MobileNetV2Groups(groups, self.pyramid_groups, name="groups")(
            fold_time(x), train=train
        )
        return [unfold_time(level, batch) for level in levels]


class MobileNetV2FrameTrunk(nn.Module):
    """Torchvision's MobileNetV2 layout per frame: 3×3 stride-2 stem (32 ch) then `groups`.

    Input `[B, T, H, W, 3]`; returns `[[B, T, H/32, W/32, 160]]` for the baseline's groups 1-6
    (a one-element list, the same contract as the IFDD trunks).
    """

    width_multiplier: float  # α (config.model.width_multiplier)
    groups: Sequence[tuple[int, int, int, int]] = BASELINE_GROUPS

    @nn.compact
    def __call__(self, clips: jax.Array, *, train: bool) -> list[jax.Array]:
        if clips.ndim != 5:
            raise ValueError(f"expected clips [B, T, H, W, C], got shape {clips.shape}")
        batch = clips.shape[0]
        x = ConvBNReLU6(scale_width(32, self.width_multiplier), kernel=3, stride=2, name="stem")(
            fold_time(clips), train=train
        )
        groups = scale_groups(self.groups, self.width_multiplier)
        (x,) = MobileNetV2Groups(groups, (len(groups),), name="groups")(x, train=train)
        return [unfold_time(x, batch)]
