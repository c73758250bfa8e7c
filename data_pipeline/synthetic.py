"""Synthetic diluted-dynamics dataset in DFEW's exact official layout.

Each clip is a procedurally drawn face with its own identity (face shape, skin tone, hair style and
colour, eye colour, background). Across the F frames it shows emotion-irrelevant motion (head
translation/rotation/scale, talking-like mouth opening, blinks) and one brief expression event of
`event_frames` frames whose facial configuration (mouth curvature/opening/width, brow tilt and
height, eye opening, mouth asymmetry) encodes one of DFEW's 7 classes. The event covers only a few
of the F frames: the class signal is diluted in time among irrelevant dynamics, which is the
property IFDD targets (docs/datasets.md §6). Talking opens the mouth like Surprise/Fear do,
and blinks close the eyes like Happy/Disgust do, so appearance pooled over time is ambiguous.

Written tree (read unchanged by data_pipeline.dfew.read_dfew with frame_version "16f"):

    <out>/Clip/clip_224x224_16f/<05d>/1.jpg ... F.jpg     (P x P pixels despite the folder name)
    <out>/EmoLabel_DataSplit/train(single-labeled)/set_{1..5}.csv
    <out>/EmoLabel_DataSplit/test(single-labeled)/set_{1..5}.csv
    <out>/synthetic_meta.json      generation options and per-clip truth (true label, event start)

Rendering is vectorised over the frames of a clip with numpy, so a few hundred 64-px clips take
seconds.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence

import numpy as np
from PIL import Image

from data_pipeline.labels import DFEW_CLASSES

# Approximate class shares of DFEW's single-label clips (Happy, Sad, Neutral, Angry, Surprise,
# Disgust, Fear): long-tailed, Disgust about 1 %, Fear rare.
DFEW_CLASS_SHARES = (0.245, 0.16, 0.245, 0.18, 0.095, 0.012, 0.063)

# Expression configuration per class: mouth curve (+ = corners up), mouth open, mouth width,
# brow tilt (+ = inner ends down, a frown), brow raise, eye opening, mouth asymmetry.
_EXPRESSIONS = np.array(
    [
        [1.00, 0.25, 0.30, 0.0, 0.10, -0.35, 0.0],  # Happy: smile, narrowed eyes
        [-0.90, 0.00, -0.15, -0.9, 0.25, -0.30, 0.0],  # Sad: corners down, inner brows up
        [0.00, 0.00, 0.35, 0.0, -0.25, -0.10, 0.0],  # Neutral: pressed lips, relaxed brows
        [-0.35, 0.15, 0.05, 1.0, -0.45, -0.35, 0.0],  # Angry: V-shaped lowered brows
        [0.00, 1.00, -0.35, 0.0, 1.00, 0.70, 0.0],  # Surprise: round open mouth, raised brows
        [-0.40, 0.10, 0.00, 0.5, -0.20, -0.60, 0.8],  # Disgust: one-sided sneer, squint
        [-0.25, 0.60, 0.40, -0.9, 0.80, 0.80, 0.0],  # Fear: wide eyes, stretched open mouth
    ],
    dtype=np.float32,
)

_SKIN = (
    np.array(
        [[255, 224, 196], [234, 192, 160], [198, 146, 108], [141, 94, 62], [94, 60, 40]], np.float32
    )
    / 255
)
_HAIR = (
    np.array(
        [[25, 20, 18], [90, 56, 32], [200, 170, 100], [150, 60, 30], [160, 160, 160], [60, 40, 30]],
        np.float32,
    )
    / 255
)
_EYES = np.array([[60, 40, 25], [40, 90, 140], [50, 110, 60], [30, 25, 20]], np.float32) / 255


@dataclasses.dataclass(frozen=True)
class SyntheticOptions:
    num_clips: int = 300
    num_frames: int = 16
    size: int = 64
    seed: int = 0
    event_frames: int = 3  # length of the expression event: the dilution knob
    imbalance: str = "dfew"  # "dfew" (long-tailed shares above) or "none" (balanced)
    label_noise: float = 0.0  # probability that a clip's CSV label is replaced by another class
    num_folds: int = 5

    def validate(self) -> None:
        if self.num_clips < self.num_folds:
            raise ValueError(f"num_clips must be >= {self.num_folds}, got {self.num_clips}")
        if self.num_frames < 2 or self.size < 16:
            raise ValueError("num_frames must be >= 2 and size >= 16")
        if not 1 <= self.event_frames <= self.num_frames:
            raise ValueError(f"event_frames must be in [1, num_frames], got {self.event_frames}")
        if self.imbalance not in ("dfew", "none"):
            raise ValueError(f"imbalance must be 'dfew' or 'none', got {self.imbalance!r}")
        if not 0.0 <= self.label_noise <= 1.0:
            raise ValueError(f"label_noise must be in [0, 1], got {self.label_noise}")

    def digest(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


def class_counts(num_clips: int, imbalance: str, num_classes: int = 7) -> np.ndarray:
    """Clips per class; every class gets at least min(5, num_clips // num_classes) clips."""
    shares = np.asarray(DFEW_CLASS_SHARES if imbalance == "dfew" else [1.0] * num_classes)
    shares = shares / shares.sum()
    floor_count = min(5, num_clips // num_classes)
    counts = np.full(num_classes, floor_count)
    rest = num_clips - counts.sum()
    raw = shares * rest
    counts += np.floor(raw).astype(int)
    # Largest remainders get the clips that rounding left over.
    for i in np.argsort(-(raw - np.floor(raw)))[: num_clips - counts.sum()]:
        counts[i] += 1
    return counts


def _soft(d_px: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance in pixels (negative inside)."""
    return np.clip(0.5 - d_px, 0.0, 1.0)[..., None]


def _ellipse(x, y, cx, cy, ax, ay, px):
    r = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
    return _soft((r - 1.0) * np.minimum(ax, ay) * px)


def _segment(x, y, x0, y0, x1, y1, half_width, px):
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy + 1e-9), 0.0, 1.0)
    d = np.sqrt((x - x0 - t * dx) ** 2 + (y - y0 - t * dy) ** 2)
    return _soft((d - half_width) * px)


def _blend(img, alpha, colour):
    return img * (1 - alpha) + alpha * colour


# long: one frame-by-frame drawing script (face, motion, talking, blinks, the event) in order
def render_clip(
    rng: np.random.Generator, label: int, opts: SyntheticOptions
) -> tuple[np.ndarray, int]:
    """Draws one clip. Returns (uint8 [F, P, P, 3] frames, first frame of the expression event)."""
    f_count, p = opts.num_frames, opts.size
    zoom = 1.4  # face-aligned like DFEW: the face fills most of the frame
    px = p / 2.0 * zoom  # pixels per normalised unit; the image spans [-1/zoom, 1/zoom]
    t = np.arange(f_count, dtype=np.float32)[:, None, None]
    coords = ((np.arange(p, dtype=np.float32) + 0.5) / (p / 2.0) - 1.0) / zoom
    gy, gx = np.meshgrid(coords, coords, indexing="ij")

    # Identity.
    ax, ay = rng.uniform(0.40, 0.52), rng.uniform(0.54, 0.66)
    skin = _SKIN[rng.integers(len(_SKIN))] * rng.uniform(0.92, 1.05) + rng.normal(0, 0.02, 3)
    hair = _HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.85, 1.1)
    eye_colour = _EYES[rng.integers(len(_EYES))]
    fringe = rng.uniform(0.35, 0.75)  # how far the hair comes down the forehead
    long_hair = rng.random() < 0.45
    eye_dx, eye_y = rng.uniform(0.15, 0.21), rng.uniform(-0.14, -0.06)
    mouth_y, mouth_w = rng.uniform(0.26, 0.34), rng.uniform(0.16, 0.22)
    bg_a, bg_b = rng.uniform(0.1, 0.95, 3), rng.uniform(0.1, 0.95, 3)

    # Emotion-irrelevant dynamics (per frame).
    phase = rng.uniform(0, 2 * np.pi, 4)
    cycles = rng.uniform(0.3, 1.5, 3)
    w = 2 * np.pi * t / f_count
    cx = rng.uniform(-0.08, 0.08) + rng.uniform(0.02, 0.10) * np.sin(cycles[0] * w + phase[0])
    cy = rng.uniform(-0.05, 0.08) + rng.uniform(0.01, 0.05) * np.sin(cycles[1] * w + phase[1])
    theta = rng.uniform(0.0, 0.15) * np.sin(cycles[2] * w + phase[2])
    scale = 1.0 + rng.uniform(0.0, 0.05) * np.sin(w + phase[3])
    talks = rng.random() < 0.7
    talk = (
        rng.uniform(0.15, 0.55) * np.abs(np.sin(rng.uniform(1.5, 4.0) * w + rng.uniform(0, 6)))
        if talks
        else np.zeros_like(t)
    )
    eye_open = np.ones_like(t)
    for start in np.flatnonzero(rng.random(f_count) < 0.08):
        eye_open[start : start + rng.integers(1, 3)] = 0.1

    # The expression event: a smooth bump over event_frames frames at a random position.
    length = opts.event_frames
    start = int(rng.integers(0, f_count - length + 1))
    envelope = np.zeros_like(t)
    k = np.arange(length, dtype=np.float32)
    envelope[start : start + length, 0, 0] = np.sqrt(np.sin(np.pi * (k + 0.5) / length))
    expr = _EXPRESSIONS[label] * rng.uniform(0.75, 1.0)
    e = envelope  # [F, 1, 1]
    curve, m_open, m_width, tilt, raise_, eye_delta, asym = (e * v for v in expr)
    talk = talk * (1.0 - e)
    mouth_open = np.clip(talk + m_open, 0.0, 1.2)
    eyes = np.clip(eye_open * (1.0 - e) + e * (1.0 + 0.6 * eye_delta), 0.08, 1.8)

    # Keep every per-frame array float32 (numpy scalars would promote the grids to float64).
    cx, cy, theta, scale = (np.asarray(v, np.float32) for v in (cx, cy, theta, scale))
    ax, ay, fringe, eye_dx, eye_y, mouth_y, mouth_w = (
        float(v) for v in (ax, ay, fringe, eye_dx, eye_y, mouth_y, mouth_w)
    )
    skin, hair = skin.astype(np.float32), hair.astype(np.float32)
    bg_a, bg_b = bg_a.astype(np.float32), bg_b.astype(np.float32)
    curve, m_open, m_width, tilt, raise_, asym = (
        np.asarray(v, np.float32) for v in (curve, m_open, m_width, tilt, raise_, asym)
    )
    mouth_open, eyes = mouth_open.astype(np.float32), eyes.astype(np.float32)

    # Head pose: move the sampling grid into the face's own frame.
    cos, sin = np.cos(theta), np.sin(theta)
    x = ((gx - cx) * cos + (gy - cy) * sin) / scale
    y = (-(gx - cx) * sin + (gy - cy) * cos) / scale
    pxs = px * scale

    img = np.broadcast_to(
        (bg_a + (bg_b - bg_a) * ((gy[..., None] * zoom + 1) / 2)).astype(np.float32),
        (f_count, p, p, 3),
    ).copy()
    if long_hair:
        img = _blend(img, _ellipse(x, y, 0, 0.1, ax * 1.18, ay * 1.12, pxs), hair)
    img = _blend(
        img,
        _ellipse(x, y, 0, -0.05, ax * 1.06, ay * 1.02, pxs)
        * (y < -ay * (1 - fringe) * 0.6)[..., None],
        hair,
    )
    shade = 1.0 - 0.12 * np.clip(x / ax, -1, 1)[..., None] ** 2
    img = _blend(img, _ellipse(x, y, 0, 0, ax, ay, pxs), skin * shade)
    img = _blend(
        img,
        _ellipse(x, y, 0, -ay * 0.55, ax * 0.98, ay * 0.55, pxs) * (y < -ay * fringe)[..., None],
        hair,
    )

    for side in (-1.0, 1.0):
        ex = side * eye_dx
        ry = 0.055 * eyes
        img = _blend(img, _ellipse(x, y, ex, eye_y, 0.075, ry, pxs), np.float32([0.96, 0.96, 0.94]))
        img = _blend(img, _ellipse(x, y, ex, eye_y, 0.035, np.minimum(ry, 0.035), pxs), eye_colour)
        brow_y = eye_y - 0.11 - 0.07 * raise_
        inner = brow_y + 0.06 * tilt
        img = _blend(
            img,
            _segment(x, y, side * 0.05, inner, side * (eye_dx + 0.09), brow_y, 0.018, pxs),
            hair * 0.8,
        )
    img = _blend(
        img, _segment(x, y, 0.0, eye_y + 0.04, 0.0, mouth_y - 0.12, 0.012, pxs), skin * 0.75
    )

    # Mouth: a centre line whose corners rise with `curve` (one-sided with `asym`) and an opening.
    half_w = mouth_w * (1.0 + 0.5 * m_width) * (1.0 - 0.3 * np.clip(m_open, 0, 1))
    u = np.clip(x / half_w, -1.0, 1.0)
    corner = (curve + asym * (x > 0)) * 0.11
    centre = mouth_y - corner * u**2
    gap = 0.13 * mouth_open * np.sqrt(1.0 - u**2)
    inside_w = np.abs(x) - half_w
    dist_lip = np.maximum(np.abs(y - centre) - gap - 0.022, inside_w)
    dist_gap = np.maximum(np.abs(y - centre) - gap, inside_w)
    img = _blend(img, _soft(dist_lip * pxs), np.float32([0.62, 0.25, 0.25]) * (0.7 + 0.3 * skin))
    img = _blend(
        img, _soft(dist_gap * pxs) * (gap > 0.004)[..., None], np.float32([0.2, 0.05, 0.05])
    )

    img = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(0.012)
    return (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8), start


def _assign_labels(rng: np.random.Generator, opts: SyntheticOptions) -> np.ndarray:
    counts = class_counts(opts.num_clips, opts.imbalance)
    labels = np.repeat(np.arange(len(counts)), counts)
    return rng.permutation(labels)


def _assign_folds(rng: np.random.Generator, labels: np.ndarray, num_folds: int) -> np.ndarray:
    """Stratified fold per clip: each class is dealt round-robin, starting where the last ended."""
    folds = np.zeros(len(labels), dtype=int)
    offset = 0
    for c in range(int(labels.max()) + 1):
        idx = rng.permutation(np.flatnonzero(labels == c))
        folds[idx] = (offset + np.arange(len(idx))) % num_folds
        offset = (offset + len(idx)) % num_folds
    return folds


def _write_frames(folder: str, frames: np.ndarray) -> None:
    os.makedirs(folder, exist_ok=True)
    for i, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(os.path.join(folder, f"{i}.jpg"), quality=92)


def generate(out_dir: str, opts: SyntheticOptions, *, workers: int = 2) -> dict:
    """Writes the synthetic tree to out_dir (created; must not hold a Clip folder yet).

    Returns the metadata written to synthetic_meta.json.
    """
    opts.validate()
    if os.path.exists(os.path.join(out_dir, "Clip")):
        raise FileExistsError(f"{out_dir}: already holds a Clip folder; refusing to overwrite")
    rng = np.random.default_rng([opts.seed, 20240611])
    labels = _assign_labels(rng, opts)
    folds = _assign_folds(rng, labels, opts.num_folds)
    noisy = labels.copy()
    flip = rng.random(len(labels)) < opts.label_noise
    noisy[flip] = (labels[flip] + rng.integers(1, 7, flip.sum())) % 7
    clip_seeds = rng.integers(0, 2**63 - 1, len(labels))

    frames_root = os.path.join(out_dir, "Clip", "clip_224x224_16f")
    os.makedirs(frames_root, exist_ok=True)
    starts = [0] * len(labels)

    def work(i: int) -> None:
        frames, starts[i] = render_clip(np.random.default_rng(clip_seeds[i]), int(labels[i]), opts)
        _write_frames(os.path.join(frames_root, f"{i + 1:05d}"), frames)

    # numpy and PIL release the GIL for most of the work, so two threads help on two cores.
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(work, range(len(labels))))

    split_root = os.path.join(out_dir, "EmoLabel_DataSplit")
    for split in ("train", "test"):
        folder = os.path.join(split_root, f"{split}(single-labeled)")
        os.makedirs(folder, exist_ok=True)
        for k in range(1, opts.num_folds + 1):
            chosen = (folds == k - 1) if split == "test" else (folds != k - 1)
            with open(os.path.join(folder, f"set_{k}.csv"), "w") as f:
                f.write("video_name,label\n")
                for i in np.flatnonzero(chosen):
                    f.write(f"{i + 1},{int(noisy[i]) + 1}\n")
    meta = {
        "options": dataclasses.asdict(opts),
        "class_names": list(DFEW_CLASSES),
        "clips": [
            {
                "video_name": i + 1,
                "true_label": int(labels[i]),
                "csv_label": int(noisy[i]),
                "fold": int(folds[i]) + 1,
                "event_start": int(starts[i]),
            }
            for i in range(len(labels))
        ],
    }
    with open(os.path.join(out_dir, "synthetic_meta.json"), "w") as f:
        json.dump(meta, f)
    return meta


def ensure_synthetic_dataset(root: str, opts: SyntheticOptions) -> str:
    """Returns the folder of the synthetic tree for `opts` under root, generating it if absent.

    Trees are keyed by a digest of the options (root/synthetic_<digest>), so changing an option
    makes a new tree and an existing one is reused. Generation goes to a temporary folder that is
    renamed into place, so concurrent processes never see a half-written tree.
    """
    opts.validate()
    target = os.path.join(root, f"synthetic_{opts.digest()}")
    if os.path.isfile(os.path.join(target, "synthetic_meta.json")):
        return target
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".synthetic_tmp_", dir=root)
    try:
        generate(tmp, opts)
        try:
            os.rename(tmp, target)
        except OSError:
            if not os.path.isfile(os.path.join(target, "synthetic_meta.json")):
                raise
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write_video(path: str, frames: np.ndarray, fps: float = 8.0) -> None:
    """frames uint8 [n, h, w, 3] RGB -> an MPEG-4 file (OpenCV, a core dependency)."""
    import cv2  # deferred: OpenCV is only needed to write videos

    os.makedirs(os.path.dirname(path), exist_ok=True)
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write MPEG-4 video here")
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))  # OpenCV takes BGR
    writer.release()


def generate_custom(
    out_dir: str, opts: SyntheticOptions, *, classes: Sequence[str] = DFEW_CLASSES, workers: int = 2
) -> str:
    """The synthetic clips in the custom form (data_pipeline/custom.py): videos
    `out_dir/videos/<class>/<n>.mp4` and `out_dir/clips.csv` (`path,label,split`, every fifth clip
    of each class in test), for the classes named (a subset of DFEW's, whose expressions the
    clips draw). Returns the CSV's path."""
    opts.validate()
    unknown = [c for c in classes if c not in DFEW_CLASSES]
    if unknown or not classes:
        raise ValueError(f"classes must be among {', '.join(DFEW_CLASSES)}; got {unknown}")
    rng = np.random.default_rng([opts.seed, 20261126])
    labels = rng.permutation(np.resize([DFEW_CLASSES.index(c) for c in classes], opts.num_clips))
    clip_seeds = rng.integers(0, 2**63 - 1, len(labels))
    rows = [""] * len(labels)
    seen: dict[int, int] = {}
    for i, label in enumerate(labels):
        seen[int(label)] = seen.get(int(label), 0) + 1
        split = "test" if seen[int(label)] % 5 == 0 else "train"
        rows[i] = f"videos/{DFEW_CLASSES[label]}/{i + 1:05d}.mp4,{DFEW_CLASSES[label]},{split}"

    def work(i: int) -> None:
        frames, _ = render_clip(np.random.default_rng(clip_seeds[i]), int(labels[i]), opts)
        _write_video(os.path.join(out_dir, rows[i].split(",")[0]), frames)

    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(work, range(len(labels))))
    csv_path = os.path.join(out_dir, "clips.csv")
    with open(csv_path, "w") as f:
        f.write("path,label,split\n" + "\n".join(rows) + "\n")
    return csv_path
