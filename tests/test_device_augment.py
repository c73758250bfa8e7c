"""On-device augmentation (config.data.augment_on_device) against the TF pipeline it replaces:
crop-box statistics (area fraction, aspect ratio, offsets, whole-frame fallback) against
tf.image.stateless_sample_distorted_bounding_box, crop/flip/resize and colour jitter (hue
included) numerically against the TF code for fixed parameters, the flip rate, one draw for every
frame of a clip, mixup/cutmix targets and λ, the host pipeline's uint8 batches (resumable, eval
unchanged), and the same draws on 1 and 8 devices, and a tiny run with the switch on."""

import dataclasses
import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import augment as tf_augment
from data_pipeline.configs import get_data_config
from data_pipeline.pipeline import build_datasets
from ifdd_jax import device_augment as da
from ifdd_jax import device_mixing, recipe, sharding, train
from ifdd_jax import train_step as step_lib
from tests.data_fixtures import trees
from tests.tiny_runs import tiny_config, tiny_run_config

# --- the crop box ------------------------------------------------------------------------------

NUM_BOXES = 4000
# Two-sample KS statistic allowed between samplers; the TF sampler against itself with another
# seed must pass it too (at 4000 boxes each, p < 0.001 for the same distribution). A log-uniform
# aspect ratio or a uniform area (torchvision's sampler) gives 0.08-0.33 on these settings.
KS_TOLERANCE = 0.045


def _tf_boxes(height: int, width: int, scale, ratio, seed: int) -> np.ndarray:
    """[N, 4] (top, left, h, w) from the TF pipeline's call, one stateless seed per box."""

    @tf.function
    def boxes(seeds):
        def one(s):
            begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
                image_size=[height, width, 3],
                bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
                seed=s,
                min_object_covered=0.0,
                aspect_ratio_range=ratio,
                area_range=scale,
                max_attempts=10,
                use_image_if_no_bounding_boxes=True,
            )
            return tf.stack([begin[0], begin[1], size[0], size[1]])

        return tf.map_fn(one, seeds, fn_output_signature=tf.int32)

    seeds = tf.stack([tf.range(NUM_BOXES), tf.fill([NUM_BOXES], seed)], 1)
    return boxes(seeds).numpy()


def _jax_boxes(height: int, width: int, scale, ratio, seed: int) -> np.ndarray:
    keys = jax.random.split(jax.random.key(seed), NUM_BOXES)
    sample = jax.vmap(lambda k: da.sample_crop_box(k, height, width, scale, ratio, "tf"))
    return np.asarray(jax.jit(sample)(keys))


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def _box_stats(boxes: np.ndarray, height: int, width: int) -> dict[str, np.ndarray]:
    top, left, h, w = boxes.T
    return {"area": h * w / (height * width), "aspect": w / h, "top": top, "left": left}


@pytest.mark.parametrize(
    "height,width,scale,ratio",
    [
        (224, 224, (0.5, 1.0), (3 / 4, 4 / 3)),  # the recipe's crop at DFEW's size
        (40, 56, (0.08, 1.0), (0.25, 4.0)),  # wide ranges on a non-square frame: the clamps
        (32, 32, (0.9, 1.0), (0.5, 2.0)),  # a quarter of the draws fall back to the whole frame
    ],
)
def test_crop_box_statistics_match_tf(height, width, scale, ratio):
    ours = _jax_boxes(height, width, scale, ratio, seed=0)
    top, left, h, w = ours.T
    assert np.all((top >= 0) & (left >= 0) & (h >= 1) & (w >= 1))
    assert np.all((top + h <= height) & (left + w <= width))
    tf_a = _tf_boxes(height, width, scale, ratio, seed=1)
    tf_b = _tf_boxes(height, width, scale, ratio, seed=2)
    sa, sb, so = (_box_stats(x, height, width) for x in (tf_a, tf_b, ours))
    for name in sa:
        assert _ks(sa[name], sb[name]) < KS_TOLERANCE, name  # the tolerance TF itself meets
        assert _ks(sa[name], so[name]) < KS_TOLERANCE, (name, _ks(sa[name], so[name]))

    def full(boxes):
        return np.mean((boxes[:, 2] == height) & (boxes[:, 3] == width))

    assert abs(full(tf_a) - full(tf_b)) < 0.035
    assert abs(full(tf_a) - full(ours)) < 0.035


