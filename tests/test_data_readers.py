"""Readers of the official layouts: counts per fold/split, label orders, numeric frame order."""

import os

import numpy as np
import pytest

from data_pipeline import dfew, ferv39k, mafw
from data_pipeline.clip_content import load_clip_jpegs
from data_pipeline.frames import list_frames
from data_pipeline.labels import DFEW_CLASSES, MAFW_CLASSES
from tests.data_fixtures import trees


def _grey_levels(jpegs):
    import io

    from PIL import Image

    return [int(np.asarray(Image.open(io.BytesIO(b)))[4, 4, 0]) for b in jpegs]


@pytest.mark.parametrize("authors_names", [False, True])
def test_dfew_counts_and_labels_per_fold(tmp_path, authors_names):
    root = trees.make_dfew(str(tmp_path), authors_names=authors_names)
    for fold in range(1, 6):
        index = dfew.read_dfew(root, fold)
        test_ids = {r.clip_id for r in index.splits["test"]}
        assert test_ids == {f"{i:05d}" for i in trees.DFEW_LABELS if i % 5 == fold - 1}
        assert len(index.splits["train"]) + len(index.splits["test"]) == 10
        for r in index.splits["train"] + index.splits["test"]:
            # CSV labels 1..7 = Happy, Sad, Neutral, Angry, Surprise, Disgust, Fear -> 0..6
            assert r.label == trees.DFEW_LABELS[int(r.clip_id)] - 1
    assert index.class_names == DFEW_CLASSES
    assert len(index.skipped) == 0


def test_dfew_frame_versions(tmp_path):
    root = trees.make_dfew(str(tmp_path), num_frames=4, all_frames=12, videos=True)
    r16 = dfew.read_dfew(root, 1, frame_version="16f").splits["train"][0]
    rall = dfew.read_dfew(root, 1, frame_version="all").splits["train"][0]
    rvid = dfew.read_dfew(root, 1, frame_version="video").splits["train"][0]
    assert r16.frames_dir.endswith(os.path.join("clip_224x224_16f", r16.clip_id))
    assert len(load_clip_jpegs(r16)) == 4
    # 12 frames named 1..12: numeric order, not 1, 10, 11, 12, 2, ...
    assert _grey_levels(load_clip_jpegs(rall)) == [trees.frame_value(k) for k in range(1, 13)]
    assert rvid.video_path.endswith(".mp4")
    levels = _grey_levels(load_clip_jpegs(rvid))
    assert len(levels) == 12 and levels == sorted(levels)


def test_dfew_jpg_256_alias_and_label_zero_excluded(tmp_path):
    root = trees.make_dfew(str(tmp_path), extra_rows={("train", 2): ["11,0"]})
    os.rename(os.path.join(root, "Clip", "clip_224x224"), os.path.join(root, "Clip", "jpg_256"))
    index = dfew.read_dfew(root, 2, frame_version="all")
    assert index.excluded == {"train": 1, "test": 0}
    assert "11" not in {r.clip_id for r in index.splits["train"]}


def test_list_frames_numeric_order(tmp_path):
    folder = tmp_path / "clip"
    trees.write_frames(str(folder), 11)
    names = [os.path.basename(p) for p in list_frames(str(folder))]
    assert names == [f"{k}.jpg" for k in range(1, 12)]


@pytest.mark.parametrize("authors_names", [False, True])
def test_ferv39k_splits_and_dfew_label_order(tmp_path, authors_names):
    root = trees.make_ferv39k(
        str(tmp_path), authors_names=authors_names, video_clip="Drama/Home/Fear/0004"
    )
    index = ferv39k.read_ferv39k(root)
    assert len(index.splits["train"]) == 5 and len(index.splits["test"]) == 2
    for r in index.splits["train"] + index.splits["test"]:
        assert index.class_names[r.label] == trees.FERV_CLIPS[r.clip_id]
    assert index.class_names == DFEW_CLASSES  # DFEW's order, not alphabetical
    fear = next(r for r in index.splits["train"] if r.clip_id.endswith("0004"))
    assert fear.video_path is not None and len(load_clip_jpegs(fear)) == 8
    happy = next(r for r in index.splits["train"] if r.clip_id.endswith("0001"))
    assert _grey_levels(load_clip_jpegs(happy)) == [trees.frame_value(k) for k in range(1, 9)]


@pytest.mark.parametrize("layout", ["official", "authors", "maedfer"])
def test_mafw_layouts_labels_and_videos(tmp_path, layout):
    kwargs = {
        "official": {},
        "authors": dict(
            split_subdir="label/no_caption", frames_subdir="frames", videos_subdir="clips"
        ),
        "maedfer": dict(split_subdir="split/single/no_caption"),
    }[layout]
    root = trees.make_mafw(str(tmp_path), video_only=("00003",), **kwargs)
    total = 0
    for fold in range(1, 6):
        index = mafw.read_mafw(root, fold)
        total += len(index.splits["test"])
        assert len(index.splits["train"]) + len(index.splits["test"]) == 11
    assert total == 11  # every clip is tested in exactly one fold
    assert index.class_names == MAFW_CLASSES
    all_records = index.splits["train"] + index.splits["test"]
    for r in all_records:
        assert MAFW_CLASSES[r.label] == trees.MAFW_CLIPS[r.clip_id]
    fear = next(r for r in all_records if r.clip_id == "00003")
    assert fear.video_path is not None and fear.frames_dir is None
    assert len(load_clip_jpegs(fear)) == 6
