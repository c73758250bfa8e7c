"""Bad input gives a clear error naming the file, or a counted skip; nothing silently dropped."""

import os

import pytest

from data_pipeline import dfew, ferv39k, mafw, tfds_builders
from data_pipeline.clip_content import load_clip_jpegs
from data_pipeline.configs import get_data_config
from data_pipeline.errors import DataError
from data_pipeline.pipeline import build_datasets
from data_pipeline.video import decode_video, video_num_frames
from tests.data_fixtures import trees


def test_missing_frame_folder_is_counted_skip_or_error(tmp_path):
    root = trees.make_dfew(str(tmp_path))
    missing = os.path.join(root, "Clip", "clip_224x224_16f", "00003")
    for name in os.listdir(missing):
        os.remove(os.path.join(missing, name))
    os.rmdir(missing)
    index = dfew.read_dfew(root, 1)
    assert index.skipped.counts() == {"frame folder is missing": 1}
    ((clip_id, path, reason),) = index.skipped.entries
    assert clip_id == "00003" and path == missing and "frame folder is missing" in reason
    assert "00003" in index.skipped.summary()
    with pytest.raises(DataError, match="00003.*frame folder is missing"):
        dfew.read_dfew(root, 1, on_bad_clip="error")


def test_unknown_label_names_file_and_line(tmp_path):
    root = trees.make_dfew(str(tmp_path), extra_rows={("train", 1): ["12,9"]})
    with pytest.raises(DataError, match=r"set_1\.csv:\d+: unknown label 9"):
        dfew.read_dfew(root, 1)
    froot = trees.make_ferv39k(str(tmp_path / "ferv"))
    with open(os.path.join(froot, "4_setups/All_scenes/train_All.csv"), "a") as f:
        f.write("Daily/Office/Happy/0001 Confused\n")
    with pytest.raises(DataError, match=r"train_All\.csv:6: unknown label 'Confused'"):
        ferv39k.read_ferv39k(froot)
    mroot = trees.make_mafw(str(tmp_path / "mafw"))
    with open(os.path.join(mroot, "Train & Test Set/single/no_caption/set_1/test.txt"), "a") as f:
        f.write("00001.mp4 boredom\n")
    with pytest.raises(DataError, match=r"test\.txt:\d+: unknown label 'boredom'"):
        mafw.read_mafw(mroot, 1)


def test_empty_split_file(tmp_path):
    root = trees.make_dfew(str(tmp_path))
    path = os.path.join(root, "EmoLabel_DataSplit", "test(single-labeled)", "set_4.csv")
    with open(path, "w") as f:
        f.write("video_name,label\n")
    with pytest.raises(DataError, match=r"set_4\.csv: split file is empty"):
        dfew.read_dfew(root, 4)
    mroot = trees.make_mafw(str(tmp_path / "m"))
    open(os.path.join(mroot, "Train & Test Set/single/no_caption/set_2/train.txt"), "w").close()
    with pytest.raises(DataError, match=r"train\.txt: split file is empty"):
        mafw.read_mafw(mroot, 2)


def test_missing_split_folder_lists_alternatives(tmp_path):
    os.makedirs(tmp_path / "Clip" / "clip_224x224_16f")
    with pytest.raises(DataError, match="train\\(single-labeled\\).*train_single-labeled"):
        dfew.read_dfew(str(tmp_path), 1)


def _corrupt_jpeg(path, truncate):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2] if truncate else b"not a jpeg at all" * 3)


@pytest.mark.parametrize("truncate", [False, True])
def test_corrupt_or_truncated_jpeg(tmp_path, truncate):
    root = trees.make_dfew(str(tmp_path))
    bad = os.path.join(root, "Clip", "clip_224x224_16f", "00002", "3.jpg")
    _corrupt_jpeg(bad, truncate)
    record = next(r for r in dfew.read_dfew(root, 1).splits["train"] if r.clip_id == "00002")
    with pytest.raises(DataError, match=r"00002/3\.jpg: corrupt or truncated image"):
        load_clip_jpegs(record)


def test_corrupt_and_truncated_video(tmp_path):
    good = str(tmp_path / "good.mp4")
    trees.write_video(good, 8)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01 definitely not a video" * 50)
    with pytest.raises(DataError, match=r"garbage\.mp4: cannot open video"):
        decode_video(str(garbage))
    truncated = tmp_path / "truncated.mp4"
    data = open(good, "rb").read()
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match=r"truncated\.mp4: "):
        decode_video(str(truncated))
    with pytest.raises(DataError, match=r"missing\.avi: video file is missing"):
        video_num_frames(str(tmp_path / "missing.avi"))


def test_bad_clips_counted_at_end_of_tfds_preparation(tmp_path):
    root = trees.make_dfew(str(tmp_path / "dfew"))
    _corrupt_jpeg(os.path.join(root, "Clip", "clip_224x224_16f", "00002", "3.jpg"), True)
    empty = os.path.join(root, "Clip", "clip_224x224_16f", "00006")
    for name in os.listdir(empty):
        os.remove(os.path.join(empty, name))
    builder = tfds_builders.prepare("dfew", root, str(tmp_path / "tfds"), fold=1)
    report = tfds_builders.skipped_from_metadata(builder)
    reasons = {e[0]: e[2] for e in report["entries"]}
    assert set(reasons) == {"00002", "00006"}
    assert "corrupt or truncated image" in reasons["00002"]
    assert "no image files" in reasons["00006"]
    splits = builder.info.splits
    assert report["counts"] == {
        "corrupt or truncated image": 1,
        "frame folder holds no image files": 1,
    }
    assert sum(info.num_examples for info in splits.values()) == 10 - 2
    with pytest.raises(DataError, match="00002/3.jpg"):
        tfds_builders.prepare(
            "dfew", root, str(tmp_path / "tfds_strict"), fold=1, on_bad_clip="error"
        )


def test_short_clips_skip_policy_is_counted(tmp_path):
    root = trees.make_dfew(str(tmp_path / "dfew"), num_frames=6)
    short = os.path.join(root, "Clip", "clip_224x224_16f", "00004")
    for k in (4, 5, 6):
        os.remove(os.path.join(short, f"{k}.jpg"))
    cfg = get_data_config("dfew", flavor="reference")
    cfg.data_dir, cfg.tfds_data_dir, cfg.source = root, str(tmp_path / "tfds"), "files"
    cfg.num_frames, cfg.image_size, cfg.short_clip_policy = 4, 8, "skip"
    cfg.val_protocol = "test"
    d = build_datasets(cfg, global_batch_size=2, eval_batch_size=2, seed=0)
    # Clip 4 is in fold 5's test split; here fold 1: it is a training clip.
    assert d.meta["short_clips_skipped"]["train"] == 1
    assert d.meta["num_examples"]["train"] == 8 - 1
    cfg.short_clip_policy = "stretch"
    d = build_datasets(cfg, global_batch_size=2, eval_batch_size=2, seed=0)
    assert d.meta["num_examples"]["train"] == 8
    assert next(d.train)["clips"].shape == (2, 4, 8, 8, 3)