# --- crop, flip and resize ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "box,flip", [((0, 0, 20, 24), False), ((3, 5, 13, 9), True), ((7, 2, 6, 17), False)]
)
def test_crop_flip_resize_matches_tf(box, flip):
    """Against the TF order: flip, crop the box, tf.image.resize(bilinear, antialias) to 16 px
    (downscaling on one axis and upscaling on the other included)."""
    clip = np.random.default_rng(0).integers(0, 256, (2, 20, 24, 3), dtype=np.uint8)
    frames = tf.reverse(clip, axis=[2]) if flip else tf.constant(clip)
    top, left, h, w = box
    crop = frames[:, top : top + h, left : left + w, :]
    expected = tf.image.resize(crop, [16, 16], method="bilinear", antialias=True).numpy()
    ours = da.crop_flip_resize(jnp.asarray(clip), jnp.asarray(box), jnp.asarray(flip), 16)
    np.testing.assert_allclose(np.asarray(ours), expected, atol=2e-3)


def test_flip_rate_matches_flip_prob():
    """With the crop pinned to the whole frame and no jitter, each output is the frame or its
    mirror; the mirrors' share is flip_prob."""
    opts = da.DeviceAugmentOptions(
        image_size=6, flip_prob=0.3, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hue=0.0
    )
    opts = _no_jitter(opts)
    frame = np.arange(6 * 6 * 3, dtype=np.uint8).reshape(1, 6, 6, 3)
    keys = jax.random.split(jax.random.key(0), 4000)
    out = np.asarray(
        jax.jit(jax.vmap(lambda k: da.augment_clip(k, jnp.asarray(frame), opts)))(keys)
    )
    plain = np.clip(frame / 255.0, 0, 1)
    same = np.all(np.isclose(out, plain[None], atol=1e-5), axis=(1, 2, 3, 4))
    mirrored = np.all(np.isclose(out, plain[None, :, :, ::-1], atol=1e-5), axis=(1, 2, 3, 4))
    assert np.all(same ^ mirrored)
    assert abs(mirrored.mean() - 0.3) < 0.03


def _no_jitter(opts: da.DeviceAugmentOptions) -> da.DeviceAugmentOptions:
    return dataclasses.replace(
        opts,
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        hue=0.0,
        mix=device_mixing.MixOptions(enabled=False, label_smoothing=0.0),
    )


def test_one_draw_for_every_frame_of_a_clip():
    """A clip of identical frames stays identical frame to frame through the whole augmentation
    (flip, crop, jitter with hue), while clips of the batch get different draws."""
    frame = np.random.default_rng(1).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    clips = jnp.asarray(np.broadcast_to(frame, (6, 5, 20, 24, 3)))
    opts = da.DeviceAugmentOptions(image_size=16, mix=device_mixing.MixOptions(enabled=False))
    out, target = jax.jit(lambda k, c: da.augment_batch(k, c, jnp.zeros(6, jnp.int32), opts))(
        jax.random.key(3), clips
    )
    out = np.asarray(out)
    assert out.shape == (6, 5, 16, 16, 3) and target.shape == (6, 7)
    for t in range(1, 5):
        np.testing.assert_allclose(out[:, t], out[:, 0], atol=1e-6)
    assert all(not np.allclose(out[0], out[i]) for i in range(1, 6))
    assert 0.0 <= out.min() and out.max() <= 1.0


# --- colour ------------------------------------------------------------------------------------


def test_hue_rotation_matches_tf():
    x = np.random.default_rng(2).random((3, 7, 5, 3)).astype(np.float32)
    x[0, 0, :4] = [[0.5, 0.5, 0.5], [0.2, 0.2, 0.7], [0.7, 0.7, 0.1], [0.0, 0.0, 0.0]]  # ties
    for delta in (-0.4, -0.13, 0.0, 0.25, 0.4):
        expected = tf.image.adjust_hue(x, delta).numpy()
        np.testing.assert_allclose(
            np.asarray(da.adjust_hue(jnp.asarray(x), delta)), expected, atol=2e-6
        )


