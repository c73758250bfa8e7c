"""Fake dataset trees in the official layouts, for the data-pipeline tests.

Frame k (1-based) of every clip is a flat image of grey level 20 * k, so a test can read back the
temporal order from pixel values. Everything is tiny (16 px JPEGs, a few frames).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

SIZE = 16


def frame_value(k: int) -> int:
    return min(255, 20 * k)


def write_frames(folder: str, num_frames: int, *, size: int = SIZE, pattern: str = "{k}.jpg"):
    os.makedirs(folder, exist_ok=True)
    for k in range(1, num_frames + 1):
        img = np.full((size, size, 3), frame_value(k), np.uint8)
        Image.fromarray(img).save(os.path.join(folder, pattern.format(k=k)), quality=95)


def write_video(path: str, num_frames: int, *, size: int = 32) -> None:
    """Writes a tiny mp4/avi with PyAV (mpeg4 codec); frame k has grey level about 20 * k."""
    import av

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(path, mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for k in range(1, num_frames + 1):
            img = np.full((size, size, 3), frame_value(k), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# DFEW: 10 clips, labels 1..7 cycling; fold k tests clips with (id % 5) == k - 1.
DFEW_LABELS = {i: (i - 1) % 7 + 1 for i in range(1, 11)}


def make_dfew(
    root: str,
    *,
    num_frames: int = 6,
    all_frames: int = 8,
    videos: bool = False,
    authors_names: bool = False,
    extra_rows: dict | None = None,
) -> str:
    """DFEW layout: 16f and all-frames folders, optional videos, 5 folds of split CSVs."""
    for i in DFEW_LABELS:
        write_frames(os.path.join(root, "Clip", "clip_224x224_16f", f"{i:05d}"), num_frames)
        write_frames(os.path.join(root, "Clip", "clip_224x224", f"{i:05d}"), all_frames)
        if videos:
            write_video(os.path.join(root, "Clip", "original", f"{i:05d}.mp4"), all_frames)
    for split in ("train", "test"):
        name = f"{split}_single-labeled" if authors_names else f"{split}(single-labeled)"
        folder = os.path.join(root, "EmoLabel_DataSplit", name)
        os.makedirs(folder, exist_ok=True)
        for k in range(1, 6):
            ids = [i for i in DFEW_LABELS if ((i % 5) == k - 1) == (split == "test")]
            lines = ["video_name,label"] + [f"{i},{DFEW_LABELS[i]}" for i in ids]
            lines += (extra_rows or {}).get((split, k), [])
            with open(os.path.join(folder, f"set_{k}.csv"), "w") as f:
                f.write("\n".join(lines) + "\n")
    return root


FERV_CLIPS = {  # relative path -> class
    "Daily/Office/Happy/0001": "Happy",
    "Daily/Office/Sad/0002": "Sad",
    "Daily/Street/Angry/0003": "Angry",
    "Drama/Home/Fear/0004": "Fear",
    "Drama/Home/Surprise/0005": "Surprise",
    "Drama/Home/Disgust/0006": "Disgust",
    "Drama/Home/Neutral/0007": "Neutral",
}
FERV_TEST = ("Daily/Office/Sad/0002", "Drama/Home/Neutral/0007")


def make_ferv39k(
    root: str, *, num_frames: int = 8, authors_names: bool = False, video_clip: str | None = None
) -> str:
    clips_root = os.path.join(root, "2_ClipsforFaceCrop")
    for rel in FERV_CLIPS:
        if rel == video_clip:
            write_video(os.path.join(clips_root, rel + ".mp4"), num_frames)
        else:
            write_frames(os.path.join(clips_root, rel), num_frames, pattern="{k:03d}.jpg")
    split_dir = os.path.join(root, "All_scenes" if authors_names else "4_setups/All_scenes")
    os.makedirs(split_dir, exist_ok=True)
    for split, name in (("train", "train_All.csv"), ("test", "test_All.csv")):
        rels = [r for r in FERV_CLIPS if (r in FERV_TEST) == (split == "test")]
        with open(os.path.join(split_dir, name), "w") as f:
            f.write("".join(f"{r} {FERV_CLIPS[r]}\n" for r in rels))
    return root


MAFW_CLIPS = {
    f"{i:05d}": c
    for i, c in enumerate(
        [
            "anger",
            "disgust",
            "fear",
            "happiness",
            "neutral",
            "sadness",
            "surprise",
            "contempt",
            "anxiety",
            "helplessness",
            "disappointment",
        ],
        start=1,
    )
}


def make_mafw(
    root: str,
    *,
    num_frames: int = 6,
    video_only: tuple[str, ...] = (),
    split_subdir: str = "Train & Test Set/single/no_caption",
    frames_subdir: str = "data/frames",
    videos_subdir: str = "data/clips",
) -> str:
    for name in MAFW_CLIPS:
        if name in video_only:
            write_video(os.path.join(root, videos_subdir, name + ".mp4"), num_frames)
        else:
            write_frames(os.path.join(root, frames_subdir, name), num_frames)
    names = sorted(MAFW_CLIPS)
    for k in range(1, 6):
        folder = os.path.join(root, split_subdir, f"set_{k}")
        os.makedirs(folder, exist_ok=True)
        for split in ("train", "test"):
            chosen = [n for j, n in enumerate(names) if ((j % 5) == k - 1) == (split == "test")]
            with open(os.path.join(folder, f"{split}.txt"), "w") as f:
                f.write("".join(f"{n}.mp4 {MAFW_CLIPS[n]}\n" for n in chosen))
    return root
