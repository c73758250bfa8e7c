"""Clip-consistent augmentation and normalisation (docs/reference-ifdd.md §6), channels-last.

Every random parameter (flip, crop box, colour-jitter factors and their order) is drawn once per
clip from a stateless seed and applied to all T frames, so motion between frames is preserved.
Training: horizontal flip -> random resized crop -> colour jitter -> [0, 1]; evaluation: resize
the short side to the output size and take the centre crop (a plain resize for square faces, as
the authors' Resize(224)). With `data.augment_on_device` the train clips only go through
`stored_clip` here (uint8 at one fixed size), and ifdd_jax/device_augment.py does the rest.

The crop box comes from one of two samplers (`AugmentOptions.crop_sampler`, set per flavor by
`config.data.augment.crop_sampler`): "torchvision", the distribution of torchvision's
RandomResizedCrop.get_params that the released code uses (area uniform in scale, aspect
log-uniform in ratio, every fitting position equally likely, a central box clamped to the ratio
range when none of the 10 attempts fits), or "tf", tf.image.sample_distorted_bounding_box (aspect
uniform, height uniform, the whole frame as the fallback). Both draw their 10 attempts at once.

Both flavors resize bilinearly with antialiasing. The released evaluation resizes bicubically
(torchvision's cubic kernel, a = -0.75, which tf.image.resize does not offer), but it only reads
DFEW's 224x224 frames, where every method is the identity, so the reference flavor reproduces it
exactly there; other frame sizes differ from it by interpolation only.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Candidate crop boxes per clip: torchvision's loop count, and max_attempts of the "tf" sampler.
CROP_ATTEMPTS = 10
CROP_SAMPLERS = ("torchvision", "tf")


@dataclasses.dataclass(frozen=True)
class AugmentOptions:
    image_size: int = 224
    flip_prob: float = 0.5
    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    crop_sampler: str = "torchvision"  # one of CROP_SAMPLERS (see the module doc)
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.4
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.crop_sampler not in CROP_SAMPLERS:
            raise ValueError(
                f"crop_sampler must be one of {CROP_SAMPLERS}, got {self.crop_sampler!r}"
            )


def _grayscale(x: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(x * tf.constant([0.299, 0.587, 0.114], x.dtype), -1, keepdims=True)


def _blend(a: tf.Tensor, b: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    return tf.clip_by_value(factor * a + (1.0 - factor) * b, 0.0, 1.0)


def jitter_factors(opts: AugmentOptions, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """One clip's colour-jitter draw: (factors float32 [4] = brightness, contrast, saturation,
    hue shift; order int32 [4], the position of each operation is its rank)."""
    seeds = tf.random.experimental.stateless_split(seed, 5)

    def factor(s: float, k: int) -> tf.Tensor:
        return tf.random.stateless_uniform([], seeds[k], max(0.0, 1.0 - s), 1.0 + s)

    b, c, s = factor(opts.brightness, 0), factor(opts.contrast, 1), factor(opts.saturation, 2)
    h = tf.random.stateless_uniform([], seeds[3], -opts.hue, opts.hue)
    order = tf.argsort(tf.random.stateless_uniform([4], seeds[4]))
    return tf.stack([b, c, s, h]), order


def apply_jitter(
    clip: tf.Tensor, factors: tf.Tensor, order: tf.Tensor, opts: AugmentOptions
) -> tf.Tensor:
    """float32 [T, H, W, 3] in [0, 1] -> same: the four operations with the given factors, in the
    given order (`order[p]` runs at position p); operations of strength 0 in `opts` are skipped."""
    b, c, s, h = factors[0], factors[1], factors[2], factors[3]
    ops = [
        lambda x: tf.clip_by_value(x * b, 0.0, 1.0),
        # Contrast blends with the mean grey level of each frame (torchvision's per-image mean).
        lambda x: _blend(x, tf.reduce_mean(_grayscale(x), axis=(1, 2, 3), keepdims=True), c),
        lambda x: _blend(x, _grayscale(x), s),
        lambda x: tf.clip_by_value(tf.image.adjust_hue(x, h), 0.0, 1.0),
    ]
    active = [
        i
        for i, v in enumerate((opts.brightness, opts.contrast, opts.saturation, opts.hue))
        if v > 0
    ]
    if not active:
        return clip
    for pos in range(4):
        current = clip
        branches = [(lambda i=i, x=current: ops[i](x) if i in active else x) for i in range(4)]
        clip = tf.switch_case(order[pos], branches)
    return clip


def colour_jitter(clip: tf.Tensor, opts: AugmentOptions, seed: tf.Tensor) -> tf.Tensor:
    """float32 [T, H, W, 3] in [0, 1] -> same; torchvision ColorJitter semantics, one draw per clip.

    Brightness/contrast/saturation factors ~ U[max(0, 1 - s), 1 + s], hue shift ~ U[-h, h] (fraction
    of the hue circle); the four operations run in a random order, as in torchvision.
    """
    factors, order = jitter_factors(opts, seed)
    return apply_jitter(clip, factors, order, opts)


def _index_below(u: tf.Tensor, counts: tf.Tensor) -> tf.Tensor:
    """int32, elementwise uniform over 0 .. counts - 1, from float64 uniforms u in [0, 1)
    (counts int32 >= 1). Integer stateless draws take scalar bounds only, hence the scaling."""
    k = tf.cast(tf.floor(u * tf.cast(counts, tf.float64)), tf.int32)
    return tf.minimum(k, counts - 1)


def _torchvision_fallback(
    height: tf.Tensor, width: tf.Tensor, ratio: tuple[float, float]
) -> tf.Tensor:
    """int32 [4] (top, left, h, w): the central box whose aspect is the frame's own clamped to
    the ratio range (the whole frame when it is inside), the "torchvision" sampler's fallback."""
    lo, hi = min(ratio), max(ratio)
    hf, wf = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    # float64 and round half to even, so that the box is Python's round() of the same numbers.
    h = tf.where(wf / hf < lo, tf.cast(tf.round(wf / lo), tf.int32), height)
    w = tf.where(wf / hf > hi, tf.cast(tf.round(hf * hi), tf.int32), width)
    return tf.stack([(height - h) // 2, (width - w) // 2, h, w])


def torchvision_box_from_uniforms(
    u: tf.Tensor,
    height: tf.Tensor,
    width: tf.Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> tf.Tensor:
    """The "torchvision" sampler's box of an H x W frame (int32 scalars) from its uniforms.

    Args:
      u: float64 [..., 4, A] in [0, 1): per candidate (A = CROP_ATTEMPTS), the draws of its area
        fraction, log aspect, top and left.
    Returns:
      int32 [..., 4] = (top, left, h, w): the first candidate that fits, else the fallback.

    The candidates are independent, so keeping the first that fits among all of them has the
    distribution of torchvision's loop, which stops at the first fit.
    """
    hf, wf = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    fraction = scale[0] + (scale[1] - scale[0]) * u[..., 0, :]
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = tf.exp(log_lo + (log_hi - log_lo) * u[..., 1, :])
    area = hf * wf * fraction
    w = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)  # half to even, as Python's round
    h = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    # Every start that keeps the box inside, the last included; rejected candidates get one.
    top = _index_below(u[..., 2, :], tf.maximum(height - h + 1, 1))
    left = _index_below(u[..., 3, :], tf.maximum(width - w + 1, 1))
    boxes = tf.stack([top, left, h, w], axis=-1)  # [..., A, 4]
    # The first accepted candidate (tf.argmax does not promise the first of ties), A if none.
    n = u.shape[-1]
    first = tf.reduce_min(tf.where(ok, tf.range(n), n), axis=-1)
    pick = tf.cast(tf.equal(tf.range(n), first[..., None]), tf.int32)  # [..., A], one-hot
    chosen = tf.reduce_sum(boxes * pick[..., None], axis=-2)
    fallback = _torchvision_fallback(height, width, ratio)
    return tf.where((first < n)[..., None], chosen, fallback)


def torchvision_crop_box(
    height: tf.Tensor,
    width: tf.Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    seed: tf.Tensor,
) -> tf.Tensor:
    """int32 [4] (top, left, h, w) of an H x W frame (int32 scalars), drawn as torchvision's
    RandomResizedCrop.get_params draws it (see the module doc); `seed` int32 [2]."""
    u = tf.random.stateless_uniform([4, CROP_ATTEMPTS], seed, dtype=tf.float64)
    return torchvision_box_from_uniforms(u, height, width, scale, ratio)


def crop_box(frame_shape: tf.Tensor, opts: AugmentOptions, seed: tf.Tensor) -> tf.Tensor:
    """int32 [4] (top, left, h, w) of one random resized crop of frames of shape int32 [3] =
    (H, W, C), from `opts.crop_sampler`; `seed` int32 [2]."""
    if opts.crop_sampler == "torchvision":
        height, width = frame_shape[0], frame_shape[1]
        return torchvision_crop_box(height, width, opts.crop_scale, opts.crop_ratio, seed)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_size=frame_shape,
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=opts.crop_ratio,
        area_range=opts.crop_scale,
        max_attempts=CROP_ATTEMPTS,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def random_resized_crop(clip: tf.Tensor, opts: AugmentOptions, seed: tf.Tensor) -> tf.Tensor:
    """uint8/float [T, h, w, 3] -> float32 [T, S, S, 3]; one crop box for all frames."""
    top, left, h, w = tf.unstack(crop_box(tf.shape(clip)[1:], opts, seed))
    crop = clip[:, top : top + h, left : left + w, :]
    return tf.image.resize(
        crop, [opts.image_size, opts.image_size], method="bilinear", antialias=True
    )


def train_augment(frames: tf.Tensor, opts: AugmentOptions, seed: tf.Tensor) -> tf.Tensor:
    """uint8 [T, h, w, 3] -> float32 [T, S, S, 3] in [0, 1]; one random draw for all frames."""
    if not opts.enabled:
        return eval_transform(frames, opts.image_size)
    seeds = tf.random.experimental.stateless_split(seed, 3)
    flip = tf.random.stateless_uniform([], seeds[0]) < opts.flip_prob
    frames = tf.cond(flip, lambda: tf.reverse(frames, axis=[2]), lambda: frames)
    clip = random_resized_crop(frames, opts, seeds[1]) / 255.0
    clip = tf.clip_by_value(clip, 0.0, 1.0)
    return colour_jitter(clip, opts, seeds[2])


def _short_side_centre_crop(frames: tf.Tensor, image_size: int) -> tf.Tensor:
    """uint8 [..., T, h, w, 3] -> float32 [..., T, S, S, 3] in [0, 255]: short side S (bilinear,
    antialiased), centre crop."""
    shape = tf.shape(frames)
    h, w = tf.cast(shape[-3], tf.float32), tf.cast(shape[-2], tf.float32)
    scale = image_size / tf.minimum(h, w)
    nh = tf.maximum(image_size, tf.cast(tf.round(h * scale), tf.int32))
    nw = tf.maximum(image_size, tf.cast(tf.round(w * scale), tf.int32))
    flat = tf.reshape(frames, tf.concat([[-1], shape[-3:]], 0))
    resized = tf.image.resize(flat, [nh, nw], method="bilinear", antialias=True)
    top, left = (nh - image_size) // 2, (nw - image_size) // 2
    crop = resized[:, top : top + image_size, left : left + image_size, :]
    out_shape = tf.concat([shape[:-3], [image_size, image_size, 3]], 0)
    return tf.reshape(crop, out_shape)


def eval_transform(frames: tf.Tensor, image_size: int) -> tf.Tensor:
    """uint8 [..., T, h, w, 3] -> float32 [..., T, S, S, 3] in [0, 1]: short side S, centre crop."""
    return tf.clip_by_value(_short_side_centre_crop(frames, image_size) / 255.0, 0.0, 1.0)


def stored_clip(frames: tf.Tensor, stored_size: int) -> tf.Tensor:
    """uint8 [T, h, w, 3] -> uint8 [T, S0, S0, 3], the fixed size the on-device augmentation
    reads (config.data.stored_size).

    Frames already S0 x S0 pass through untouched (DFEW's, FERV39k's and MAFW's 224 x 224 faces
    at the default S0 = image_size = 224); others are resized once, as evaluation does (short
    side S0, centre crop), so that training crops come from the square evaluation sees.
    """
    shape = tf.shape(frames)
    same = tf.logical_and(tf.equal(shape[1], stored_size), tf.equal(shape[2], stored_size))

    def resize() -> tf.Tensor:
        resized = tf.round(_short_side_centre_crop(frames, stored_size))
        return tf.cast(tf.clip_by_value(resized, 0.0, 255.0), tf.uint8)

    clip = tf.cond(same, lambda: frames, resize)
    return tf.ensure_shape(clip, [None, stored_size, stored_size, 3])


def normalize(clip: tf.Tensor, mode: str) -> tf.Tensor:
    """[..., 3] in [0, 1] -> "unit": unchanged (the authors' input);
    "imagenet": (x - mean) / std."""
    if mode == "unit":
        return clip
    if mode == "imagenet":
        return (clip - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)
    raise ValueError(f"normalization must be 'unit' or 'imagenet', got {mode!r}")
