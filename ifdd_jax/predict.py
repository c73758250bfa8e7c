"""Inference on videos and frame folders with a trained checkpoint.

    python -m ifdd_jax.predict --workdir runs/default --input clip.mp4
    python -m ifdd_jax.predict --checkpoint runs/default/checkpoints_best --input folder/ \
        --output predictions.json --window 2.0 --crop_faces

`--input` is a video file (anything decord reads), a folder of frames (numbered images, as the
datasets ship them) or a folder holding many videos and/or frame folders. Each input is one clip:
its frames are sampled, resized, centre-cropped and normalised exactly as evaluation does
(data_pipeline.sampling.eval_indices, augment.eval_transform, augment.normalize) and the logits of
the config's evaluation views are averaged. With `--window` (seconds) or `--window_frames`, long
inputs also get a timeline: one prediction per consecutive window, each window sampled as a clip
(frame folders carry no frame rate: `--window` assumes 25 fps for them, `--window_frames` is exact).

`--crop_faces` finds the face with OpenCV's Haar cascade shipped inside opencv-python-headless
(no download) on a few frames and crops the same square around it in every frame, so motion is
kept; without a detection the whole frame is used and the result says so.

An input that cannot be read is named on stderr and in the output's `errors`; the others are still
predicted, and the exit status is 1.

This module also holds what the analysis tools share: `load_trained` (a run's model and weights)
and `read_clip` (a source's frames preprocessed as in evaluation).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import os
import sys
from typing import Any, Callable, Iterator, List, Optional, Sequence

import jax
import numpy as np

from data_pipeline.errors import DataError
from data_pipeline.frames import FRAME_EXTENSIONS, list_frames
from data_pipeline.video import VIDEO_EXTENSIONS

CONFIG_FILE = "config.json"
# The face box is enlarged by this factor around the detection: the datasets' face crops include
# the forehead and chin, which the Haar box cuts.
FACE_MARGIN = 1.3
# Frames of a clip on which the face detector runs (spread over the clip); the median box is used.
FACE_PROBES = 3
# Frame rate assumed for frame folders when a timeline window is given in seconds.
ASSUMED_FPS = 25.0


# --- the trained model -------------------------------------------------------------------------


@dataclasses.dataclass
class TrainedModel:
    """A restored model: `apply(clips [N, T, S, S, 3]) -> outputs dict` runs it (eval mode)."""

    config: Any  # ml_collections.ConfigDict
    model: Any  # flax.linen.Module
    variables: dict
    class_names: List[str]
    checkpoint: str
    step: int

    @property
    def num_frames(self) -> int:
        return int(self.config.data.num_frames)

    @property
    def image_size(self) -> int:
        return int(self.config.data.image_size)

    def apply(self, clips: np.ndarray, **kwargs) -> dict:
        return self.model.apply(self.variables, clips, train=False, **kwargs)


def _find_config_file(paths: Sequence[str]) -> Optional[str]:
    """config.json in any of `paths` or up to two folders above them (a checkpoint folder is
    `RUN/checkpoints_best` or `RUN/checkpoints/<step>`)."""
    for path in paths:
        folder = os.path.abspath(path)
        for _ in range(3):
            candidate = os.path.join(folder, CONFIG_FILE)
            if os.path.isfile(candidate):
                return candidate
            folder = os.path.dirname(folder)
    return None


def load_config(workdir: Optional[str] = None, checkpoint: Optional[str] = None,
                config: Optional[str] = None):
    """The run's config: `config` ("configs/x.py:args" or a config.json), else the config.json
    written next to the checkpoint by ifdd_jax.main."""
    import ml_collections

    from ifdd_jax.config_lib import load_config_file

    if config:
        if config.endswith(".json"):
            if not os.path.isfile(config):
                raise FileNotFoundError(f"{config}: config file does not exist")
            with open(config) as f:
                return ml_collections.ConfigDict(json.load(f))
        return load_config_file(config)
    found = _find_config_file([p for p in (workdir, checkpoint) if p])
    if found is None:
        where = workdir or checkpoint
        raise FileNotFoundError(
            f"{where}: no {CONFIG_FILE} found with the checkpoint; pass --config "
            f"(e.g. --config=configs/dfew.py:model=ifdd_2dcnn) with the run's settings"
        )
    try:
        with open(found) as f:
            return ml_collections.ConfigDict(json.load(f))
    except json.JSONDecodeError as e:
        raise ValueError(f"{found}: not valid JSON ({e})") from e


def class_names_for(config) -> List[str]:
    from data_pipeline.labels import class_names

    names = list(class_names(config.data.name if "data" in config else config.dataset))
    if len(names) != int(config.num_classes):
        return [f"class_{i}" for i in range(int(config.num_classes))]
    return names


def load_trained(workdir: Optional[str] = None, checkpoint: Optional[str] = None,
                 config: Any = None) -> TrainedModel:
    """Restores a run's model: `workdir` (its best checkpoint, else its latest) or `checkpoint`
    (a checkpoint folder or one step folder). `config` is a ConfigDict, a config spec
    ("configs/x.py:args", "path/config.json") or None for the run's own config.json."""
    import jax

    from ifdd_jax import sharding
    from ifdd_jax.models import build_model
    from ifdd_jax.train_state import restore_variables

    if not workdir and not checkpoint:
        raise ValueError("give a run's --workdir or a --checkpoint folder")
    if config is None or isinstance(config, str):
        config = load_config(workdir, checkpoint, config)
    model = build_model(config)
    # One device is enough for inference and keeps any batch size valid.
    mesh = sharding.make_mesh(jax.devices()[:1])
    variables, step, directory = restore_variables(model, config, checkpoint or workdir, mesh)
    return TrainedModel(config=config, model=model, variables=variables,
                        class_names=class_names_for(config), checkpoint=directory, step=step)


