"""Your own videos: a CSV or a folder per class, read into the same ClipRecords as the benchmarks.

Two layouts, named by `--config.data_dir`:

  clips.csv    rows `path,label[,split][,start_s,end_s]`, paths relative to the CSV's folder (a
               video file or a folder of numbered frames); an optional header row starting with
               `path`; split is `train` or `test`, or empty/absent (then a stratified, seeded
               split of the rows without one, `test_fraction` of each class, goes to test);
               start_s,end_s (seconds) take a segment of a video, so one video can give several
               clips (prepared into TFRecords: the default `source="tfds"`).
  root/        `root/<label>/<clip>`: every video or frame folder under a class folder; no split
               (the stratified split above).

Class names are the labels found, sorted, unless `classes` lists them (its order is the label
order). Bad input is named: a malformed row or an unknown label raises a DataError naming
`<csv>:<line>`; a listed class without clips raises one naming the class; a missing or
undecodable clip is a counted skip (or a DataError with on_bad_clip="error") naming the file and
the row.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
from collections.abc import Sequence

from data_pipeline.errors import DataError, SkipReport, handle_bad_clip
from data_pipeline.frames import FRAME_EXTENSIONS
from data_pipeline.records import ClipRecord, DatasetIndex
from data_pipeline.splits import stratified_split
from data_pipeline.video import VIDEO_EXTENSIONS

SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class _Row:
    rel: str  # path as written, relative to the CSV's folder or the root
    label: str
    split: str  # "train", "test" or "" (split by the stratified rule)
    origin: str  # "<csv>:<line>" or the clip's path
    start_s: float | None = None  # a segment of a video, in seconds
    end_s: float | None = None

    @property
    def clip_id(self) -> str:
        # Segments of one video are distinct clips (TFRecord keys must be unique).
        return self.rel if self.start_s is None else f"{self.rel}@{self.start_s:g}-{self.end_s:g}"


def parse_classes(classes: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """`--config.data.classes`: a comma-separated string (or a sequence) of class names."""
    if classes is None or classes == "":
        return None
    names = classes.split(",") if isinstance(classes, str) else list(classes)
    names = tuple(n.strip() for n in names if n.strip())
    if len(set(names)) != len(names):
        raise ValueError(f"data.classes lists a class twice: {', '.join(names)}")
    return names or None


def _parse_row(cells: list[str], origin: str) -> _Row:
    """One CSV row: path,label[,split][,start_s,end_s]."""
    if len(cells) not in (2, 3, 4, 5) or not cells[0] or not cells[1]:
        raise DataError(
            origin,
            f"expected 'path,label[,split][,start_s,end_s]', got {','.join(cells)!r} "
            "(malformed row)",
        )
    split = cells[2].lower() if len(cells) in (3, 5) else ""
    if split not in ("", *SPLITS):
        raise DataError(origin, f"split must be train or test (or empty), got {split!r}")
    if len(cells) < 4:
        return _Row(cells[0], cells[1], split, origin)
    try:
        start, end = float(cells[-2]), float(cells[-1])
    except ValueError:
        raise DataError(
            origin, f"start_s,end_s must be seconds, got {cells[-2]!r},{cells[-1]!r}"
        ) from None
    if not 0 <= start < end:
        raise DataError(origin, f"start_s,end_s must satisfy 0 <= start < end, got {start},{end}")
    return _Row(cells[0], cells[1], split, origin, start, end)


def _csv_rows(path: str) -> list[_Row]:
    rows = []
    with open(path, newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            cells = [c.strip() for c in row]
            if not any(cells) or cells[0].startswith("#"):
                continue
            if line == 1 and cells[0].lower() == "path":
                continue  # header
            origin = f"{path}:{line}"
            rows.append(_parse_row(cells, origin))
    if not rows:
        raise DataError(path, "the CSV lists no clips (expected rows 'path,label[,split]')")
    return rows


def _is_clip(path: str) -> bool:
    if os.path.isdir(path):
        return True
    return os.path.isfile(path) and path.lower().endswith(VIDEO_EXTENSIONS)


def _folder_rows(root: str) -> list[_Row]:
    rows = []
    for label in sorted(os.listdir(root)):
        class_dir = os.path.join(root, label)
        if not os.path.isdir(class_dir) or label.startswith("."):
            continue
        for name in sorted(os.listdir(class_dir)):
            path = os.path.join(class_dir, name)
            if name.startswith(".") or name.lower().endswith(FRAME_EXTENSIONS):
                continue
            if _is_clip(path):
                rows.append(_Row(os.path.join(label, name), label, "", path))
    if not rows:
        raise DataError(root, "no clips found: expected <root>/<label>/<video or frame folder>")
    return rows


def read_rows(data_dir: str) -> tuple[str, list[_Row]]:
    """(the folder clip paths are relative to, the rows) of a CSV or a folder-per-class root."""
    if os.path.isfile(data_dir):
        return os.path.dirname(os.path.abspath(data_dir)), _csv_rows(data_dir)
    if os.path.isdir(data_dir):
        return data_dir, _folder_rows(data_dir)
    raise DataError(data_dir, "custom data_dir is neither a CSV file nor a folder")


def class_names(data_dir: str, classes: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """The class names of a custom dataset: `classes` when given, else its labels sorted."""
    return parse_classes(classes) or tuple(sorted({r.label for r in read_rows(data_dir)[1]}))


def fingerprint(data_dir: str, classes: tuple[str, ...]) -> str:
    """A short hash of what the dataset lists (rows and classes), naming its prepared TFRecords:
    an edited CSV or folder is prepared again, the same one is reused."""
    _, rows = read_rows(data_dir)
    text = "\n".join(f"{r.clip_id}|{r.label}|{r.split}" for r in rows) + "\n" + ",".join(classes)
    text = os.path.abspath(data_dir) + "\n" + text
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def read_custom(
    data_dir: str,
    *,
    classes: str | Sequence[str] | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    on_bad_clip: str = "skip",
) -> DatasetIndex:
    """Reads a custom dataset into train/test ClipRecords (see the module docstring)."""
    base, rows = read_rows(data_dir)
    names = parse_classes(classes) or tuple(sorted({r.label for r in rows}))
    lookup = {n: i for i, n in enumerate(names)}
    skipped, unsplit, splits = SkipReport(), [], {"train": [], "test": []}
    for row in rows:
        if row.label not in lookup:
            raise DataError(
                row.origin, f"unknown label {row.label!r} (classes: {', '.join(names)})"
            )
        path = row.rel if os.path.isabs(row.rel) else os.path.join(base, row.rel)
        if not _is_clip(path):
            reason = f"video or frame folder is missing (listed at {row.origin})"
            handle_bad_clip(skipped, on_bad_clip, row.clip_id, path, reason)
            continue
        frames_dir, video = (path, None) if os.path.isdir(path) else (None, path)
        if frames_dir is not None and row.start_s is not None:
            raise DataError(row.origin, f"start_s,end_s apply to videos; {path} is a frame folder")
        record = ClipRecord(
            row.clip_id,
            lookup[row.label],
            frames_dir=frames_dir,
            video_path=video,
            origin=row.origin,
            start_s=row.start_s,
            end_s=row.end_s,
        )
        (splits[row.split] if row.split else unsplit).append(record)
    present = {r.label for recs in (*splits.values(), unsplit) for r in recs}
    empty = [n for i, n in enumerate(names) if i not in present]
    if empty:
        raise DataError(data_dir, f"class(es) {', '.join(empty)} have no usable clips")
    rest, test = stratified_split(unsplit, test_fraction, split_seed)
    splits["train"] += rest
    splits["test"] += test
    if not splits["test"]:
        raise DataError(data_dir, "the test split is empty: add rows with split 'test' or clips")
    return DatasetIndex("custom", names, splits, skipped, {})
