"""Where clips come from: prepared TFDS TFRecords (default) or the raw tree read directly.

Both give, per split and host, a tf.data.Dataset of raw clips with one element schema:
  frames     string [n]  encoded JPEGs (TFDS) or frame file paths (files source)
  is_path    bool        True when `frames` holds paths
  video      string      video file path ("" for frame clips); decoded with decord on the fly
  num_frames int32       n (the video's frame count for videos)
  label      int32
  clip_id    string
Host sharding is contiguous and even (the first n % P hosts get one clip more), the same rule as
`tfds.even_splits`, so clip positions are globally unique: host p's clips start at `offset`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from data_pipeline import datasets
from data_pipeline.errors import DataError, SkipReport, handle_bad_clip
from data_pipeline.frames import list_frames, read_checked_image
from data_pipeline.records import ClipRecord, DatasetIndex
from data_pipeline.splits import stratified_split
from data_pipeline.video import decode_video, video_num_frames

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SplitSource:
    """Raw clips of one split for one host."""

    make: Callable[[], tf.data.Dataset]
    host_counts: list[int]  # clips per host, all hosts (before any short-clip filtering)
    process_index: int
    frame_counts: Callable[[], list[int]] | None = None  # all clips' n, for the "skip" policy

    @property
    def num_examples(self) -> int:
        return self.host_counts[self.process_index]

    @property
    def offset(self) -> int:
        return sum(self.host_counts[: self.process_index])

    @property
    def total(self) -> int:
        return sum(self.host_counts)


def even_counts(n: int, process_count: int) -> list[int]:
    return [n // process_count + (1 if p < n % process_count else 0) for p in range(process_count)]


# ---------------------------------------------------------------- TFDS
def tfds_split_sources(
    builder: tfds.core.DatasetBuilder,
    split_specs: dict[str, str],
    *,
    process_index: int,
    process_count: int,
) -> dict[str, SplitSource]:
    """split_specs maps our names ("train", "val", "test") to TFDS split strings ("train+val")."""
    read_config = tfds.ReadConfig(try_autocache=False, shuffle_seed=0)
    out = {}
    for name, spec in split_specs.items():
        subs = [
            tfds.split_for_jax_process(spec, process_index=p, process_count=process_count)
            for p in range(process_count)
        ]
        counts = [builder.info.splits[s].num_examples for s in subs]

        def make(sub=subs[process_index]) -> tf.data.Dataset:
            ds = builder.as_dataset(
                split=sub,
                shuffle_files=False,
                read_config=read_config,
                decoders={"frames": tfds.decode.SkipDecoding()},
            )
            return ds.map(
                lambda x: {
                    "frames": x["frames"],
                    "is_path": tf.constant(False),
                    "video": tf.constant(""),
                    "num_frames": tf.cast(x["num_frames"], tf.int32),
                    "label": tf.cast(x["label"], tf.int32),
                    "clip_id": x["clip_id"],
                }
            )

        def frame_counts(spec=spec) -> list[int]:
            ds = builder.as_dataset(
                split=spec,
                shuffle_files=False,
                read_config=read_config,
                decoders={"frames": tfds.decode.SkipDecoding()},
            )
            return [int(n) for n in ds.map(lambda x: x["num_frames"]).as_numpy_iterator()]

        out[name] = SplitSource(make, counts, process_index, frame_counts)
    return out


# ---------------------------------------------------------------- raw tree
def read_index(
    dataset: str,
    root: str,
    *,
    fold: int,
    frame_version: str,
    prefer: str,
    on_bad_clip: str,
    custom_options: dict | None = None,
) -> DatasetIndex:
    """The clips of one fold, read by the dataset's reader (datasets.py); `custom_options`
    (classes, test_fraction, split_seed) for "custom"."""
    options = dict(
        frame_version=frame_version,
        prefer=prefer,
        on_bad_clip=on_bad_clip,
        custom_options=custom_options,
    )
    return datasets.get(dataset).reader(root, fold, options)


@dataclasses.dataclass(frozen=True)
class _CheckedClip:
    record: ClipRecord
    frame_paths: tuple[str, ...]
    num_frames: int


def check_clip(record: ClipRecord, *, validate: bool) -> _CheckedClip:
    """Lists (and optionally validates) a clip's frames, or probes its video.

    Raises DataError naming the file when the clip cannot be used.
    """
    if record.start_s is not None:
        raise DataError(
            record.path,
            "start_s,end_s segments are read from prepared TFRecords (data.source=tfds)",
        )
    if record.frames_dir is not None:
        paths = list_frames(record.frames_dir)
        if validate:
            for p in paths:
                read_checked_image(p)
        return _CheckedClip(record, tuple(paths), len(paths))
    n = video_num_frames(str(record.video_path))
    if validate:
        decode_video(str(record.video_path), [0, n - 1])  # a truncated file fails at its end
    return _CheckedClip(record, (), n)


def check_records(
    records: Sequence[ClipRecord], *, validate: bool, on_bad_clip: str, report: SkipReport
) -> list[_CheckedClip]:
    out = []
    for r in records:
        try:
            out.append(check_clip(r, validate=validate))
        except DataError as e:
            handle_bad_clip(report, on_bad_clip, r.clip_id, e.path, e.problem)
    return out


def _records_dataset(clips: Sequence[_CheckedClip]) -> tf.data.Dataset:
    frames = (
        tf.ragged.constant([list(c.frame_paths) for c in clips], dtype=tf.string, ragged_rank=1)
        if clips
        else tf.ragged.constant([[""]])[:0]
    )
    return tf.data.Dataset.from_tensor_slices(
        {
            "frames": frames,
            "is_path": tf.constant([True] * len(clips), tf.bool),
            "video": tf.constant([c.record.video_path or "" for c in clips], tf.string),
            "num_frames": tf.constant([c.num_frames for c in clips], tf.int32),
            "label": tf.constant([c.record.label for c in clips], tf.int32),
            "clip_id": tf.constant([c.record.clip_id for c in clips], tf.string),
        }
    )


def file_split_sources(
    index: DatasetIndex,
    *,
    val_fraction: float,
    split_seed: int,
    val_protocol: str,
    validate: bool,
    on_bad_clip: str,
    process_index: int,
    process_count: int,
) -> tuple[dict[str, SplitSource], SkipReport]:
    """Sources that read the raw tree directly (no preparation; checks run on every build)."""
    report = SkipReport()
    report.extend(index.skipped)
    train, val = stratified_split(index.splits["train"], val_fraction, split_seed)
    if val_protocol == "test":
        train, val = index.splits["train"], index.splits["test"]
    lists = {"train": train, "val": val, "test": index.splits["test"]}
    checked = {
        name: check_records(recs, validate=validate, on_bad_clip=on_bad_clip, report=report)
        for name, recs in lists.items()
    }
    if val_protocol == "test":
        checked["val"] = checked["test"]
    out = {}
    for name, clips in checked.items():
        counts = even_counts(len(clips), process_count)
        start = sum(counts[:process_index])
        mine = clips[start : start + counts[process_index]]
        out[name] = SplitSource(
            lambda mine=mine: _records_dataset(mine),
            counts,
            process_index,
            lambda clips=clips: [c.num_frames for c in clips],
        )
    return out, report


def _decode_video_np(path: bytes, indices) -> np.ndarray:
    return decode_video(path.decode(), indices)


def decode_frames(elem: dict, indices: tf.Tensor) -> tf.Tensor:
    """Decodes the frames at `indices` (int32 [K]) of a raw clip -> uint8 [K, h, w, 3].

    Frames of one clip are brought to the first frame's size if they differ (rare re-encodes).
    """

    def from_list():
        items = tf.gather(elem["frames"], indices)
        data = tf.cond(
            elem["is_path"],
            lambda: tf.map_fn(tf.io.read_file, items, fn_output_signature=tf.string),
            lambda: items,
        )
        first = tf.io.decode_image(data[0], channels=3, expand_animations=False)
        size = tf.shape(first)[:2]

        def one(b):
            img = tf.io.decode_image(b, channels=3, expand_animations=False)
            img.set_shape([None, None, 3])
            same = tf.reduce_all(tf.equal(tf.shape(img)[:2], size))
            return tf.cond(same, lambda: img, lambda: tf.cast(tf.image.resize(img, size), tf.uint8))

        return tf.map_fn(one, data, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))

    def from_video():
        frames = tf.numpy_function(
            _decode_video_np, [elem["video"], indices], tf.uint8, stateful=False
        )
        return tf.ensure_shape(frames, [None, None, None, 3])

    out = tf.cond(tf.strings.length(elem["video"]) > 0, from_video, from_list)
    return tf.ensure_shape(out, [None, None, None, 3])
