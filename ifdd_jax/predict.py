"""Inference on videos and frame folders with a trained checkpoint.

    python -m ifdd_jax.predict --workdir runs/default --input clip.mp4
    python -m ifdd_jax.predict --checkpoint runs/default/checkpoints_best --input folder/ \
        --output predictions.json --window 2.0 --crop_faces

`--input` is a video file (anything decord reads), a folder of frames (numbered images, as the
datasets ship them) or a folder holding many videos and/or frame folders. Each input is one clip:
its frames are sampled, resized, centre-cropped and normalised exactly as evaluation does
(data_pipeline/inputs.py) and the logits of the config's evaluation views are averaged
(ifdd_jax/views.py). With `--window` (seconds) or `--window_frames`, long
inputs also get a timeline: one prediction per consecutive window, each window sampled as a clip
(frame folders carry no frame rate: `--window` assumes 25 fps for them, `--window_frames` is exact).

`--crop_faces` finds the face with OpenCV's Haar cascade shipped inside opencv-python-headless
(no download) on a few frames and crops the same square around it in every frame, so motion is
kept (data_pipeline/face_crop.py); without a detection the whole frame is used and the result says
so.

An input that cannot be read is named on stderr and in the output's `errors`; the others are still
predicted, and the exit status is 1.

The run is restored by ifdd_jax/trained_run.py (`load_trained`), which the analysis tools use too;
this module batches the clips, writes the output and is the command line.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence

import jax
import numpy as np

from data_pipeline.errors import DataError
from data_pipeline.inputs import Source, discover_sources, read_clip, windows
from ifdd_jax import compile_cache
from ifdd_jax.trained_run import TrainedModel, load_trained
from ifdd_jax.views import view_logits

# Frame rate assumed for frame folders when a timeline window is given in seconds.
ASSUMED_FPS = 25.0


# --- prediction --------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("model",))
def _probabilities(variables: dict, clips: jax.Array, *, model) -> jax.Array:
    return jax.nn.softmax(view_logits(model, variables, clips), axis=-1)


def make_predict_fn(trained: TrainedModel) -> Callable[[np.ndarray], np.ndarray]:
    """clips [B, V, T, S, S, 3] -> class probabilities [B, K] (view logits averaged, as in
    evaluation). One compiled program per model and batch shape, shared by every caller."""
    return lambda clips: np.asarray(_probabilities(trained.variables, clips, model=trained.model))


@dataclasses.dataclass
class _Job:
    result: dict  # the record the probabilities go to
    clip: np.ndarray  # [V, T, S, S, 3]


def _jobs(
    sources: Sequence[Source],
    config,
    results: list,
    errors: list,
    *,
    crop_faces: bool,
    window_s: float | None,
    window_frames: int | None,
) -> Iterator[_Job]:
    for source in sources:
        try:
            n = source.num_frames()
            fps = source.fps()
            whole = read_clip(source, config, crop_faces=crop_faces, num_frames=n)
            record = dict(
                input=source.path,
                kind=source.kind,
                num_frames=n,
                fps=fps,
                face_crop=list(whole.face) if whole.face else None,
            )
            if crop_faces and whole.face is None:
                record["face_crop_note"] = "no face detected; the whole frame was used"
            window = window_frames
            if window is None and window_s:
                window = max(1, int(round(window_s * (fps or ASSUMED_FPS))))
            jobs = [_Job(record, whole.clips)]
            if window and n > window:
                record["timeline"] = []
                for start, stop in windows(n, window, window):
                    part = read_clip(
                        source, config, start=start, stop=stop, crop_faces=crop_faces, num_frames=n
                    )
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


def padded_batch(num_clips: int, batch_size: int, sizes_run: set[int]) -> int:
    """The batch `num_clips` (<= batch_size) clips are padded to: a size already compiled in this
    run if one fits, else the next power of two up to batch_size (one clip: one forward pass)."""
    fits = [size for size in sizes_run if size >= num_clips]
    return min(fits) if fits else min(batch_size, 1 << (num_clips - 1).bit_length())


def predict_sources(
    trained: TrainedModel,
    sources: Sequence[Source],
    *,
    batch_size: int = 8,
    crop_faces: bool = False,
    window_s: float | None = None,
    window_frames: int | None = None,
) -> dict:
    """Predictions of every source (and of its windows), batched by `batch_size` clips.

    Returns {"results": [per-input record], "errors": [{"input", "error"}], ...}; a record holds
    "prediction", "probabilities" {class: p} and, for windowed inputs, "timeline".
    """
    predict = make_predict_fn(trained)
    names = trained.class_names
    results: list = []
    errors: list = []

    sizes_run: set[int] = set()

    def flush(pending: list[_Job]) -> None:
        clips = np.stack([job.clip for job in pending])
        size = padded_batch(len(pending), batch_size, sizes_run)
        sizes_run.add(size)
        if len(pending) < size:
            pad = np.zeros((size - len(pending),) + clips.shape[1:], clips.dtype)
            clips = np.concatenate([clips, pad])
        probs = predict(clips)
        for job, p in zip(pending, probs):
            job.result["prediction"] = names[int(np.argmax(p))]
            job.result["probabilities"] = {n: round(float(x), 6) for n, x in zip(names, p)}

    pending: list[_Job] = []
    for job in _jobs(
        sources,
        trained.config,
        results,
        errors,
        crop_faces=crop_faces,
        window_s=window_s,
        window_frames=window_frames,
    ):
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
        lines.append(
            f"{record['input']}: {record['prediction']} (p = {ranked[0][1]:.3f})   [{probs}]"
        )
        for entry in record.get("timeline", []):
            span = (
                f"{entry['start_s']:7.2f}-{entry['end_s']:7.2f} s"
                if "start_s" in entry
                else f"frames {entry['start_frame']}-{entry['end_frame']}"
            )
            best = sorted(entry["probabilities"].items(), key=lambda kv: -kv[1])[:top]
            lines.append(
                f"    {span}: {entry['prediction']:<10} "
                + ", ".join(f"{n} {p:.2f}" for n, p in best)
            )
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
        writer.writerow(
            ["input", "window_start_frame", "window_end_frame", "start_s", "end_s", "prediction"]
            + [f"p_{n}" for n in names]
        )
        for record in report["results"]:
            rows = [({}, record)] + [(e, e) for e in record.get("timeline", [])]
            for window, values in rows:
                writer.writerow(
                    [
                        record["input"],
                        window.get("start_frame", ""),
                        window.get("end_frame", ""),
                        window.get("start_s", ""),
                        window.get("end_s", ""),
                        values["prediction"],
                    ]
                    + [values["probabilities"][n] for n in names]
                )
        for error in report["errors"]:
            writer.writerow(
                [error["input"], "", "", "", "", "ERROR: " + error["error"]] + [""] * len(names)
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ifdd_jax.predict",
        description="Predict the emotion of videos or frame folders with a trained checkpoint.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--workdir", help="a training run's folder (its best checkpoint is used)")
    where.add_argument("--checkpoint", help="a checkpoint folder or one step folder")
    add = parser.add_argument
    add("--config", help="the run's config without config.json (configs/x.py:args or .json)")
    add("--input", required=True, nargs="+", help="video files, frame folders or folders of them")
    add("--output", help="write the predictions (.json or .csv)")
    add("--batch_size", type=int, default=8, help="clips per forward pass")
    add("--window", type=float, help="also predict every WINDOW seconds of an input (a timeline)")
    add("--window_frames", type=int, help="the timeline window in frames (frame folders: no fps)")
    add("--crop_faces", action="store_true", help="crop the face (OpenCV Haar cascade) first")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch_size must be positive")
    try:
        if args.output and not args.output.endswith((".json", ".csv")):
            raise ValueError(f"{args.output}: --output must end in .json or .csv")
        sources = [s for path in args.input for s in discover_sources(path)]
        trained = load_trained(args.workdir, args.checkpoint, args.config)
        report = predict_sources(
            trained,
            sources,
            batch_size=args.batch_size,
            crop_faces=args.crop_faces,
            window_s=args.window,
            window_frames=args.window_frames,
        )
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
    compile_cache.enable()
    sys.exit(main())
