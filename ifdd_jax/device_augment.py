"""Clip-consistent train augmentation inside the jitted train step
(`config.data.augment_on_device`).

The host pipeline then only reads and decodes: it yields uint8 clips [B, T, S0, S0, 3] at the
stored size S0 (`config.data.stored_size`) and integer labels; this module does, per example and
with one draw for all T frames of a clip, what data_pipeline/augment.py and mixing.py do on the CPU:
horizontal flip -> random resized crop to S × S (bilinear, antialiased) -> colour jitter (random
order) -> [0, 1] -> normalisation, then mixup/cutmix and label smoothing over the batch.

Same distributions as the TF path, written for the accelerator:
* the crop box comes from one of two samplers (`config.data.augment.crop_sampler`), each drawing
  CROP_ATTEMPTS candidates at once and keeping the first that fits:
  - "torchvision" (the reference flavor; the released code's RandomResizedCrop.get_params): area
    = H·W·U(scale), aspect w/h = exp(U(log ratio)), w and h rounded half to even, accepted when
    1 <= w <= W and 1 <= h <= H, top-left uniform over every position that keeps the box inside;
    with no candidate accepted, the central box of the frame's own aspect clamped to the ratio
    range;
  - "tf" (the paper flavor): tf.image.sample_distorted_bounding_box as the pipeline calls it:
    aspect ratio w/h ~ U(ratio) (uniform, not log-uniform), crop height uniform over the integers
    that keep the area in scale·H·W (so the area is not uniform), offsets uniform over [0, H - h),
    and the whole frame when no attempt fits;
* crop + resize is one weight matrix per axis (the triangle kernel widened by the downscale
  factor, over the crop's pixels only, normalised), i.e. tf.image.resize(bilinear, antialias) of
  the cropped frames, applied as two matmuls; the flip is the width matrix reversed;
* colour jitter and the hue rotation follow augment.apply_jitter / tf.image.adjust_hue.

Randomness: `step_key(run key, step)`; example i of the global batch uses split(key, B)[i], so
the draws do not depend on how the batch is sharded over devices, and a resumed run repeats them
(the run key and the step are in the checkpoint).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections

from ifdd_jax.device_mixing import MixOptions, mix_batch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GREY_WEIGHTS = (0.299, 0.587, 0.114)
# Folded into the step's key so the augmentation stream is not the dropout stream.
AUGMENT_STREAM = 0x61756780
# Candidate boxes per crop: torchvision's loop count and the TF pipeline's max_attempts alike.
CROP_ATTEMPTS = 10
CROP_SAMPLERS = ("torchvision", "tf")


@dataclasses.dataclass(frozen=True)
class DeviceAugmentOptions:
    """Static settings (hashable, so a jitted step can close over them)."""

    image_size: int = 224
    flip_prob: float = 0.5
    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    crop_sampler: str = "torchvision"  # one of CROP_SAMPLERS; see the module doc
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.4
    enabled: bool = True  # False: no flip, crop or jitter, only the resize (as eval_transform)
    normalization: str = "unit"
    num_classes: int = 7
    mix: MixOptions = MixOptions()

    def __post_init__(self) -> None:
        if self.crop_sampler not in CROP_SAMPLERS:
            raise ValueError(
                f"crop_sampler must be one of {CROP_SAMPLERS}, got {self.crop_sampler!r}"
            )

    @property
    def jitter_strengths(self) -> tuple[float, float, float, float]:
        return (self.brightness, self.contrast, self.saturation, self.hue)


def options_from_config(config: ml_collections.ConfigDict) -> DeviceAugmentOptions:
    """The options of a run's config (its flavor's augmentation already resolved)."""
    d = config.data
    a, m = d.augment, d.mix
    flavored = ("brightness", "contrast", "saturation", "hue", "crop_sampler")
    unset = [k for k in flavored if a[k] is None]
    if unset or m.enabled is None or m.label_smoothing is None:
        raise ValueError(
            "the flavor's augmentation is unresolved: call ifdd_jax.recipe.resolve(config) first"
        )
    return DeviceAugmentOptions(
        image_size=int(d.image_size),
        flip_prob=float(a.flip_prob),
        crop_scale=(float(a.crop_scale_min), float(a.crop_scale_max)),
        crop_ratio=(float(a.crop_ratio_min), float(a.crop_ratio_max)),
        crop_sampler=str(a.crop_sampler),
        brightness=float(a.brightness),
        contrast=float(a.contrast),
        saturation=float(a.saturation),
        hue=float(a.hue),
        enabled=bool(a.enabled),
        normalization=str(d.normalization),
        num_classes=int(config.num_classes),
        mix=MixOptions(
            enabled=bool(m.enabled),
            mixup_alpha=float(m.mixup_alpha),
            cutmix_alpha=float(m.cutmix_alpha),
            mix_prob=float(m.prob),
            switch_prob=float(m.switch_prob),
            label_smoothing=float(m.label_smoothing),
        ),
    )


def step_key(run_key: jax.Array, step: jax.Array) -> jax.Array:
    """The augmentation key of one train step (typed key in, typed key out)."""
    return jax.random.fold_in(jax.random.fold_in(run_key, step), AUGMENT_STREAM)


# --- the crop box --------------------------------------------------------------------------------


def _tf_crop_attempts(key: jax.Array, height: int, width: int, scale, ratio) -> tuple:
    """CROP_ATTEMPTS candidate boxes of the "tf" sampler, each (top, left, h, w) int32 [A], and
    whether it fits [A]."""
    k_ratio, k_h, k_y, k_x = jax.random.split(key, 4)
    a = CROP_ATTEMPTS
    ar = jax.random.uniform(k_ratio, (a,), minval=ratio[0], maxval=ratio[1])
    # float32 as TF computes them: areas in pixels, heights rounded half to even (lrintf).
    min_area = jnp.float32(scale[0]) * width * height
    max_area = jnp.float32(scale[1]) * width * height
    lo = jnp.round(jnp.sqrt(min_area / ar)).astype(jnp.int32)
    hi = jnp.round(jnp.sqrt(max_area / ar)).astype(jnp.int32)
    # The tallest height whose rounded width still fits the frame.
    too_wide = jnp.round(hi * ar) > width
    fit = jnp.floor((width + 0.5) / ar).astype(jnp.int32)
    fit = jnp.where(jnp.round(fit * ar) > width, fit - 1, fit)
    hi = jnp.minimum(jnp.where(too_wide, fit, hi), height)
    lo = jnp.minimum(lo, hi)
    h = lo + jax.random.randint(k_h, (a,), 0, jnp.maximum(hi - lo + 1, 1))

    def width_of(h):
        return jnp.round(h * ar).astype(jnp.int32)

    w = width_of(h)
    # One step up, then one step down, to absorb rounding (as TF does).
    h = jnp.where(w * h < min_area, h + 1, h)
    w = width_of(h)
    h = jnp.where(w * h > max_area, h - 1, h)
    w = width_of(h)
    area = w * h
    ok = (area >= min_area) & (area <= max_area) & (w <= width) & (h <= height)
    ok = ok & (w > 0) & (h > 0)
    # Offsets uniform over [0, H - h) (the last row/column is never a start unless h == H).
    top = jax.random.randint(k_y, (a,), 0, jnp.maximum(height - h, 1))
    left = jax.random.randint(k_x, (a,), 0, jnp.maximum(width - w, 1))
    top = jnp.where(h < height, top, 0)
    left = jnp.where(w < width, left, 0)
    return (top, left, h, w), ok


def torchvision_fallback_box(
    height: int, width: int, ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """The "torchvision" sampler's box when no candidate fits: (top, left, h, w) of the central
    box whose aspect is the frame's own clamped to the ratio range (the whole frame if inside)."""
    lo, hi = min(ratio), max(ratio)
    h, w = height, width
    if width / height < lo:  # too tall: full width, the tallest box the range allows
        h = round(width / lo)
    elif width / height > hi:  # too wide: full height, the widest box the range allows
        w = round(height * hi)
    return (height - h) // 2, (width - w) // 2, h, w


