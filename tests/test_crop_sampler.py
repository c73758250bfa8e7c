"""The "torchvision" crop sampler (config.data.augment.crop_sampler, the reference flavor's) on the
host (data_pipeline/augment.py) and on the device (ifdd_jax/device_augment.py) against
RandomResizedCrop.get_params, both as a plain numpy transcription written here and, with the torch
extra, torchvision's own: two-sample KS tests on the box's area fraction, aspect ratio and
normalised top-left position; the old "tf" sampler must fail the same tests (the tests' power);
the fallback box exactly; the sampler reaching the augmented clip; the "tf" sampler unchanged;
the flavor defaults and overrides."""

import functools
import math

import jax
import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import augment
from data_pipeline.configs import get_data_config, resolve_flavor_defaults
from data_pipeline.pipeline import _augment_options
from ifdd_jax import device_augment as da
from ifdd_jax import recipe
from ifdd_jax.config_lib import load_config_file

NUM_BOXES = 3000
# KS critical value of two samples of NUM_BOXES at significance 0.001 (c(α) √(2/n)); the draws
# are seeded, so a pass or a failure is reproducible.
KS_CRITICAL = math.sqrt(-0.5 * math.log(0.001 / 2)) * math.sqrt(2 / NUM_BOXES)

RECIPE = (224, 224, (0.5, 1.0), (3 / 4, 4 / 3))  # the released crop at DFEW's size
# A wide frame (W/H = 2) and a lopsided ratio range: most candidates are rejected, 14% of the
# draws end in the clamped fallback box (0, 5, 20, 30), and swapping w and h shows.
LOPSIDED = (20, 40, (0.4, 1.0), (0.5, 1.5))
CASES = {"recipe": RECIPE, "lopsided": LOPSIDED}
# Frames where no candidate can fit (one side of any box in the range exceeds the short side):
# every draw is the fallback, (top, left, h, w).
FALLBACKS = {
    "wide": ((16, 48, (0.5, 1.0), (3 / 4, 4 / 3)), (0, 13, 16, 21)),  # w = round(16 · 4/3)
    "tall": ((50, 12, (0.5, 1.0), (3 / 4, 4 / 3)), (17, 0, 16, 12)),  # h = round(12 / (3/4))
}
# Full-path draws (seed or key -> crop_box / sample_crop_box), per side: (case, sampler) -> (frame
# and ranges, number of boxes). The KS draws of the "torchvision" sampler go through the same
# uniforms-to-box function in one batch instead (see host_draws).
FULL_PATH = {(name, "torchvision"): (case, 32) for name, (case, _) in FALLBACKS.items()}


# --- the samplers under test and the references -------------------------------------------------


def formula_box(rng: np.random.Generator, height: int, width: int, scale, ratio) -> tuple:
    """RandomResizedCrop.get_params transcribed: (top, left, h, w) of one draw."""
    for _ in range(10):
        area = height * width * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = round(math.sqrt(area * aspect))
        h = round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.integers(0, height - h + 1), rng.integers(0, width - w + 1), h, w
    # No attempt fitted: the central box of the frame's aspect, clamped to the ratio range.
    w, h = width, height
    if width / height < min(ratio):
        h = round(width / min(ratio))
    elif width / height > max(ratio):
        w = round(height * max(ratio))
    return (height - h) // 2, (width - w) // 2, h, w


