"""Face cropping for inputs that are not face-aligned (`python -m ifdd_jax.predict --crop_faces`).

The face is found with OpenCV's Haar cascade shipped inside opencv-python-headless (no download)
on a few frames of a clip, and the same square around it is cropped in every frame, so motion is
kept. Without a detection the caller keeps the whole frame.
"""

from __future__ import annotations

import functools
import os

import cv2
import numpy as np

# The face box is enlarged by this factor around the detection: the datasets' face crops include
# the forehead and chin, which the Haar box cuts.
FACE_MARGIN = 1.3
# Frames of a clip on which the face detector runs (spread over the clip); the median box is used.
FACE_PROBES = 3


@functools.lru_cache(maxsize=1)
def _face_detector():
    path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
    detector = cv2.CascadeClassifier(path)
    if detector.empty():
        raise FileNotFoundError(
            f"{path}: OpenCV's bundled face cascade is missing (OpenCV 5 "
            f"dropped it; install opencv-python-headless<5)"
        )
    return detector


def face_box(frames: np.ndarray) -> tuple | None:
    """(top, left, size) of a square around the face of uint8 `frames` [T, h, w, 3], from the
    median of the largest detections on a few frames, or None when no face is found."""
    detector = _face_detector()
    h, w = frames.shape[1:3]
    boxes = []
    for i in np.linspace(0, len(frames) - 1, min(FACE_PROBES, len(frames))).round().astype(int):
        gray = cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY)
        found = detector.detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=4, minSize=(max(16, min(h, w) // 10),) * 2
        )
        if len(found):
            boxes.append(max(found, key=lambda b: b[2] * b[3]))
    if not boxes:
        return None
    x, y, bw, bh = np.median(np.asarray(boxes, np.float64), axis=0)
    size = min(int(round(max(bw, bh) * FACE_MARGIN)), h, w)
    top = int(np.clip(round(y + bh / 2 - size / 2), 0, h - size))
    left = int(np.clip(round(x + bw / 2 - size / 2), 0, w - size))
    return top, left, size
