"""The released MAFW temporal sampling (the reference flavor's for MAFW): frame indices against the
released rule written out, the window start's distribution, the flavor defaults, and the pipeline
actually sampling that way."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import sampling
from data_pipeline.configs import get_data_config, resolve_flavor_defaults
from data_pipeline.pipeline import build_datasets
from ifdd_jax.config_lib import load_config_file
from tests.data_fixtures import trees


def _released_clip(num_frames: int, clip_duration: int, clip_stride: int, start: int) -> list:
    """The frame indices the released `MAFW_pretrain.get_clip` returns for a clip of `num_frames`
    frames (training, or evaluation with single_val_view), with the random start given.

    The window spans (clip_duration - 1)·clip_stride + 1 frames. A long enough clip is sliced
    [start : start + window : stride]. A shorter one is expanded first: walking from the last
    frame back to the first, each frame is repeated window // n times, and the first
    window % n frames met on that walk (the clip's last ones) once more; the list is then put
    back in temporal order and sliced from 0."""
    window = (clip_duration - 1) * clip_stride + 1
    frames = list(range(num_frames))
    if num_frames >= window:
        return frames[start : start + window : clip_stride]
    times, leftover = window // num_frames, window % num_frames
    walked, extra_given = [], 0
    for frame in reversed(frames):
        copies = [frame] * times
        if extra_given < leftover:
            copies.append(frame)
            extra_given += 1
        walked.extend(copies)
    expanded = walked[::-1]
    return expanded[0:window:clip_stride]


LENGTHS = (1, 2, 3, 5, 10, 17, 31, 32, 33, 61, 62, 63, 64, 65, 100, 250)
SHAPES = ((32, 2), (16, 2), (8, 3), (4, 1))  # (T, stride); (32, 2) is the released MAFW's


@pytest.mark.parametrize("t,stride", SHAPES)
def test_strided_window_indices_are_the_released_ones(t, stride):
    window = sampling.window_length(t, stride)
    assert window == (t - 1) * stride + 1
    for n in LENGTHS:
        for s in range(3):
            seed = tf.constant([s, n], tf.int32)
            got = sampling.train_indices(
                tf.constant(n), t, seed, temporal_sampling="strided_window", window_stride=stride
            ).numpy()
            start = int(got[0]) if n >= window else 0
            assert 0 <= start <= max(n - window, 0)
            assert got.tolist() == _released_clip(n, t, stride, start), (n, s)
            views = sampling.eval_indices(
                tf.constant(n),
                t,
                num_views=2,
                temporal_sampling="strided_window",
                window_stride=stride,
                seed=seed,
            ).numpy()
            again = sampling.eval_indices(
                tf.constant(n),
                t,
                num_views=2,
                temporal_sampling="strided_window",
                window_stride=stride,
                seed=seed,
            ).numpy()
            np.testing.assert_array_equal(views, again)  # a repeatable evaluation
            for view in views:
                view_start = int(view[0]) if n >= window else 0
                assert view.tolist() == _released_clip(n, t, stride, view_start)


def test_short_clip_expansion_by_hand():
    # 5 frames into a window of 7 (T 4, stride 2): 7 // 5 = 1 copy each, the last 7 % 5 = 2 frames
    # one more: 0 1 2 3 3 4 4, read at 0 2 4 6.
    got = sampling.train_indices(
        tf.constant(5), 4, tf.constant([0, 0]), temporal_sampling="strided_window"
    )
    assert got.numpy().tolist() == [0, 2, 3, 4]
    # The released MAFW shape on a 20-frame clip: 63 // 20 = 3 copies, the last 3 frames 4.
    got = sampling.train_indices(
        tf.constant(20), 32, tf.constant([0, 0]), temporal_sampling="strided_window"
    ).numpy()
    expanded = [f for f in range(20) for _ in range(3 + (f >= 17))]
    assert len(expanded) == 63 and got.tolist() == expanded[::2]


def test_window_start_is_uniform_over_every_valid_start():
    """random.randrange(0, n - L + 1): each of the n - L + 1 starts, equally often."""
    n, window, draws = 70, 63, 8000  # starts 0..7
    starts = (
        tf.data.Dataset.range(draws)
        .map(lambda i: sampling.window_start(n, window, tf.stack([tf.cast(i, tf.int32), 5])))
        .batch(draws)
        .get_single_element()
        .numpy()
    )
    counts = collections.Counter(starts.tolist())
    assert sorted(counts) == list(range(8))
    expected = draws / 8
    for start, count in counts.items():
        assert abs(count - expected) < 5 * np.sqrt(expected), (start, count)


def test_flavor_defaults_and_the_released_mafw_shape():
    assert get_data_config("mafw", "reference").temporal_sampling == "strided_window"
    assert get_data_config("mafw", "paper").temporal_sampling == "segments"
    for name in ("dfew", "ferv39k", "synthetic"):
        assert get_data_config(name, "reference").temporal_sampling == "segments"
    explicit = get_data_config("mafw")
    explicit.temporal_sampling = "segments"
    resolve_flavor_defaults(explicit, "reference")
    assert explicit.temporal_sampling == "segments"  # an explicit choice wins
    # configs/mafw.py: 32 frames at stride 2, a window of 63 (IFDD_MAFW.json: clip_duration 32,
    # clip_stride 2).
    config = load_config_file("configs/mafw.py:flavor=reference")
    assert (config.data.num_frames, config.data.window_stride) == (32, 2)
    unknown = get_data_config("mafw")
    unknown.temporal_sampling = "window"
    with pytest.raises(ValueError, match="temporal_sampling must be one of"):
        sampling.options(unknown)


def _levels_to_frames(clip: np.ndarray) -> list:
    """Frame indices (0-based) of a clip of the fixture's flat frames (level 20·(k + 1))."""
    levels = clip[:, 6, 6, 0] * 255
    frames = np.round(levels / 20).astype(int) - 1
    np.testing.assert_allclose(levels, 20 * (frames + 1), atol=4)
    return frames.tolist()


@pytest.mark.parametrize("flavor", ["reference", "paper"])
def test_the_pipeline_samples_mafw_by_the_flavor(tmp_path, flavor):
    """Reference: every train and evaluation clip is a stride-2 window of the 10-frame clips;
    paper: the centred segments (frames 1, 3, 6, 8)."""
    root = trees.make_mafw(str(tmp_path / "mafw"), num_frames=10)
    cfg = get_data_config("mafw", flavor)
    cfg.data_dir, cfg.source, cfg.val_protocol = root, "files", "test"
    cfg.num_frames, cfg.image_size = 4, 12
    cfg.augment.enabled, cfg.mix.enabled, cfg.mix.label_smoothing = False, False, 0.0
    d = build_datasets(cfg, global_batch_size=4, eval_batch_size=4, seed=0)
    assert d.meta["temporal_sampling"]["temporal_sampling"] == cfg.temporal_sampling
    train = [_levels_to_frames(c) for _ in range(3) for c in next(d.train)["clips"]]
    test = [
        _levels_to_frames(clip[0])  # view 0
        for batch in d.make_eval_iter("test")
        for clip, real in zip(batch["clips"], batch["mask"])
        if real
    ]
    assert len(test) == 3  # fold 1's test clips
    if flavor == "paper":
        assert test[0] == [1, 3, 6, 8]
        return
    for frames in train + test:
        assert frames == _released_clip(10, 4, 2, frames[0]) and 0 <= frames[0] <= 3
    assert len({f[0] for f in train}) > 1  # the start is drawn, not fixed