# --- inputs ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Source:
    """One input clip: a video file or a folder of frames."""

    path: str
    kind: str  # "video" | "frames"

    def _frame_files(self) -> List[str]:
        return list_frames(self.path)

    def num_frames(self) -> int:
        if self.kind == "video":
            from data_pipeline.video import video_num_frames

            return video_num_frames(self.path)
        return len(self._frame_files())

    def fps(self) -> Optional[float]:
        """Frames per second of a video (None for frame folders, which carry no rate)."""
        if self.kind != "video":
            return None
        import decord

        try:
            fps = float(decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=1)
                        .get_avg_fps())
        except Exception:  # the rate is informative only; decoding errors surface elsewhere
            return None
        return fps if fps > 0 else None

    def read(self, indices: np.ndarray) -> np.ndarray:
        """uint8 [len(indices), h, w, 3] RGB frames; DataError naming the file on failure."""
        if self.kind == "video":
            from data_pipeline.video import decode_video

            return decode_video(self.path, indices)
        from PIL import Image

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


def discover_sources(path: str) -> List[Source]:
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
        raise DataError(path, f"holds no video ({', '.join(VIDEO_EXTENSIONS)}), no frames "
                              f"({', '.join(FRAME_EXTENSIONS)}) and no frame folders")
    return sources


# --- preprocessing -----------------------------------------------------------------------------


def sample_indices(num_frames: int, config) -> np.ndarray:
    """int [V, T] frame indices of the config's evaluation views over `num_frames` frames."""
    from data_pipeline.sampling import eval_indices

    d = config.data
    return np.asarray(eval_indices(num_frames, int(d.num_frames), int(d.get("num_eval_views", 1)),
                                   d.get("short_clip_policy", "stretch")))


@functools.lru_cache(maxsize=1)
def _face_detector():
    try:
        import cv2
    except ImportError as e:
        raise ImportError(
            "--crop_faces needs OpenCV: pip install 'opencv-python-headless<5'") from e
    path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
    detector = cv2.CascadeClassifier(path)
    if detector.empty():
        raise FileNotFoundError(f"{path}: OpenCV's bundled face cascade is missing (OpenCV 5 "
                                f"dropped it; install opencv-python-headless<5)")
    return detector