def _formula_boxes(height: int, width: int, scale, ratio, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([formula_box(rng, height, width, scale, ratio) for _ in range(NUM_BOXES)])


def _torchvision_boxes(height: int, width: int, scale, ratio, seed: int) -> np.ndarray:
    torch = pytest.importorskip("torch")
    transforms = pytest.importorskip("torchvision.transforms")
    torch.manual_seed(seed)
    image = torch.empty(1, height, width)
    get = transforms.RandomResizedCrop.get_params
    return np.array([get(image, list(scale), list(ratio)) for _ in range(NUM_BOXES)])


@functools.cache
def host_draws() -> dict[tuple[str, str], np.ndarray]:
    """(case, sampler) -> int [N, 4] (top, left, h, w) on the host, in tf.functions with the frame
    size a tensor (traced for any size, as in the pipeline).

    The KS cases feed NUM_BOXES clips' uniforms (stateless_uniform [N, 4, A], each clip's share
    distributed as crop_box's own [4, A] draw) to torchvision_box_from_uniforms at once; a
    per-seed loop over thousands of clips would dominate the test's time. FULL_PATH runs
    crop_box itself, one stateless seed per box.
    """

    @tf.function
    def batch(height: tf.Tensor, width: tf.Tensor, scale, ratio) -> tf.Tensor:
        shape = [NUM_BOXES, 4, augment.CROP_ATTEMPTS]
        u = tf.random.stateless_uniform(shape, [11, 0], dtype=tf.float64)
        return augment.torchvision_box_from_uniforms(u, height, width, scale, ratio)

    @tf.function
    def full(frame_shape: tf.Tensor, seeds: tf.Tensor, opts: augment.AugmentOptions) -> tf.Tensor:
        def one(s: tf.Tensor) -> tf.Tensor:
            return augment.crop_box(frame_shape, opts, s)

        return tf.map_fn(one, seeds, fn_output_signature=tf.int32, parallel_iterations=64)

    out = {}
    for name, (height, width, scale, ratio) in CASES.items():
        out[name, "torchvision"] = batch(tf.constant(height), tf.constant(width), scale, ratio)
    # The old sampler too, for the power check (its device copy is checked against the TF op in
    # tests/test_device_augment.py).
    for (name, sampler), ((height, width, scale, ratio), n) in [
        *FULL_PATH.items(),
        (("recipe", "tf"), (RECIPE, NUM_BOXES)),
    ]:
        opts = augment.AugmentOptions(crop_scale=scale, crop_ratio=ratio, crop_sampler=sampler)
        seeds = tf.stack([tf.range(n), tf.fill([n], 11)], 1)
        out[name, sampler] = full(tf.constant([height, width, 3]), seeds, opts)
    return {k: v.numpy() for k, v in out.items()}


@functools.cache
def device_draws() -> dict[tuple[str, str], np.ndarray]:
    """(case, sampler) -> int [N, 4] on the device, all in one jitted program (one compilation):
    the KS cases through torchvision_box_from_uniforms at once (uniforms [N, 4, A], each clip's
    share distributed as sample_crop_box's own draw), FULL_PATH through sample_crop_box vmapped
    over N keys."""

    def draw(key: jax.Array) -> dict:
        out = {}
        k_batch, k_full = jax.random.split(key)
        u = jax.random.uniform(k_batch, (len(CASES), NUM_BOXES, 4, da.CROP_ATTEMPTS))
        for i, (name, (height, width, scale, ratio)) in enumerate(CASES.items()):
            boxes = da.torchvision_box_from_uniforms(u[i], height, width, scale, ratio)
            out[name, "torchvision"] = boxes
        for i, ((name, sampler), ((height, width, scale, ratio), n)) in enumerate(
            FULL_PATH.items()
        ):
            sample = functools.partial(
                da.sample_crop_box,
                height=height,
                width=width,
                scale=scale,
                ratio=ratio,
                sampler=sampler,
            )
            keys = jax.random.split(jax.random.fold_in(k_full, i), n)
            out[name, sampler] = jax.vmap(sample)(keys)
        return out

    return {k: np.asarray(v) for k, v in jax.jit(draw)(jax.random.key(12)).items()}


SIDES = {"host": host_draws, "device": device_draws}


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov statistic (ties counted on both sides alike)."""
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def _stats(boxes: np.ndarray, height: int, width: int) -> dict[str, np.ndarray]:
    """Area fraction, aspect w/h, and the top-left corner as a fraction of its free range (the
    centre of one of the H - h + 1 starts: uniform on (0, 1) when every start is as likely)."""
    top, left, h, w = boxes.T.astype(np.float64)
    return {
        "area": h * w / (height * width),
        "aspect": w / h,
        "top": (top + 0.5) / (height - h + 1),
        "left": (left + 0.5) / (width - w + 1),
    }


def _distances(boxes: np.ndarray, reference: np.ndarray, height: int, width: int) -> dict:
    ours, ref = _stats(boxes, height, width), _stats(reference, height, width)
    return {name: round(_ks(ours[name], ref[name]), 4) for name in ours}


def _within_bounds(boxes: np.ndarray, height: int, width: int) -> bool:
    top, left, h, w = boxes.T
    starts_inside = (top >= 0) & (left >= 0) & (h >= 1) & (w >= 1)
    return bool(np.all(starts_inside & (top + h <= height) & (left + w <= width)))


# --- the distribution -------------------------------------------------------------------------


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("name", CASES)
def test_torchvision_sampler_matches_the_formula(side, name):
    height, width, scale, ratio = CASES[name]
    ours = SIDES[side]()[name, "torchvision"]
    assert _within_bounds(ours, height, width)
    reference = _formula_boxes(height, width, scale, ratio, seed=1)
    distances = _distances(ours, reference, height, width)
    assert max(distances.values()) < KS_CRITICAL, distances


@pytest.mark.parametrize("name", CASES)
def test_torchvision_sampler_matches_torchvision(name):
    height, width, scale, ratio = CASES[name]
    reference = _torchvision_boxes(height, width, scale, ratio, seed=2)
    # The transcription itself first, then both sides.
    formula = _formula_boxes(height, width, scale, ratio, seed=3)
    assert max(_distances(formula, reference, height, width).values()) < KS_CRITICAL
    for side, draws in SIDES.items():
        distances = _distances(draws()[name, "torchvision"], reference, height, width)
        assert max(distances.values()) < KS_CRITICAL, (side, distances)


def test_the_tf_sampler_is_told_apart():
    """The KS tests above have the power to see the old sampler's difference at the recipe's
    settings (aspect uniform, not log-uniform; height, not area, uniform; last start excluded)."""
    height, width, scale, ratio = RECIPE
    reference = _formula_boxes(height, width, scale, ratio, seed=6)
    distances = _distances(host_draws()["recipe", "tf"], reference, height, width)
    assert max(distances.values()) > KS_CRITICAL, distances


# --- the fallback, exactly ----------------------------------------------------------------------


@pytest.mark.parametrize("name", FALLBACKS)
def test_fallback_box_is_the_formulas(name):
    """No candidate fits these frames, so every draw is the central box clamped to the ratio
    range: the formula's, on both sides."""
    (height, width, scale, ratio), expected = FALLBACKS[name]
    rng = np.random.default_rng(0)
    assert {formula_box(rng, height, width, scale, ratio) for _ in range(50)} == {expected}
    assert da.torchvision_fallback_box(height, width, ratio) == expected
    for side, draws in SIDES.items():
        boxes = draws()[name, "torchvision"]
        assert np.all(boxes == np.array(expected)), (side, np.unique(boxes, axis=0))


def test_the_sampler_reaches_the_clip():
    """train_augment and augment_clip crop the "torchvision" fallback box of a wide frame (flip
    and jitter off), where the "tf" sampler would take the whole frame."""
    (height, width, scale, ratio), (top, left, h, w) = FALLBACKS["wide"]
    clip = np.random.default_rng(1).integers(0, 256, (2, height, width, 3), dtype=np.uint8)
    crop = clip[:, top : top + h, left : left + w].astype(np.float32)
    expected = tf.image.resize(crop, [8, 8], method="bilinear", antialias=True).numpy() / 255.0
    off = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    common = dict(image_size=8, flip_prob=0.0, crop_scale=scale, crop_ratio=ratio, **off)
    host = augment.train_augment(
        tf.constant(clip), augment.AugmentOptions(crop_sampler="torchvision", **common), [1, 2]
    )
    np.testing.assert_allclose(host.numpy(), expected, atol=1e-5)
    opts = da.DeviceAugmentOptions(crop_sampler="torchvision", **common)
    device = jax.jit(lambda k, c: da.augment_clip(k, c, opts))(jax.random.key(3), clip)
    np.testing.assert_allclose(np.asarray(device), expected, atol=1e-4)


# --- the "tf" sampler unchanged, the options -----------------------------------------------------


def test_tf_sampler_is_the_unchanged_tf_op():
    """The paper flavor's host crops are bit for bit those of before the option existed."""
    opts = augment.AugmentOptions(crop_sampler="tf")
    for s in range(5):
        seed = tf.constant([s, 3], tf.int32)
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            image_size=[40, 56, 3],
            bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
            seed=seed,
            min_object_covered=0.0,
            aspect_ratio_range=opts.crop_ratio,
            area_range=opts.crop_scale,
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        box = augment.crop_box(tf.constant([40, 56, 3]), opts, seed).numpy()
        np.testing.assert_array_equal(box, [begin[0], begin[1], size[0], size[1]])


def test_flavor_defaults_and_overrides_reach_both_sides():
    assert get_data_config("dfew").augment.crop_sampler is None  # the flavor's until resolved
    assert get_data_config("dfew", flavor="reference").augment.crop_sampler == "torchvision"
    assert get_data_config("dfew", flavor="paper").augment.crop_sampler == "tf"
    cfg = get_data_config("dfew")
    cfg.augment.crop_sampler = "tf"  # an explicit choice wins over the flavor's
    resolve_flavor_defaults(cfg, "reference")
    assert _augment_options(cfg).crop_sampler == "tf"
    config = load_config_file("configs/dfew.py:flavor=paper")
    recipe.resolve(config)
    assert da.options_from_config(config).crop_sampler == "tf"
    config.data.augment.crop_sampler = None
    with pytest.raises(ValueError, match="unresolved"):
        da.options_from_config(config)
    with pytest.raises(ValueError, match="crop_sampler"):
        augment.AugmentOptions(crop_sampler="uniform")
    with pytest.raises(ValueError, match="crop_sampler"):
        da.DeviceAugmentOptions(crop_sampler="uniform")