@pytest.mark.parametrize("strengths", [(0.4, 0.4, 0.4, 0.4), (0.4, 0.0, 0.4, 0.0)])
def test_colour_jitter_matches_tf_for_fixed_factors_and_order(strengths):
    """Every order of the four operations, fixed factors, against augment.apply_jitter (the CPU
    pipeline's own code); operations of strength 0 are skipped by both."""
    clip = np.random.default_rng(3).random((2, 6, 5, 3)).astype(np.float32)
    b, c, s, h = strengths
    opts = tf_augment.AugmentOptions(brightness=b, contrast=c, saturation=s, hue=h)
    factors = np.array([1.3, 0.7, 1.25, -0.3], np.float32)
    jitter = jax.jit(lambda x, f, o: da.apply_jitter(x, f, o, strengths))
    for order in itertools.permutations(range(4)):
        order = np.array(order, np.int32)
        expected = tf_augment.apply_jitter(
            tf.constant(clip), tf.constant(factors), tf.constant(order), opts
        ).numpy()
        ours = np.asarray(jitter(jnp.asarray(clip), factors, order))
        np.testing.assert_allclose(ours, expected, atol=1e-5, err_msg=str(order))


def test_jitter_draws_follow_the_ranges():
    keys = jax.random.split(jax.random.key(4), 2000)
    factors, orders = jax.vmap(lambda k: da.jitter_factors(k, (0.4, 0.2, 0.0, 0.1)))(keys)
    factors, orders = np.asarray(factors), np.asarray(orders)
    for i, (lo, hi) in enumerate([(0.6, 1.4), (0.8, 1.2), (1.0, 1.0), (-0.1, 0.1)]):
        assert lo - 1e-6 <= factors[:, i].min() and factors[:, i].max() <= hi + 1e-6
        assert abs(factors[:, i].mean() - (lo + hi) / 2) < 0.02
    assert np.all(np.sort(orders, 1) == np.arange(4))
    assert np.allclose(np.bincount(orders[:, 0], minlength=4) / 2000, 0.25, atol=0.04)


def test_normalization_matches_tf():
    x = np.random.default_rng(5).random((2, 4, 4, 3)).astype(np.float32)
    for mode in ("unit", "imagenet"):
        np.testing.assert_allclose(
            np.asarray(da.normalize(jnp.asarray(x), mode)),
            tf_augment.normalize(tf.constant(x), mode).numpy(),
            rtol=1e-6,
        )


# --- mixing ------------------------------------------------------------------------------------


def test_mixup_and_cutmix_targets_and_lambda():
    rng = np.random.default_rng(6)
    clips = jnp.asarray(rng.random((4, 3, 8, 10, 3), dtype=np.float32))
    labels = jnp.asarray([0, 1, 2, 3])
    k, eps = 7, 0.1
    smooth = np.asarray(device_mixing.smooth_one_hot(labels, k, eps))
    np.testing.assert_allclose(smooth[0], [1 - eps + eps / k] + [eps / k] * 6, rtol=1e-6)
    mix = jax.jit(
        lambda key, opts: device_mixing.mix_batch(key, clips, labels, k, opts), static_argnums=1
    )
    partner = np.asarray(clips)[::-1]
    mixup = device_mixing.MixOptions(cutmix_alpha=0.0)
    cutmix = device_mixing.MixOptions(mixup_alpha=0.0)
    lams = []
    for seed in range(40):
        key = jax.random.key(seed)
        out, target, lam = (np.asarray(v) for v in mix(key, mixup))
        np.testing.assert_allclose(out, lam * np.asarray(clips) + (1 - lam) * partner, atol=1e-6)
        np.testing.assert_allclose(target, lam * smooth + (1 - lam) * smooth[::-1], atol=1e-6)
        out, target, lam = (np.asarray(v) for v in mix(key, cutmix))
        from_partner = np.isclose(out, partner) & ~np.isclose(out, np.asarray(clips))
        box = from_partner[0, 0, :, :, 0]
        # One box shared by every clip, frame and channel; λ is the share of own pixels.
        assert np.all(from_partner == box[None, None, :, :, None])
        np.testing.assert_allclose(lam, 1.0 - box.mean(), atol=1e-6)
        np.testing.assert_allclose(target, lam * smooth + (1 - lam) * smooth[::-1], atol=1e-6)
        lams.append(float(lam))
    assert len(set(lams)) > 8  # a new box per key (areas on an 8 x 10 grid)
    out, target, lam = mix(jax.random.key(0), device_mixing.MixOptions(mix_prob=0.0))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(clips))
    np.testing.assert_allclose(np.asarray(target), smooth, rtol=1e-6)
    assert float(lam) == 1.0