def _index_below(u: jax.Array, counts: jax.Array) -> jax.Array:
    """int32, elementwise uniform over 0 .. counts - 1, from uniforms u in [0, 1) (counts >= 1);
    the clamp catches u · counts rounding up to counts in float32."""
    k = jnp.floor(u * counts.astype(jnp.float32)).astype(jnp.int32)
    return jnp.minimum(k, counts - 1)


def torchvision_box_from_uniforms(
    u: jax.Array,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> jax.Array:
    """The "torchvision" sampler's box of an H × W frame from its uniforms.

    Args:
      u: float32 [..., 4, A] in [0, 1): per candidate (A = CROP_ATTEMPTS), the draws of its area
        fraction, log aspect, top and left.
    Returns:
      int32 [..., 4] = (top, left, h, w): the first candidate that fits, else the fallback.

    The candidates are independent, so keeping the first that fits among all of them has the
    distribution of torchvision's loop, which stops at the first fit.
    """
    fraction = scale[0] + (scale[1] - scale[0]) * u[..., 0, :]
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = jnp.exp(log_lo + (log_hi - log_lo) * u[..., 1, :])
    area = height * width * fraction
    # jnp.round is half to even, as Python's round() in torchvision.
    w = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
    h = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    # Every start that keeps the box inside, the last one included (H - h + 1 choices); rejected
    # candidates get a harmless range of one.
    top = _index_below(u[..., 2, :], jnp.maximum(height - h + 1, 1))
    left = _index_below(u[..., 3, :], jnp.maximum(width - w + 1, 1))
    boxes = jnp.stack([top, left, h, w], axis=-1)  # [..., A, 4]
    first = jnp.argmax(ok, axis=-1)  # the first True (argmax returns the first maximum)
    chosen = jnp.take_along_axis(boxes, first[..., None, None], axis=-2)[..., 0, :]
    fallback = jnp.array(torchvision_fallback_box(height, width, ratio), jnp.int32)
    return jnp.where(jnp.any(ok, axis=-1)[..., None], chosen, fallback)


def sample_crop_box(
    key: jax.Array,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    sampler: str,
) -> jax.Array:
    """One random resized crop box of an H × W frame: int32 [4] = (top, left, h, w).

    The first of CROP_ATTEMPTS candidates of `sampler` that fits, else its fallback (see the
    module doc). H and W are static, so the fallback box is a constant.
    """
    if sampler == "torchvision":
        # One draw for everything: uniforms scaled by hand compile far lighter than randint.
        u = jax.random.uniform(key, (4, CROP_ATTEMPTS))
        return torchvision_box_from_uniforms(u, height, width, scale, ratio)
    if sampler != "tf":
        raise ValueError(f"crop sampler must be one of {CROP_SAMPLERS}, got {sampler!r}")
    (top, left, h, w), ok = _tf_crop_attempts(key, height, width, scale, ratio)
    first = jnp.argmax(ok)  # the first True (argmax returns the first maximum)
    box = jnp.stack([top[first], left[first], h[first], w[first]])
    return jnp.where(jnp.any(ok), box, jnp.array([0, 0, height, width], jnp.int32))


# --- crop, flip and resize as two matmuls --------------------------------------------------------


def resize_weights(start: jax.Array, length: jax.Array, in_size: int, out_size: int) -> jax.Array:
    """Bilinear (antialiased) resampling of pixels [start, start + length) to out_size pixels.

    Returns float32 [out_size, in_size]: row o holds the weights of the input pixels for output
    pixel o; zero outside the crop, each row summing to 1. Downscaling widens the triangle kernel
    by length/out_size (antialiasing), as tf.image.resize(antialias=True) does.
    """
    length_f = length.astype(jnp.float32)
    inv_scale = length_f / out_size
    kernel_scale = jnp.maximum(inv_scale, 1.0)
    centres = (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * inv_scale  # crop coordinates
    pixels = jnp.arange(in_size)
    offsets = (pixels - start).astype(jnp.float32) + 0.5
    inside = (pixels >= start) & (pixels < start + length)
    dist = jnp.abs(offsets[None, :] - centres[:, None]) / kernel_scale
    weights = jnp.where(inside[None, :], jnp.maximum(0.0, 1.0 - dist), 0.0)
    total = jnp.sum(weights, axis=1, keepdims=True)
    # Rows with (numerically) no support stay zero, as in TF's scale_and_translate.
    return jnp.where(total > 1000 * jnp.finfo(jnp.float32).eps, weights / total, 0.0)


def crop_flip_resize(clip: jax.Array, box: jax.Array, flip: jax.Array, out_size: int) -> jax.Array:
    """uint8 [T, H0, W0, C] -> float32 [T, S, S, C] in [0, 255]: the box of every frame, flipped
    left-right when `flip`, resized to S × S.

    Flipping then cropping at `left` (the TF order) equals cropping the mirrored box and
    mirroring: the width weights reversed along the input axis.
    """
    _, h0, w0, _ = clip.shape
    rows = resize_weights(box[0], box[2], h0, out_size)
    cols = resize_weights(box[1], box[3], w0, out_size)
    cols = jnp.where(flip, cols[:, ::-1], cols)
    x = clip.astype(jnp.float32)
    hi = jax.lax.Precision.HIGHEST  # uint8 levels must survive TPU/GPU matmul precision
    x = jnp.einsum("oh,thwc->towc", rows, x, precision=hi)
    return jnp.einsum("pw,towc->topc", cols, x, precision=hi)


# --- colour ------------------------------------------------------------------------------------


def grayscale(x: jax.Array) -> jax.Array:
    """[..., 3] -> [..., 1]: ITU-R 601 luma, as augment._grayscale."""
    return jnp.sum(x * jnp.asarray(GREY_WEIGHTS, x.dtype), -1, keepdims=True)


def adjust_hue(x: jax.Array, delta: jax.Array) -> jax.Array:
    """float [..., 3] RGB -> same with the hue rotated by `delta` (a fraction of the circle), value
    and saturation kept: tf.image.adjust_hue's HSV rotation."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    v_max = jnp.maximum(jnp.maximum(r, g), b)
    v_min = jnp.minimum(jnp.minimum(r, g), b)
    chroma = v_max - v_min
    safe = jnp.where(chroma > 0, chroma, 1.0)
    # Hue in sextants [0, 6), from whichever channel is the largest.
    sextant = jnp.where(
        r == v_max,
        jnp.mod((g - b) / safe, 6.0),
        jnp.where(g == v_max, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    sextant = jnp.where(chroma > 0, sextant, 0.0)
    sextant = jnp.mod(sextant + 6.0 * delta, 6.0)
    # Back to RGB: channel n (5: red, 3: green, 1: blue) falls from v_max by the chroma along the
    # hue circle.
    out = []
    for n in (5.0, 3.0, 1.0):
        k = jnp.mod(n + sextant, 6.0)
        out.append(v_max - chroma * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0))
    return jnp.stack(out, -1)


def _blend_op(clip: jax.Array, op: jax.Array, factors: jax.Array) -> jax.Array:
    """Brightness (op 0), contrast (1) or saturation (2) of a [T, H, W, 3] clip in [0, 1]: one
    blend f·x + (1-f)·ref with ref 0, the frame's mean grey, or the pixel's grey."""
    grey = grayscale(clip)
    frame_mean = jnp.mean(grey, axis=(1, 2, 3), keepdims=True)
    ref = jnp.where(op == 0, 0.0, jnp.where(op == 1, frame_mean, grey))
    f = factors[jnp.minimum(op, 2)]
    return jnp.clip(f * clip + (1.0 - f) * ref, 0.0, 1.0)


def apply_jitter(
    clip: jax.Array, factors: jax.Array, order: jax.Array, strengths: tuple[float, ...]
) -> jax.Array:
    """float32 [T, H, W, 3] in [0, 1] -> same: brightness, contrast, saturation and hue with
    `factors` (float32 [4]), operation `order[p]` at position p (int [4]); operations whose
    static strength is 0 are skipped. augment.apply_jitter's semantics.
    """
    if not any(s > 0 for s in strengths):
        return clip
    active = jnp.asarray([s > 0 for s in strengths])

    def blends(x: jax.Array, positions: jax.Array) -> jax.Array:
        # The (cheap) blends at the positions where `positions` is True, in order.
        for pos in range(4):
            op = order[pos]
            run = positions[pos] & active[op] & (op != 3)
            x = jnp.where(run, _blend_op(x, op, factors), x)
        return x

    if strengths[3] <= 0:
        return blends(clip, jnp.ones(4, bool))
    # The hue rotation is the costly one, and it runs exactly once: the blends before it, the
    # rotation, the blends after it (a per-position select would trace it four times).
    hue_at = jnp.argmax(order == 3)
    before = blends(clip, jnp.arange(4) < hue_at)
    rotated = jnp.clip(adjust_hue(before, factors[3]), 0.0, 1.0)
    return blends(rotated, jnp.arange(4) > hue_at)


def jitter_factors(key: jax.Array, strengths: tuple[float, ...]) -> tuple[jax.Array, jax.Array]:
    """One clip's draw: (factors float32 [4]: brightness, contrast, saturation ~ U[max(0, 1-s),
    1+s], hue shift ~ U[-h, h]; order int32 [4], a uniform permutation)."""
    k_f, k_h, k_o = jax.random.split(key, 3)
    s = jnp.asarray(strengths[:3], jnp.float32)
    factors = jax.random.uniform(k_f, (3,), minval=jnp.maximum(0.0, 1.0 - s), maxval=1.0 + s)
    hue = jax.random.uniform(k_h, (), minval=-strengths[3], maxval=strengths[3])
    return jnp.append(factors, hue), jax.random.permutation(k_o, 4).astype(jnp.int32)


# --- one clip, one batch -----------------------------------------------------------------------


def normalize(clip: jax.Array, mode: str) -> jax.Array:
    """[..., 3] in [0, 1] -> "unit": unchanged; "imagenet": (x - mean) / std."""
    if mode == "unit":
        return clip
    if mode == "imagenet":
        return (clip - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
    raise ValueError(f"normalization must be 'unit' or 'imagenet', got {mode!r}")


def augment_clip(key: jax.Array, clip: jax.Array, opts: DeviceAugmentOptions) -> jax.Array:
    """uint8 [T, H0, W0, 3] -> float32 [T, S, S, 3], normalised; one draw for every frame."""
    _, h0, w0, _ = clip.shape
    k_flip, k_crop, k_jitter = jax.random.split(key, 3)
    if opts.enabled:
        flip = jax.random.uniform(k_flip) < opts.flip_prob
        box = sample_crop_box(k_crop, h0, w0, opts.crop_scale, opts.crop_ratio, opts.crop_sampler)
    else:  # unaugmented: the whole frame, resized
        flip, box = jnp.asarray(False), jnp.array([0, 0, h0, w0], jnp.int32)
    x = jnp.clip(crop_flip_resize(clip, box, flip, opts.image_size) / 255.0, 0.0, 1.0)
    if opts.enabled:
        factors, order = jitter_factors(k_jitter, opts.jitter_strengths)
        x = apply_jitter(x, factors, order, opts.jitter_strengths)
    return normalize(x, opts.normalization)


def augment_batch(
    key: jax.Array, clips: jax.Array, labels: jax.Array, opts: DeviceAugmentOptions
) -> tuple[jax.Array, jax.Array]:
    """The train batch the model sees, from the host's decoded batch.

    Args:
      key: the step's key (`step_key`).
      clips: uint8 [B, T, H0, W0, 3], the stored clips (possibly sharded over the batch axis).
      labels: int [B].
    Returns:
      (clips float32 [B, T, S, S, 3], target float32 [B, K]).
    """
    k_clips, k_mix = jax.random.split(key)
    keys = jax.random.split(k_clips, clips.shape[0])
    out = jax.vmap(lambda k, c: augment_clip(k, c, opts))(keys, clips)
    # Mixing reads every clip twice (itself and as a partner): without the barrier XLA may fuse
    # the whole augmentation into both reads and compute it twice.
    out = jax.lax.optimization_barrier(out)
    out, target, _ = mix_batch(k_mix, out, labels, opts.num_classes, opts.mix)
    return out, target
