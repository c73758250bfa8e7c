"""tf.data clip pipeline: TFDS build/read-back, shapes, consistent augmentation, eval coverage,
host sharding, resumability, mixing targets and temporal sampling."""

import collections
import glob

import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import sampling, sources, tfds_builders
from data_pipeline.augment import AugmentOptions, train_augment
from data_pipeline.configs import get_data_config
from data_pipeline.mixing import MixOptions, mix_batch
from data_pipeline.pipeline import build_datasets
from tests.data_fixtures import trees


@pytest.fixture(scope="module")
def dfew_root(tmp_path_factory):
    return trees.make_dfew(str(tmp_path_factory.mktemp("dfew")), num_frames=6, videos=True)


def _cfg(root, tfds_dir, **overrides):
    cfg = get_data_config("dfew", flavor="reference")
    cfg.data_dir, cfg.tfds_data_dir = root, tfds_dir
    cfg.num_frames, cfg.image_size = 4, 12
    cfg.val_protocol = "test"  # 8 training clips of 7 classes: too few for a 4:1 holdout
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def test_tfds_build_and_read_back(dfew_root, tmp_path):
    builder = tfds_builders.prepare("dfew", dfew_root, str(tmp_path), fold=2, val_fraction=0.2)
    splits = builder.info.splits
    assert splits["test"].num_examples == 2
    assert sum(s.num_examples for s in splits.values()) == 10
    for ex in builder.as_dataset(split="test").as_numpy_iterator():
        clip_id = int(ex["clip_id"].decode())
        assert ex["label"] == trees.DFEW_LABELS[clip_id] - 1
        assert ex["frames"].shape == (6, trees.SIZE, trees.SIZE, 3) and ex["num_frames"] == 6
        assert [int(f[4, 4, 0]) for f in ex["frames"]] == pytest.approx(
            [trees.frame_value(k) for k in range(1, 7)], abs=3
        )
    # Prepared once: a second call reuses the TFRecords.
    again = tfds_builders.prepare("dfew", dfew_root, str(tmp_path), fold=2)
    assert again.data_dir == builder.data_dir


@pytest.mark.parametrize(
    "dataset,fold,make", [("ferv39k", None, trees.make_ferv39k), ("mafw", 2, trees.make_mafw)]
)
def test_tfds_builders_store_what_the_readers_index(tmp_path, dataset, fold, make):
    """Every builder reads its official layout through sources.read_index, with its config's
    options: the stored splits hold exactly the indexed clips, with their labels."""
    root = make(str(tmp_path / dataset))
    index = sources.read_index(
        dataset, root, fold=fold or 0, frame_version="16f", prefer="frames", on_bad_clip="skip"
    )
    builder = tfds_builders.prepare(
        dataset, root, str(tmp_path / "tfds"), fold=fold, val_fraction=0.0
    )
    for split, name in (("train", "train"), ("test", "test")):
        stored = {
            ex["clip_id"].decode(): int(ex["label"])
            for ex in builder.as_dataset(split=name).as_numpy_iterator()
        }
        assert stored == {r.clip_id: r.label for r in index.splits[split]}


@pytest.mark.parametrize("source", ["tfds", "files"])
def test_batch_shapes_and_dtypes(dfew_root, tmp_path, source):
    cfg = _cfg(dfew_root, str(tmp_path), source=source, num_eval_views=2)
    d = build_datasets(cfg, global_batch_size=4, eval_batch_size=3, seed=0)
    batch = next(d.train)
    assert batch["clips"].shape == (4, 4, 12, 12, 3) and batch["clips"].dtype == np.float32
    assert batch["label"].dtype == np.int32 and batch["label"].shape == (4,)
    assert batch["target"].shape == (4, 7) and batch["target"].dtype == np.float32
    np.testing.assert_allclose(batch["target"].sum(-1), 1.0, rtol=1e-5)
    assert 0.0 <= batch["clips"].min() and batch["clips"].max() <= 1.0  # "unit" normalisation
    ev = next(d.make_eval_iter("test"))
    assert ev["clips"].shape == (3, 2, 4, 12, 12, 3) and ev["mask"].dtype == bool
    assert d.meta["num_classes"] == 7 and d.meta["val_protocol"] == "test"
    assert d.meta["input_shape"] == (4, 12, 12, 3)