def _lambda_of(target: np.ndarray, smoothing: float, num_classes: int) -> float:
    """λ from the first row of a mixed target whose labels are all different."""
    off = smoothing / num_classes
    return float((target[0, 0] - off) / (1.0 - smoothing))


def test_mixing_lambda_distribution_matches_tf():
    """λ of CutMix (Beta(1), then corrected to the clipped box, so above 0.5 on average) and of
    Mixup (Beta(0.8)), ours against data_pipeline.mixing.mix_batch."""
    from data_pipeline import mixing as tf_mixing

    n, shape = 300, (4, 2, 8, 10, 3)
    clips = np.random.default_rng(10).random(shape, dtype=np.float32)
    labels = np.arange(4, dtype=np.int32)
    for alphas in ((0.0, 1.0), (0.8, 0.0)):
        tf_opts = tf_mixing.MixOptions(mixup_alpha=alphas[0], cutmix_alpha=alphas[1])
        ours_opts = device_mixing.MixOptions(mixup_alpha=alphas[0], cutmix_alpha=alphas[1])
        theirs = [
            _lambda_of(
                tf_mixing.mix_batch(clips, labels, 7, tf_opts, tf.constant([s, 3]))[1].numpy(),
                0.1,
                7,
            )
            for s in range(n)
        ]
        mix = jax.jit(
            jax.vmap(lambda k, o=ours_opts: device_mixing.mix_batch(k, clips, labels, 7, o)[2])
        )
        ours = np.asarray(mix(jax.random.split(jax.random.key(11), n)))
        # Standard error of the difference of means about 0.02.
        assert abs(np.mean(theirs) - np.mean(ours)) < 0.07, (alphas, np.mean(theirs), np.mean(ours))
        # Box areas are discrete: rounded, so that float noise does not split their atoms.
        assert _ks(np.round(theirs, 4), np.round(ours, 4)) < 0.16  # p < 0.001 at 300 each


def test_switch_prob_chooses_cutmix():
    """With both enabled, a share switch_prob of the batches is CutMix (a box: some pixels
    exactly the partner's), the rest Mixup (every pixel a blend)."""
    clips = jnp.asarray(np.random.default_rng(7).random((2, 1, 6, 6, 1), dtype=np.float32))
    opts = device_mixing.MixOptions(switch_prob=0.25)

    def is_cutmix(key):
        out, _, lam = device_mixing.mix_batch(key, clips, jnp.zeros(2, jnp.int32), 3, opts)
        exact = jnp.isclose(out, clips) | jnp.isclose(out, clips[::-1])
        return jnp.all(exact)

    keys = jax.random.split(jax.random.key(8), 800)
    share = float(jnp.mean(jax.jit(jax.vmap(is_cutmix))(keys)))
    assert abs(share - 0.25) < 0.05


# --- the host pipeline with the switch ---------------------------------------------------------


@pytest.fixture(scope="module")
def dfew_root(tmp_path_factory):
    return trees.make_dfew(str(tmp_path_factory.mktemp("dfew")), num_frames=6)


def _data_cfg(root, tfds_dir, **overrides):
    cfg = get_data_config("dfew", flavor="reference")
    cfg.data_dir, cfg.tfds_data_dir = root, tfds_dir
    cfg.num_frames, cfg.image_size, cfg.val_protocol = 4, 12, "test"
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def test_pipeline_yields_decoded_uint8_clips(dfew_root, tmp_path):
    tfds_dir = str(tmp_path)
    off = build_datasets(
        _data_cfg(dfew_root, tfds_dir), global_batch_size=3, eval_batch_size=2, seed=5
    )
    on = build_datasets(
        _data_cfg(dfew_root, tfds_dir, augment_on_device=True),
        global_batch_size=3,
        eval_batch_size=2,
        seed=5,
    )
    batch = next(on.train)
    assert set(batch) == {"clips", "label"}
    assert batch["clips"].shape == (3, 4, 12, 12, 3) and batch["clips"].dtype == np.uint8
    assert on.meta["augment_on_device"] and on.meta["train_clip_shape"] == (4, 12, 12, 3)
    # Same clips and order as the CPU-augmented stream, and an identical evaluation.
    np.testing.assert_array_equal(batch["label"], next(off.train)["label"])
    for a, b in zip(off.make_eval_iter("test"), on.make_eval_iter("test")):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    # At the frames' own size (16 px) nothing is resized: the stored frames as decoded.
    native = build_datasets(
        _data_cfg(dfew_root, tfds_dir, augment_on_device=True, stored_size=trees.SIZE),
        global_batch_size=3,
        eval_batch_size=2,
        seed=5,
    )
    clips = next(native.train)["clips"]
    assert clips.shape == (3, 4, trees.SIZE, trees.SIZE, 3)
    levels = sorted(set(int(v) for v in clips[:, :, 4, 4, 0].ravel()))
    assert all(any(abs(v - trees.frame_value(k)) <= 3 for k in range(1, 7)) for v in levels)


