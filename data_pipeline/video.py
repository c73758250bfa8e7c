"""Video decoding with decord, with errors that name the file.

decord raises a bare RuntimeError on a missing or corrupt file; every call here wraps it.
"""

from __future__ import annotations

import os

import decord
import numpy as np

from data_pipeline.errors import DataError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")


def _open(path: str):
    if not os.path.isfile(path):
        raise DataError(path, "video file is missing")
    if os.path.getsize(path) == 0:
        raise DataError(path, "video file is empty")
    try:
        return decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    except (RuntimeError, decord.DECORDError) as e:
        raise DataError(path, f"cannot open video, corrupt or unsupported ({e})") from e


def video_num_frames(path: str) -> int:
    """Number of frames decord reports for the file (from the container index)."""
    reader = _open(path)
    n = len(reader)
    if n <= 0:
        raise DataError(path, "video has no frames")
    return n


def video_fps(path: str) -> float | None:
    """Average frames per second of a video, or None when the file does not say (the rate is
    informative only: decoding errors surface in video_num_frames and decode_video)."""
    try:
        fps = float(_open(path).get_avg_fps())
    except Exception:  # DataError, decord's errors: the caller reports decoding failures itself
        return None
    return fps if fps > 0 else None


def decode_video(path: str, indices: np.ndarray | None = None) -> np.ndarray:
    """Decodes frames of a video.

    Args:
      path: video file.
      indices: int [T] frame indices to decode, or None for all frames.
    Returns:
      uint8 [T, H, W, 3] RGB frames.
    Raises:
      DataError naming the file when it is missing, corrupt or truncated.
    """
    reader = _open(path)
    n = len(reader)
    if n <= 0:
        raise DataError(path, "video has no frames")
    idx = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise DataError(path, f"frame index out of range (video has {n} frames)")
    try:
        frames = reader.get_batch(list(idx)).asnumpy()
    except (RuntimeError, decord.DECORDError, IndexError) as e:
        raise DataError(path, f"corrupt or truncated video, decoding failed ({e})") from e
    if frames.ndim != 4 or frames.shape[0] != len(idx) or frames.shape[-1] != 3:
        raise DataError(path, f"decoded frames have unexpected shape {frames.shape}")
    return frames
