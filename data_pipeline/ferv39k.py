"""FERV39k reader (official layout; see docs/datasets.md §2).

    <root>/2_ClipsforFaceCrop/<scenario>/<scene>/<class>/<clip>/   frames (or <clip>.mp4)
    <root>/4_setups/All_scenes/train_All.csv   (or <root>/All_scenes/, the authors' copy)
    <root>/4_setups/All_scenes/test_All.csv

Each line: "<path relative to 2_ClipsforFaceCrop> <ClassName>", space-separated, no header; we take
the second-to-last field as path and the last as class. Classes are stored in DFEW's order.
"""

from __future__ import annotations

import os

from data_pipeline import labels as labels_lib
from data_pipeline.errors import DataError, SkipReport, handle_bad_clip
from data_pipeline.records import ClipRecord, DatasetIndex
from data_pipeline.split_files import find_first, read_whitespace_rows, require_rows
from data_pipeline.video import VIDEO_EXTENSIONS

SPLIT_DIRS = ("4_setups/All_scenes", "All_scenes")
CLIP_DIRS = ("2_ClipsforFaceCrop", ".")
SPLIT_FILES = {"train": "train_All.csv", "test": "test_All.csv"}


def _media_for(clips_root: str, rel: str) -> tuple[str | None, str | None]:
    """(frames_dir, video_path) for a listed clip; both None when nothing is on disk."""
    path = os.path.join(clips_root, rel)
    if os.path.isdir(path):
        return path, None
    if os.path.isfile(path) and path.lower().endswith(VIDEO_EXTENSIONS):
        return None, path
    for ext in VIDEO_EXTENSIONS:
        if os.path.isfile(path + ext):
            return None, path + ext
    return None, None


def read_ferv39k(root: str, *, on_bad_clip: str = "skip") -> DatasetIndex:
    """Reads FERV39k's official train/test split into ClipRecords."""
    if not os.path.isdir(root):
        raise DataError(root, "FERV39k root folder is missing")
    split_dir = find_first(root, SPLIT_DIRS, "FERV39k split folder (All_scenes)", kind="dir")
    clips_root = find_first(root, CLIP_DIRS, "FERV39k clip folder", kind="dir")
    skipped, splits = SkipReport(), {}
    for split, filename in SPLIT_FILES.items():
        path = os.path.join(split_dir, filename)
        rows = read_whitespace_rows(path)
        require_rows(path, rows)
        records = []
        for line, row in rows:
            origin = f"{path}:{line}"
            if len(row) < 2:
                raise DataError(
                    origin, f"expected '<clip path> <ClassName>', got {' '.join(row)!r}"
                )
            rel, name = row[-2], row[-1]
            label = labels_lib.ferv39k_label(name)
            if label is None:
                raise DataError(
                    origin,
                    f"unknown label {name!r} (expected one of "
                    f"{', '.join(labels_lib.FERV39K_CLASSES)})",
                )
            rel = rel.strip("/")
            frames_dir, video = _media_for(clips_root, rel)
            if frames_dir is None and video is None:
                handle_bad_clip(
                    skipped,
                    on_bad_clip,
                    rel,
                    os.path.join(clips_root, rel),
                    f"frame folder or video is missing (listed at {origin})",
                )
                continue
            records.append(
                ClipRecord(rel, label, frames_dir=frames_dir, video_path=video, origin=origin)
            )
        splits[split] = records
    return DatasetIndex("ferv39k", labels_lib.FERV39K_CLASSES, splits, skipped, {})