def test_pipeline_state_resumes_with_the_switch(dfew_root, tmp_path):
    cfg = _data_cfg(dfew_root, str(tmp_path), augment_on_device=True)
    d = build_datasets(cfg, global_batch_size=3, eval_batch_size=2, seed=5)
    for _ in range(3):
        next(d.train)
    state = d.train.get_state()
    expected = next(d.train)
    d2 = build_datasets(cfg, global_batch_size=3, eval_batch_size=2, seed=5)
    d2.train.set_state(state)
    resumed = next(d2.train)
    for key in ("clips", "label"):
        np.testing.assert_array_equal(resumed[key], expected[key])


def test_stored_clip_resizes_other_sizes_once():
    frames = tf.constant(np.random.default_rng(9).integers(0, 256, (2, 20, 30, 3), dtype=np.uint8))
    out = tf_augment.stored_clip(frames, 10).numpy()
    assert out.shape == (2, 10, 10, 3) and out.dtype == np.uint8
    expected = np.round(tf_augment.eval_transform(frames, 10).numpy() * 255)
    np.testing.assert_allclose(out, expected, atol=1)
    same = tf.constant(np.zeros((2, 10, 10, 3), np.uint8) + 7)
    np.testing.assert_array_equal(tf_augment.stored_clip(same, 10).numpy(), same.numpy())


# --- the train step with the switch ------------------------------------------------------------


def _device_config():
    config = tiny_config()
    config.data.augment_on_device = True
    a = config.data.augment
    a.brightness = a.contrast = a.saturation = a.hue = 0.4
    config.data.mix.enabled, config.data.mix.label_smoothing = True, 0.1
    recipe.resolve(config)
    return config


def _uint8_batch() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "clips": rng.integers(0, 256, (8, 8, 40, 40, 3), dtype=np.uint8),
        "label": rng.integers(0, 7, 8).astype(np.int32),
    }


def test_augmented_batch_does_not_depend_on_the_sharding():
    """Per-example draws come from the global batch position: the batch sharded over 8 devices
    is augmented exactly as on 1."""
    opts = da.options_from_config(_device_config())
    augment = jax.jit(lambda k, b: da.augment_batch(k, b["clips"], b["label"], opts))
    outs = []
    for devices in (jax.devices()[:1], jax.devices()[:8]):
        mesh = sharding.make_mesh(devices)
        batch = sharding.global_batch(mesh, _uint8_batch(), ("clips", "label"))
        outs.append(jax.device_get(augment(jax.random.key(5), batch)))
    for a, b in zip(outs[0], outs[1]):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert outs[0][0].shape == (8, 8, 32, 32, 3) and outs[0][1].shape == (8, 7)


def test_a_tiny_run_trains_with_the_switch(tmp_path):
    """The main job end to end with augment_on_device and the released recipe's jitter and
    mixing: uint8 batches from the pipeline, the step sharded over the 8 test devices,
    checkpoints, validation and the test report."""
    config = tiny_run_config(str(tmp_path / "data"), num_train_steps=3)
    config.data.augment_on_device = True
    a = config.data.augment
    a.brightness = a.contrast = a.saturation = a.hue = 0.4
    config.data.mix.enabled, config.data.mix.label_smoothing = True, 0.1
    assert step_lib.train_keys(config) == ("clips", "label")
    workdir = str(tmp_path / "run")
    results = train.train_and_evaluate(config, workdir)
    assert np.isfinite(results["uar"])
    saved = json.load(open(os.path.join(workdir, "results.json")))
    assert saved["uar"] == results["uar"]
