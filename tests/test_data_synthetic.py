"""The synthetic diluted-dynamics dataset: DFEW layout, options, reuse."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from data_pipeline import dfew, make_synthetic
from data_pipeline.synthetic import SyntheticOptions, class_counts, ensure_synthetic_dataset


def test_cli_writes_dfew_layout_read_unchanged(tmp_path):
    out = str(tmp_path / "syn")
    make_synthetic.main(
        ["--out", out, "--num_clips", "21", "--seed", "1", "--frames", "8", "--size", "32"]
    )
    clips = set()
    for fold in range(1, 6):
        index = dfew.read_dfew(out, fold)  # the reader, unchanged
        assert len(index.skipped) == 0
        test_ids = {r.clip_id for r in index.splits["test"]}
        assert not test_ids & {r.clip_id for r in index.splits["train"]}
        assert len(test_ids) + len(index.splits["train"]) == 21
        clips |= test_ids
    assert len(clips) == 21  # the 5 test folds partition the clips
    folder = os.path.join(out, "Clip", "clip_224x224_16f", "00001")
    assert sorted(os.listdir(folder), key=lambda n: int(n[:-4])) == [
        f"{k}.jpg" for k in range(1, 9)
    ]
    assert Image.open(os.path.join(folder, "1.jpg")).size == (32, 32)
    with open(os.path.join(out, "EmoLabel_DataSplit", "train(single-labeled)", "set_1.csv")) as f:
        assert f.readline().strip() == "video_name,label"


def test_deterministic_and_event_changes_frames(tmp_path):
    opts = SyntheticOptions(
        num_clips=7, num_frames=8, size=32, seed=3, event_frames=2, imbalance="none"
    )
    a = ensure_synthetic_dataset(str(tmp_path / "a"), opts)
    b = ensure_synthetic_dataset(str(tmp_path / "b"), opts)

    def frame(root, k):
        path = os.path.join(root, "Clip", "clip_224x224_16f", "00002", f"{k}.jpg")
        return np.asarray(Image.open(path), np.float32)

    assert np.array_equal(frame(a, 1), frame(b, 1))
    meta = json.load(open(os.path.join(a, "synthetic_meta.json")))
    assert sorted(c["true_label"] for c in meta["clips"]) == list(range(7))  # balanced
    assert all(0 <= c["event_start"] <= 8 - 2 for c in meta["clips"])
    # Reuse: the same options return the same folder without regenerating.
    mtime = os.path.getmtime(os.path.join(a, "synthetic_meta.json"))
    assert ensure_synthetic_dataset(str(tmp_path / "a"), opts) == a
    assert os.path.getmtime(os.path.join(a, "synthetic_meta.json")) == mtime


def test_imbalance_and_label_noise(tmp_path):
    counts = class_counts(300, "dfew")
    assert counts.sum() == 300 and counts[5] == counts.min() and counts[0] > 4 * counts[5]
    opts = SyntheticOptions(num_clips=70, num_frames=4, size=16, label_noise=0.5, seed=0)
    root = ensure_synthetic_dataset(str(tmp_path), opts)
    meta = json.load(open(os.path.join(root, "synthetic_meta.json")))
    flipped = sum(c["true_label"] != c["csv_label"] for c in meta["clips"])
    assert 15 < flipped < 55
    index = dfew.read_dfew(root, 1)
    csv_labels = {f"{c['video_name']:05d}": c["csv_label"] for c in meta["clips"]}
    assert all(r.label == csv_labels[r.clip_id] for r in index.splits["train"])


def test_invalid_options():
    with pytest.raises(ValueError, match="event_frames"):
        SyntheticOptions(num_frames=4, event_frames=5).validate()