def face_box(frames: np.ndarray) -> Optional[tuple]:
    """(top, left, size) of a square around the face of uint8 `frames` [T, h, w, 3], from the
    median of the largest detections on a few frames, or None when no face is found."""
    import cv2

    detector = _face_detector()
    h, w = frames.shape[1:3]
    boxes = []
    for i in np.linspace(0, len(frames) - 1, min(FACE_PROBES, len(frames))).round().astype(int):
        gray = cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY)
        found = detector.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4,
                                          minSize=(max(16, min(h, w) // 10),) * 2)
        if len(found):
            boxes.append(max(found, key=lambda b: b[2] * b[3]))
    if not boxes:
        return None
    x, y, bw, bh = np.median(np.asarray(boxes, np.float64), axis=0)
    size = min(int(round(max(bw, bh) * FACE_MARGIN)), h, w)
    top = int(np.clip(round(y + bh / 2 - size / 2), 0, h - size))
    left = int(np.clip(round(x + bw / 2 - size / 2), 0, w - size))
    return top, left, size


def preprocess(frames: np.ndarray, config) -> np.ndarray:
    """uint8 [V, T, h, w, 3] -> float32 [V, T, S, S, 3]: the evaluation transform and the
    config's normalisation."""
    from data_pipeline.augment import eval_transform, normalize

    clip = eval_transform(frames, int(config.data.image_size))
    return np.asarray(normalize(clip, config.data.get("normalization", "unit")), np.float32)


@dataclasses.dataclass
class Clip:
    """A preprocessed clip: `clips` [V, T, S, S, 3] and the frames it came from."""

    clips: np.ndarray
    indices: np.ndarray  # [V, T] frame indices into the source
    face: Optional[tuple]  # (top, left, size) when cropped


def read_clip(source: Source, config, *, start: int = 0, stop: Optional[int] = None,
              crop_faces: bool = False, num_frames: Optional[int] = None) -> Clip:
    """Frames [start, stop) of `source` sampled and preprocessed as evaluation does."""
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
            frames = frames[:, :, top:top + size, left:left + size]
    return Clip(preprocess(frames, config), indices, box)


# --- prediction --------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("model",))
def _probabilities(variables: dict, clips: jax.Array, *, model) -> jax.Array:
    b, v = clips.shape[:2]
    logits = model.apply(variables, clips.reshape((b * v,) + clips.shape[2:]), train=False)
    return jax.nn.softmax(logits["logits"].reshape(b, v, -1).mean(axis=1), axis=-1)


def make_predict_fn(trained: TrainedModel) -> Callable[[np.ndarray], np.ndarray]:
    """clips [B, V, T, S, S, 3] -> class probabilities [B, K] (view logits averaged, as in
    evaluation). One compiled program per model and batch shape, shared by every caller."""
    return lambda clips: np.asarray(_probabilities(trained.variables, clips, model=trained.model))


@dataclasses.dataclass
class _Job:
    result: dict  # the record the probabilities go to
    clip: np.ndarray  # [V, T, S, S, 3]


def _windows(n: int, size: int, stride: int) -> List[tuple]:
    """[start, stop) windows of `size` frames every `stride` frames; a last partial window is kept
    only when it covers at least half a window."""
    spans = []
    for start in range(0, n, stride):
        stop = min(start + size, n)
        if stop - start < size and spans and stop - start < size / 2:
            break
        spans.append((start, stop))
        if stop == n:
            break
    return spans


def _jobs(sources: Sequence[Source], config, results: list, errors: list, *, crop_faces: bool,
          window_s: Optional[float], window_frames: Optional[int]) -> Iterator[_Job]:
    for source in sources:
        try:
            n = source.num_frames()
            fps = source.fps()
            whole = read_clip(source, config, crop_faces=crop_faces, num_frames=n)
            record = dict(input=source.path, kind=source.kind, num_frames=n, fps=fps,
                          face_crop=list(whole.face) if whole.face else None)
            if crop_faces and whole.face is None:
                record["face_crop_note"] = "no face detected; the whole frame was used"
            window = window_frames
            if window is None and window_s:
                window = max(1, int(round(window_s * (fps or ASSUMED_FPS))))
            jobs = [_Job(record, whole.clips)]
            if window and n > window:
                record["timeline"] = []
                for start, stop in _windows(n, window, window):
                    part = read_clip(source, config, start=start, stop=stop,
                                     crop_faces=crop_faces, num_frames=n)
                    entry = dict(start_frame=start, end_frame=stop)
                    if fps:
                        entry.update(start_s=round(start / fps, 3), end_s=round(stop / fps, 3))
                    record["timeline"].append(entry)
                    jobs.append(_Job(entry, part.clips))
        except (DataError, OSError, ValueError) as e:
            message = str(e) if source.path in str(e) else f"{source.path}: {e}"
            errors.append(dict(input=source.path, error=message))
            print(f"error: {message}", file=sys.stderr)
            continue
        results.append(record)
        yield from jobs


def predict_sources(trained: TrainedModel, sources: Sequence[Source], *, batch_size: int = 8,
                    crop_faces: bool = False, window_s: Optional[float] = None,
                    window_frames: Optional[int] = None) -> dict:
    """Predictions of every source (and of its windows), batched by `batch_size` clips.

    Returns {"results": [per-input record], "errors": [{"input", "error"}], ...}; a record holds
    "prediction", "probabilities" {class: p} and, for windowed inputs, "timeline".
    """
    predict = make_predict_fn(trained)
    names = trained.class_names
    results: list = []
    errors: list = []

    def flush(pending: List[_Job]) -> None:
        clips = np.stack([job.clip for job in pending])
        # Pad to a fixed batch so that one compiled program serves every batch.
        if len(pending) < batch_size:
            pad = np.zeros((batch_size - len(pending),) + clips.shape[1:], clips.dtype)
            clips = np.concatenate([clips, pad])
        probs = predict(clips)
        for job, p in zip(pending, probs):
            job.result["prediction"] = names[int(np.argmax(p))]
            job.result["probabilities"] = {n: round(float(x), 6) for n, x in zip(names, p)}

    pending: List[_Job] = []
    for job in _jobs(sources, trained.config, results, errors, crop_faces=crop_faces,
                     window_s=window_s, window_frames=window_frames):
        pending.append(job)
        if len(pending) == batch_size:
            flush(pending)
            pending = []
    if pending:
        flush(pending)
    return dict(
        checkpoint=trained.checkpoint,
        step=trained.step,
        model=trained.config.model_name,
        class_names=list(names),
        num_frames=trained.num_frames,
        image_size=trained.image_size,
        num_eval_views=int(trained.config.data.get("num_eval_views", 1)),
        results=results,
        errors=errors,
    )


# --- output ------------------------------------------------------------------------------------


def format_report(report: dict, top: int = 3) -> str:
    lines = []
    for record in report["results"]:
        ranked = sorted(record["probabilities"].items(), key=lambda kv: -kv[1])
        probs = ", ".join(f"{n} {p:.3f}" for n, p in ranked)
        lines.append(f"{record['input']}: {record['prediction']} "
                     f"(p = {ranked[0][1]:.3f})   [{probs}]")
        for entry in record.get("timeline", []):
            span = (f"{entry['start_s']:7.2f}-{entry['end_s']:7.2f} s" if "start_s" in entry
                    else f"frames {entry['start_frame']}-{entry['end_frame']}")
            best = sorted(entry["probabilities"].items(), key=lambda kv: -kv[1])[:top]
            lines.append(f"    {span}: {entry['prediction']:<10} "
                         + ", ".join(f"{n} {p:.2f}" for n, p in best))
        if record.get("face_crop_note"):
            lines.append(f"    note: {record['face_crop_note']}")
    for error in report["errors"]:
        lines.append(f"unreadable: {error['error']}")
    return "\n".join(lines)


def write_output(report: dict, path: str) -> None:
    """`.json`: the whole report; `.csv`: one row per clip and per timeline window."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.endswith(".json"):
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
        return
    if not path.endswith(".csv"):
        raise ValueError(f"{path}: --output must end in .json or .csv")
    names = report["class_names"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["input", "window_start_frame", "window_end_frame", "start_s", "end_s",
                         "prediction"] + [f"p_{n}" for n in names])
        for record in report["results"]:
            rows = [({}, record)] + [(e, e) for e in record.get("timeline", [])]
            for window, values in rows:
                writer.writerow([record["input"], window.get("start_frame", ""),
                                 window.get("end_frame", ""), window.get("start_s", ""),
                                 window.get("end_s", ""), values["prediction"]]
                                + [values["probabilities"][n] for n in names])
        for error in report["errors"]:
            writer.writerow([error["input"], "", "", "", "", "ERROR: " + error["error"]]
                            + [""] * len(names))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ifdd_jax.predict",
        description="Predict the emotion of videos or frame folders with a trained checkpoint.")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--workdir", help="a training run's folder (its best checkpoint is used)")
    where.add_argument("--checkpoint", help="a checkpoint folder or one step folder")
    parser.add_argument("--config", default=None,
                        help="the run's config when it has no config.json "
                             "(configs/x.py:args or a .json file)")
    parser.add_argument("--input", required=True, nargs="+",
                        help="video file(s), frame folder(s) or folder(s) of them")
    parser.add_argument("--output", default=None, help="write the predictions (.json or .csv)")
    parser.add_argument("--batch_size", type=int, default=8, help="clips per forward pass")
    parser.add_argument("--window", type=float, default=None,
                        help="also predict every WINDOW seconds of a longer input (a timeline)")
    parser.add_argument("--window_frames", type=int, default=None,
                        help="the timeline window in frames (for frame folders, which have no fps)")
    parser.add_argument("--crop_faces", action="store_true",
                        help="crop the face (OpenCV Haar cascade) before the evaluation transform")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch_size must be positive")
    try:
        if args.output and not args.output.endswith((".json", ".csv")):
            raise ValueError(f"{args.output}: --output must end in .json or .csv")
        sources = [s for path in args.input for s in discover_sources(path)]
        trained = load_trained(args.workdir, args.checkpoint, args.config)
        report = predict_sources(trained, sources, batch_size=args.batch_size,
                                 crop_faces=args.crop_faces, window_s=args.window,
                                 window_frames=args.window_frames)
    except (DataError, OSError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_report(report))
    if args.output:
        write_output(report, args.output)
        print(f"wrote {args.output}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from ifdd_jax import compile_cache

    compile_cache.enable()
    sys.exit(main())
