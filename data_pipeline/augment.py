"""Clip-consistent augmentation and normalisation (docs/reference-ifdd.md §6), channels-last.

Every random parameter (flip, crop box, colour-jitter factors and their order) is drawn once per
clip from a stateless seed and applied to all T frames, so motion between frames is preserved.
Training: horizontal flip -> random resized crop -> colour jitter -> [0, 1]; evaluation: resize
the short side to the output size and take the centre crop (a plain resize for square faces, as
the authors' Resize(224)). With `data.augment_on_device` the train clips only go through
`stored_clip` here (uint8 at one fixed size), and ifdd_jax/device_augment.py does the rest.

Both flavors resize bilinearly with antialiasing. The released evaluation resizes bicubically
(torchvision's cubic kernel, a = -0.75, which tf.image.resize does not offer), but it only reads
DFEW's 224x224 frames, where every method is the identity, so the reference flavor reproduces it
exactly there; other frame sizes differ from it by interpolation only.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class AugmentOptions:
    image_size: int = 224
    flip_prob: float = 0.5
    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.4
    enabled: bool = True


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


def random_resized_crop(clip: tf.Tensor, opts: AugmentOptions, seed: tf.Tensor) -> tf.Tensor:
    """uint8/float [T, h, w, 3] -> float32 [T, S, S, 3]; one crop box for all frames."""
    shape = tf.shape(clip)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_size=shape[1:],
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=opts.crop_ratio,
        area_range=opts.crop_scale,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = clip[:, begin[0] : begin[0] + size[0], begin[1] : begin[1] + size[1], :]
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