def test_video_source_decodes(dfew_root, tmp_path):
    cfg = _cfg(dfew_root, str(tmp_path), source="files", frame_version="video")
    d = build_datasets(cfg, global_batch_size=2, eval_batch_size=2, seed=0)
    assert next(d.train)["clips"].shape == (2, 4, 12, 12, 3)
    ev = next(d.make_eval_iter("test"))
    # Evaluation is unaugmented: centred segment sampling of 8 frames -> frames 2, 4, 6, 8.
    levels = ev["clips"][0, 0, :, 6, 6, 0] * 255
    np.testing.assert_allclose(levels, [trees.frame_value(k) for k in (2, 4, 6, 8)], atol=4)


def test_same_augmentation_for_every_frame():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
    clip = tf.constant(np.stack([frame] * 5))
    opts = AugmentOptions(image_size=16)
    for s in range(5):
        out = train_augment(clip, opts, tf.constant([s, 1], tf.int32)).numpy()
        assert out.shape == (5, 16, 16, 3)
        for t in range(1, 5):
            np.testing.assert_allclose(out[t], out[0], atol=1e-6)
    a = train_augment(clip, opts, tf.constant([0, 1], tf.int32)).numpy()
    b = train_augment(clip, opts, tf.constant([1, 1], tf.int32)).numpy()
    assert not np.allclose(a, b)


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_covers_every_clip_once_with_mask(dfew_root, tmp_path, process_count):
    cfg = _cfg(dfew_root, str(tmp_path), fold=1)
    seen, batches_per_host = collections.Counter(), []
    for p in range(process_count):
        d = build_datasets(
            cfg,
            global_batch_size=2,
            eval_batch_size=4,
            seed=0,
            process_index=p,
            process_count=process_count,
        )
        n = 0
        for batch in d.make_eval_iter("test"):
            n += 1
            assert batch["clips"].shape[0] == 4 // process_count
            for m, cid, idx in zip(batch["mask"], batch["clip_id"], batch["index"]):
                if m:
                    seen[cid.decode()] += 1
                else:
                    assert idx == -1 and cid == b""
        batches_per_host.append(n)
    assert seen == {"00005": 1, "00010": 1}  # fold 1's test clips, each exactly once
    assert len(set(batches_per_host)) == 1  # every host runs the same number of eval steps


def test_train_hosts_are_disjoint(dfew_root, tmp_path):
    from data_pipeline import sources

    cfg = _cfg(dfew_root, str(tmp_path), source="files")
    ids = []
    for p in range(2):
        d = build_datasets(
            cfg, global_batch_size=2, eval_batch_size=2, seed=0, process_index=p, process_count=2
        )
        assert d.meta["per_host_batch_size"] == 1
    index = sources.read_index(
        "dfew", dfew_root, fold=1, frame_version="16f", prefer="frames", on_bad_clip="skip"
    )
    for p in range(2):
        srcs, _ = sources.file_split_sources(
            index,
            val_fraction=0.2,
            split_seed=0,
            val_protocol="test",
            validate=False,
            on_bad_clip="skip",
            process_index=p,
            process_count=2,
        )
        ids.append({x["clip_id"] for x in srcs["train"].make().as_numpy_iterator()})
    assert not ids[0] & ids[1] and len(ids[0] | ids[1]) == 8


def test_resume_from_state_repeats_the_stream(dfew_root, tmp_path):
    cfg = _cfg(dfew_root, str(tmp_path))
    d = build_datasets(cfg, global_batch_size=3, eval_batch_size=2, seed=5)
    first = [next(d.train) for _ in range(3)]  # 9 clips: crosses the 8-clip epoch boundary
    state = d.train.get_state()
    assert state == {"epoch": 1, "position": 1, "seed": 5}
    expected = next(d.train)
    d2 = build_datasets(cfg, global_batch_size=3, eval_batch_size=2, seed=5)
    d2.train.set_state(state)
    resumed = next(d2.train)
    for k in ("clips", "label", "target"):
        np.testing.assert_array_equal(resumed[k], expected[k])
    d3 = build_datasets(cfg, global_batch_size=3, eval_batch_size=2, seed=5)
    np.testing.assert_array_equal(next(d3.train)["clips"], first[0]["clips"])
    epoch0 = np.concatenate([b["label"] for b in first])[:8]
    assert sorted(epoch0.tolist()) == sorted(
        trees.DFEW_LABELS[i] - 1 for i in trees.DFEW_LABELS if i % 5 != 0
    )  # each clip once per epoch


