"""DFEW reader (official layout; see docs/datasets.md §1).

    <root>/Clip/clip_224x224_16f/<05d>/1.jpg ...     frame_version "16f"
    <root>/Clip/clip_224x224/<05d>/ (or jpg_256)      frame_version "all"
    <root>/Clip/original/<id>.mp4|.avi                frame_version "video"
    <root>/EmoLabel_DataSplit/train(single-labeled)/set_<k>.csv   (or train_single-labeled)
    <root>/EmoLabel_DataSplit/test(single-labeled)/set_<k>.csv

CSV rows give the integer clip id and a label 1..7 (Happy, Sad, Neutral, Angry, Surprise, Disgust,
Fear), stored as 0..6. Label 0 marks non-single-label clips: excluded and counted, as in every
published protocol.
"""

from __future__ import annotations

import os

from data_pipeline import labels as labels_lib
from data_pipeline.errors import DataError, SkipReport, handle_bad_clip
from data_pipeline.records import ClipRecord, DatasetIndex
from data_pipeline.split_files import find_first, read_csv_rows, require_rows
from data_pipeline.video import VIDEO_EXTENSIONS

NUM_FOLDS = 5
FRAME_DIRS = {
    "16f": ("Clip/clip_224x224_16f", "clip_224x224_16f"),
    "all": ("Clip/clip_224x224", "Clip/jpg_256", "clip_224x224", "jpg_256"),
    "video": ("Clip/original", "original"),
}
SPLIT_DIRS = {
    "train": (
        "EmoLabel_DataSplit/train(single-labeled)",
        "EmoLabel_DataSplit/train_single-labeled",
    ),
    "test": ("EmoLabel_DataSplit/test(single-labeled)", "EmoLabel_DataSplit/test_single-labeled"),
}


def _columns(header: list[str]) -> tuple[int, int]:
    """Column indices of (clip id, label): named columns if present, else the last two."""
    lower = [h.lower() for h in header]
    if "video_name" in lower and "label" in lower:
        return lower.index("video_name"), lower.index("label")
    return len(header) - 2, len(header) - 1


def _is_header(row: list[str]) -> bool:
    return not row[-1].lstrip("-").isdigit()


def _video_lookup(video_dir: str) -> dict[int, str]:
    lookup = {}
    for name in os.listdir(video_dir):
        stem, ext = os.path.splitext(name)
        if ext.lower() in VIDEO_EXTENSIONS and stem.isdigit():
            lookup[int(stem)] = os.path.join(video_dir, name)
    return lookup


def read_split_file(path: str) -> tuple[list[tuple[int, int, str]], int]:
    """Parses one DFEW split CSV.

    Returns ([(clip id, class index 0..6, origin)], number of label-0 rows excluded).
    Raises DataError for an empty file, a bad id or an unknown label (naming file and line).
    """
    rows = read_csv_rows(path)
    id_col, label_col = -2, -1
    if rows and _is_header(rows[0][1]):
        id_col, label_col = _columns(rows[0][1])
        rows = rows[1:]
    require_rows(path, rows)
    out, excluded = [], 0
    for line, row in rows:
        origin = f"{path}:{line}"
        if len(row) < 2:
            raise DataError(origin, f"expected 'video_name,label', got {row!r}")
        raw_id, raw_label = row[id_col], row[label_col]
        try:
            clip_id = int(raw_id)
        except ValueError:
            raise DataError(origin, f"clip id {raw_id!r} is not an integer") from None
        try:
            label = int(raw_label)
        except ValueError:
            raise DataError(origin, f"unknown label {raw_label!r} (expected 0..7)") from None
        if label == 0:
            excluded += 1  # non-single-label clip; excluded by the protocol
            continue
        if not 1 <= label <= 7:
            raise DataError(
                origin, f"unknown label {label} (expected 1..7, or 0 for non-single-label)"
            )
        out.append((clip_id, label - 1, origin))
    return out, excluded


def read_dfew(
    root: str, fold: int, *, frame_version: str = "16f", on_bad_clip: str = "skip"
) -> DatasetIndex:
    """Reads fold `fold` (1..5) of DFEW into ClipRecords for "train" and "test".

    A listed clip whose frame folder or video is missing is a counted skip (on_bad_clip="skip")
    or a DataError (on_bad_clip="error").
    """
    if not 1 <= fold <= NUM_FOLDS:
        raise ValueError(f"DFEW fold must be 1..{NUM_FOLDS}, got {fold}")
    if frame_version not in FRAME_DIRS:
        raise ValueError(
            f"frame_version must be one of {sorted(FRAME_DIRS)}, got {frame_version!r}"
        )
    if not os.path.isdir(root):
        raise DataError(root, "DFEW root folder is missing")
    media_dir = find_first(
        root, FRAME_DIRS[frame_version], f"DFEW {frame_version} clip folder", kind="dir"
    )
    videos = _video_lookup(media_dir) if frame_version == "video" else None
    skipped, splits, excluded = SkipReport(), {}, {}
    for split, candidates in SPLIT_DIRS.items():
        split_dir = find_first(root, candidates, f"DFEW {split} split folder", kind="dir")
        path = os.path.join(split_dir, f"set_{fold}.csv")
        entries, excluded[split] = read_split_file(path)
        records = []
        for clip_id, label, origin in entries:
            name = f"{clip_id:05d}"
            if videos is not None:
                video = videos.get(clip_id)
                if video is None:
                    handle_bad_clip(
                        skipped,
                        on_bad_clip,
                        name,
                        os.path.join(media_dir, name + ".mp4"),
                        f"video file is missing (listed at {origin})",
                    )
                    continue
                records.append(ClipRecord(name, label, video_path=video, origin=origin))
            else:
                frames_dir = os.path.join(media_dir, name)
                if not os.path.isdir(frames_dir):
                    handle_bad_clip(
                        skipped,
                        on_bad_clip,
                        name,
                        frames_dir,
                        f"frame folder is missing (listed at {origin})",
                    )
                    continue
                records.append(ClipRecord(name, label, frames_dir=frames_dir, origin=origin))
        splits[split] = records
    return DatasetIndex("dfew", labels_lib.DFEW_CLASSES, splits, skipped, excluded)
