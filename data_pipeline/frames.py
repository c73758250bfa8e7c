"""Frame folders: numeric ordering and JPEG validation."""

from __future__ import annotations

import io
import os
import re

from PIL import Image

from data_pipeline.errors import DataError

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
_NUMBER = re.compile(r"(\d+)")


def frame_sort_key(name: str) -> tuple[int, str]:
    """Sorts '2.jpg' before '10.jpg' (numbers in the stem compare as integers, last one wins)."""
    stem = os.path.splitext(name)[0]
    numbers = _NUMBER.findall(stem)
    if not numbers:
        # Files without a number go after the numbered ones, in name order.
        return (1 << 62, stem)
    return (int(numbers[-1]), stem)


def list_frames(frames_dir: str) -> list[str]:
    """Returns the image files of a frame folder, sorted numerically (full paths).

    Raises DataError when the folder is missing or holds no image files.
    """
    if not os.path.isdir(frames_dir):
        raise DataError(frames_dir, "frame folder is missing")
    names = [n for n in os.listdir(frames_dir) if n.lower().endswith(FRAME_EXTENSIONS)]
    if not names:
        raise DataError(frames_dir, "frame folder holds no image files")
    names.sort(key=frame_sort_key)
    return [os.path.join(frames_dir, n) for n in names]


def read_checked_image(path: str, *, validate: bool = True) -> bytes:
    """Returns the encoded bytes of an image file after checking that it decodes fully.

    A truncated JPEG often opens fine and only fails when its pixels are loaded, so we load them.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(path, f"cannot read frame ({e.strerror or e})") from e
    if not data:
        raise DataError(path, "frame file is empty")
    if validate:
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
        except Exception as e:  # PIL raises many types for bad files
            raise DataError(path, f"corrupt or truncated image ({e})") from e
    return data