def test_mix_targets():
    clips = tf.random.uniform([4, 2, 8, 8, 3])
    labels = tf.constant([0, 1, 2, 3])
    for s in range(6):
        mixed, target = mix_batch(clips, labels, 7, MixOptions(), tf.constant([s, 0]))
        assert mixed.shape == clips.shape
        np.testing.assert_allclose(target.numpy().sum(-1), 1.0, rtol=1e-5)
    _, target = mix_batch(clips, labels, 7, MixOptions(mix_prob=0.0), tf.constant([0, 0]))
    off = 0.1 / 7
    np.testing.assert_allclose(target.numpy()[0], [1 - 0.1 + off] + [off] * 6, rtol=1e-6)


def test_segment_sampling():
    idx = sampling.eval_indices(tf.constant(16), 16).numpy()
    assert idx.tolist() == [list(range(16))]
    idx = sampling.eval_indices(tf.constant(32), 4, num_views=2).numpy()
    assert idx.tolist() == [[2, 10, 18, 26], [6, 14, 22, 30]]
    stretch = sampling.eval_indices(tf.constant(3), 6, short_clip_policy="stretch").numpy()[0]
    assert stretch.tolist() == [0, 0, 1, 1, 2, 2]
    loop = sampling.eval_indices(tf.constant(3), 6, short_clip_policy="loop").numpy()[0]
    assert loop.tolist() == [1, 2, 0, 1, 2, 0]
    for s in range(5):
        t = sampling.train_indices(tf.constant(20), 4, tf.constant([s, 0])).numpy()
        assert all(5 * i <= v < 5 * (i + 1) for i, v in enumerate(t))


def _synthetic_cfg(data_dir):
    cfg = get_data_config("synthetic", flavor="reference")
    cfg.data_dir = str(data_dir)
    cfg.synthetic.num_clips, cfg.synthetic.num_frames, cfg.synthetic.size = 40, 6, 16
    cfg.num_frames, cfg.image_size = 4, 16
    return cfg


def test_synthetic_config_generates_on_demand(tmp_path):
    d = build_datasets(_synthetic_cfg(tmp_path), global_batch_size=4, eval_batch_size=4, seed=0)
    assert d.meta["val_protocol"] == "holdout" and d.meta["num_examples"]["val"] > 0
    assert sum(d.meta["num_examples"][s] for s in ("train", "val", "test")) == 40
    assert next(d.train)["clips"].shape == (4, 4, 16, 16, 3)


@pytest.mark.parametrize("process_index", [0, 1])
def test_host0_prepares_the_data_before_the_other_hosts(tmp_path, process_index):
    """With a barrier, host 0 writes the synthetic tree and its TFRecords before it waits; every
    other host waits first and reads what host 0 wrote (shared storage) or prepares its own."""
    prepared_at_barrier = []

    def barrier():
        prepared_at_barrier.append(
            bool(glob.glob(f"{tmp_path}/**/tfds/**/*.tfrecord*", recursive=True))
        )

    d = build_datasets(
        _synthetic_cfg(tmp_path),
        global_batch_size=4,
        eval_batch_size=4,
        seed=0,
        process_index=process_index,
        process_count=2,
        barrier=barrier,
    )
    assert prepared_at_barrier == [process_index == 0]
    assert next(d.train)["clips"].shape == (2, 4, 16, 16, 3)


def test_a_failure_on_host0_still_releases_the_other_hosts(tmp_path):
    calls = []
    cfg = _cfg(str(tmp_path / "no_such_dfew"), str(tmp_path / "tfds"))
    with pytest.raises(Exception, match="no_such_dfew"):
        build_datasets(
            cfg,
            global_batch_size=2,
            eval_batch_size=2,
            seed=0,
            process_index=0,
            process_count=2,
            barrier=lambda: calls.append("barrier"),
        )
    assert calls == ["barrier"]
