"""Inputs outside the datasets, read as evaluation reads a clip: video files and frame folders
(`discover_sources`), their frames sampled, face-cropped on request, resized, centre-cropped and
normalised exactly as evaluation does (`read_clip`: data_pipeline.sampling.eval_indices,
augment.eval_transform, augment.normalize). Used by `python -m ifdd_jax.predict` and the
analysis tools.

`--input` of those tools is a video file (anything decord reads), a folder of frames (numbered
images, as the datasets ship them) or a folder holding many videos and/or frame folders; each is
one clip.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from PIL import Image

from data_pipeline.errors import DataError
from data_pipeline.face_crop import face_box
from data_pipeline.frames import FRAME_EXTENSIONS, list_frames
from data_pipeline.video import VIDEO_EXTENSIONS, decode_video, video_fps, video_num_frames


@dataclasses.dataclass
class Source:
    """One input clip: a video file or a folder of frames."""

    path: str
    kind: str  # "video" | "frames"

    def _frame_files(self) -> list[str]:
        return list_frames(self.path)

    def num_frames(self) -> int:
        if self.kind == "video":
            return video_num_frames(self.path)
        return len(self._frame_files())

    def fps(self) -> float | None:
        """Frames per second of a video (None for frame folders, which carry no rate)."""
        if self.kind != "video":
            return None
        return video_fps(self.path)

    def read(self, indices: np.ndarray) -> np.ndarray:
        """uint8 [len(indices), h, w, 3] RGB frames; DataError naming the file on failure."""
        if self.kind == "video":
            return decode_video(self.path, indices)
        files = self._frame_files()
        frames = []
        for i in np.asarray(indices):
            path = files[int(i)]
            try:
                with Image.open(path) as img:
                    frames.append(np.asarray(img.convert("RGB")))
            except Exception as e:  # PIL raises many types for bad files
                raise DataError(path, f"corrupt or unreadable image ({e})") from e
        shapes = {f.shape for f in frames}
        if len(shapes) > 1:
            raise DataError(self.path, f"frames have different sizes {sorted(shapes)}")
        return np.stack(frames)


def _holds_frames(folder: str) -> bool:
    return any(n.lower().endswith(FRAME_EXTENSIONS) for n in os.listdir(folder))


def discover_sources(path: str) -> list[Source]:
    """The clips under `path`: a video file, a frame folder, or a folder of videos and frame
    folders (its direct children, sorted by name)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: input does not exist")
    if os.path.isfile(path):
        return [Source(path, "video")]
    if _holds_frames(path):
        return [Source(path, "frames")]
    sources = []
    for name in sorted(os.listdir(path)):
        child = os.path.join(path, name)
        if os.path.isdir(child) and _holds_frames(child):
            sources.append(Source(child, "frames"))
        elif os.path.isfile(child) and name.lower().endswith(VIDEO_EXTENSIONS):
            sources.append(Source(child, "video"))
    if not sources:
        raise DataError(
            path,
            f"holds no video ({', '.join(VIDEO_EXTENSIONS)}), no frames "
            f"({', '.join(FRAME_EXTENSIONS)}) and no frame folders",
        )
    return sources


def sample_indices(num_frames: int, config) -> np.ndarray:
    """int [V, T] frame indices of the config's evaluation views over `num_frames` frames."""
    # deferred: imports TensorFlow, which reading a clip for inference does not otherwise need
    from data_pipeline.sampling import eval_indices

    d = config.data
    return np.asarray(
        eval_indices(
            num_frames,
            int(d.num_frames),
            int(d.get("num_eval_views", 1)),
            d.get("short_clip_policy", "stretch"),
        )
    )


def preprocess(frames: np.ndarray, config) -> np.ndarray:
    """uint8 [V, T, h, w, 3] -> float32 [V, T, S, S, 3]: the evaluation transform and the
    config's normalisation."""
    # deferred: imports TensorFlow (the transform is the evaluation pipeline's own TF code)
    from data_pipeline.augment import eval_transform, normalize

    clip = eval_transform(frames, int(config.data.image_size))
    return np.asarray(normalize(clip, config.data.get("normalization", "unit")), np.float32)


@dataclasses.dataclass
class Clip:
    """A preprocessed clip: `clips` [V, T, S, S, 3] and the frames it came from."""

    clips: np.ndarray
    indices: np.ndarray  # [V, T] frame indices into the source
    face: tuple | None  # (top, left, size) when cropped


def read_clip(
    source: Source,
    config,
    *,
    start: int = 0,
    stop: int | None = None,
    crop_faces: bool = False,
    num_frames: int | None = None,
) -> Clip:
    """Frames [start, stop) of `source` sampled and preprocessed as evaluation does; with
    `crop_faces`, cropped to the face found on the first view (data_pipeline.face_crop)."""
    n = source.num_frames() if num_frames is None else num_frames
    stop = n if stop is None else min(stop, n)
    if stop <= start:
        raise DataError(source.path, f"window [{start}, {stop}) holds no frames")
    indices = sample_indices(stop - start, config) + start  # [V, T]
    unique, inverse = np.unique(indices, return_inverse=True)
    frames = source.read(unique)[inverse.reshape(indices.shape)]  # [V, T, h, w, 3]
    box = None
    if crop_faces:
        box = face_box(frames[0])
        if box is not None:
            top, left, size = box
            frames = frames[:, :, top : top + size, left : left + size]
    return Clip(preprocess(frames, config), indices, box)


def windows(n: int, size: int, stride: int) -> list[tuple]:
    """[start, stop) windows of `size` frames every `stride` frames over `n` frames (a timeline of
    a long input); a last partial window is kept only when it covers at least half a window."""
    spans = []
    for start in range(0, n, stride):
        stop = min(start + size, n)
        if stop - start < size and spans and stop - start < size / 2:
            break
        spans.append((start, stop))
        if stop == n:
            break
    return spans
