"""MAFW reader, single-label 11-class protocol (see docs/datasets.md §3).

    <root>/data/frames/<name>/       extracted frames (preferred when present)
    <root>/data/clips/<name>.mp4     videos (decoded with decord otherwise)
    <root>/Train & Test Set/single/no_caption/set_<k>/{train,test}.txt

Alternatives detected: the authors' `frames/` + `label/no_caption/`, MAE-DFER's
`split/single/no_caption/`, and `clips/`. Each line: "<name>.mp4 <label>", where label is a class
name (anger, ..., disappointment) or an integer 1..11 in that order.
"""

from __future__ import annotations

import os

from data_pipeline import labels as labels_lib
from data_pipeline.errors import DataError, SkipReport, handle_bad_clip
from data_pipeline.records import ClipRecord, DatasetIndex
from data_pipeline.split_files import find_first, read_whitespace_rows, require_rows
from data_pipeline.video import VIDEO_EXTENSIONS

NUM_FOLDS = 5
SPLIT_DIRS = (
    "Train & Test Set/single/no_caption",
    "label/no_caption",
    "split/single/no_caption",
    "single/no_caption",
)
FRAME_DIRS = ("data/frames", "frames")
VIDEO_DIRS = ("data/clips", "clips")


def _label(raw: str, origin: str) -> int:
    names = {c: i for i, c in enumerate(labels_lib.MAFW_CLASSES)}
    if raw.lower() in names:
        return names[raw.lower()]
    if raw.isdigit() and 1 <= int(raw) <= len(names):
        return int(raw) - 1
    raise DataError(
        origin,
        f"unknown label {raw!r} (expected a class name "
        f"{'/'.join(labels_lib.MAFW_CLASSES)} or 1..{len(names)})",
    )


def _optional_dir(root: str, explicit: str | None, candidates: tuple[str, ...]) -> str | None:
    if explicit:
        path = os.path.join(root, explicit)
        return path if os.path.isdir(path) else None
    for rel in candidates:
        if os.path.isdir(os.path.join(root, rel)):
            return os.path.join(root, rel)
    return None


def read_mafw(
    root: str,
    fold: int,
    *,
    split_subdir: str | None = None,
    frames_subdir: str | None = None,
    videos_subdir: str | None = None,
    prefer: str = "frames",
    on_bad_clip: str = "skip",
) -> DatasetIndex:
    """Reads fold `fold` (1..5) of MAFW into ClipRecords for "train" and "test".

    The sub-paths default to the official ones, then the common alternatives; pass them to override.
    prefer: "frames" uses the frame folder when it exists and falls back to the video; "video" the
    reverse.
    """
    if not 1 <= fold <= NUM_FOLDS:
        raise ValueError(f"MAFW fold must be 1..{NUM_FOLDS}, got {fold}")
    if not os.path.isdir(root):
        raise DataError(root, "MAFW root folder is missing")
    split_root = find_first(
        root, (split_subdir,) if split_subdir else SPLIT_DIRS, "MAFW split folder", kind="dir"
    )
    frames_root = _optional_dir(root, frames_subdir, FRAME_DIRS)
    videos_root = _optional_dir(root, videos_subdir, VIDEO_DIRS)
    if frames_root is None and videos_root is None:
        raise DataError(
            root,
            f"MAFW has neither a frame folder ({', '.join(FRAME_DIRS)}) nor a "
            f"video folder ({', '.join(VIDEO_DIRS)})",
        )
    skipped, splits = SkipReport(), {}
    for split in ("train", "test"):
        path = os.path.join(split_root, f"set_{fold}", f"{split}.txt")
        rows = read_whitespace_rows(path)
        require_rows(path, rows)
        records = []
        for line, row in rows:
            origin = f"{path}:{line}"
            if len(row) < 2:
                raise DataError(origin, f"expected '<name>.mp4 <label>', got {' '.join(row)!r}")
            filename, label = row[-2], _label(row[-1], origin)
            stem = (
                os.path.splitext(filename)[0]
                if filename.lower().endswith(VIDEO_EXTENSIONS)
                else filename
            )
            frames_dir = os.path.join(frames_root, stem) if frames_root else None
            if frames_dir is not None and not os.path.isdir(frames_dir):
                frames_dir = None
            video = None
            if videos_root:
                for cand in (filename, *(stem + e for e in VIDEO_EXTENSIONS)):
                    if os.path.isfile(os.path.join(videos_root, cand)):
                        video = os.path.join(videos_root, cand)
                        break
            if frames_dir is None and video is None:
                where = os.path.join(frames_root or videos_root, stem)
                handle_bad_clip(
                    skipped,
                    on_bad_clip,
                    stem,
                    where,
                    f"frame folder or video is missing (listed at {origin})",
                )
                continue
            use_video = video is not None and (prefer == "video" or frames_dir is None)
            records.append(
                ClipRecord(
                    stem,
                    label,
                    frames_dir=None if use_video else frames_dir,
                    video_path=video if use_video else None,
                    origin=origin,
                )
            )
        splits[split] = records
    return DatasetIndex("mafw", labels_lib.MAFW_CLASSES, splits, skipped, {})
