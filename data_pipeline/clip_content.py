"""Loading a clip's frames for preparation: checked JPEG bytes from folders, decoded videos."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from data_pipeline.errors import DataError
from data_pipeline.frames import list_frames, read_checked_image
from data_pipeline.records import ClipRecord
from data_pipeline.video import decode_video, video_fps, video_num_frames


def encode_jpeg(frame: np.ndarray, quality: int = 95) -> bytes:
    """uint8 [H, W, 3] -> JPEG bytes."""
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def _segment(record: ClipRecord) -> np.ndarray | None:
    """The frame indices of a record's start_s..end_s segment (None: every frame)."""
    if record.start_s is None:
        return None
    path = str(record.video_path)
    n, fps = video_num_frames(path), video_fps(path)
    if fps is None:
        raise DataError(path, "the video gives no frame rate, so start_s/end_s cannot be placed")
    first, last = int(np.floor(record.start_s * fps)), min(n, int(np.ceil(record.end_s * fps)))
    if first >= last:
        raise DataError(
            path,
            f"segment {record.start_s}-{record.end_s} s holds no frames (the video has {n} "
            f"frames at {fps:.3g} fps; listed at {record.origin})",
        )
    return np.arange(first, last)


def load_clip_jpegs(
    record: ClipRecord, *, validate: bool = True, max_frames: int = 0
) -> list[bytes]:
    """Returns the clip's frames as JPEG bytes, in temporal order.

    Frame folders: files sorted numerically, each checked to decode fully (validate=True); PNGs are
    re-encoded as JPEG. Videos: all frames decoded with decord and encoded as JPEG.
    max_frames > 0 keeps that many frames spread uniformly over the clip (for long videos).
    Raises DataError naming the file for a missing/empty folder or a corrupt frame/video.
    """
    if record.frames_dir is not None:
        paths = list_frames(record.frames_dir)
        if max_frames and len(paths) > max_frames:
            keep = np.linspace(0, len(paths) - 1, max_frames).round().astype(int)
            paths = [paths[i] for i in keep]
        out = []
        for p in paths:
            data = read_checked_image(p, validate=validate)
            if not _is_jpeg(data):
                with Image.open(io.BytesIO(data)) as img:
                    data = encode_jpeg(np.asarray(img.convert("RGB")))
            out.append(data)
        return out
    if record.video_path is None:
        raise DataError(record.clip_id, "record has neither frames nor video")
    frames = decode_video(record.video_path, _segment(record))
    if max_frames and len(frames) > max_frames:
        frames = frames[np.linspace(0, len(frames) - 1, max_frames).round().astype(int)]
    return [encode_jpeg(f) for f in frames]
