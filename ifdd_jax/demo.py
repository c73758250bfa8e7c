"""A web page for a trained run: upload a clip, see its emotions over time and where IFDD looks.

    python -m ifdd_jax.demo --workdir runs/default                # http://127.0.0.1:7860
    python -m ifdd_jax.demo --workdir runs/default --host 0.0.0.0 --port 8080 --share

Needs the optional `demo` extra (Gradio). The page takes a video (anything decord reads) or a zip
of one frame folder (numbered images, at its root or in one folder), optionally crops the face
(OpenCV's bundled detector, data_pipeline/face_crop.py) and shows
* the predicted emotion of the whole clip and its class probabilities, read and averaged over the
  evaluation views exactly as `python -m ifdd_jax.predict` does (ifdd_jax/predict.py);
* a timeline: the class probabilities of each consecutive window (`window` seconds; frame folders
  are taken as 25 fps), each window sampled as a clip;
* Grad-CAM of LADM's static and dynamic groups Y_S and Y_D for the predicted class on a few frames
  (ifdd_jax/analysis/gradcam.py's clip_cams; IFDD models only: a baseline has no Y_S / Y_D).
An upload that cannot be read gets a message naming the file and the fault instead of a result.
It runs on the CPU (and on an accelerator when JAX has one); the first prediction compiles the
model (seconds to a minute on a CPU), later ones reuse it. `--share` asks Gradio for a temporary
public link; otherwise the page is served on `--host` only.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence

import numpy as np

from data_pipeline.errors import DataError
from data_pipeline.inputs import Source, discover_sources, read_clip
from data_pipeline.video import VIDEO_EXTENSIONS
from ifdd_jax import compile_cache, predict
from ifdd_jax.analysis import figures, gradcam
from ifdd_jax.trained_run import TrainedModel, load_trained

DEFAULT_WINDOW_S = 1.0
GRADCAM_FRAMES = 4  # frames shown per group
BATCH_SIZE = 4  # clips per forward pass (the whole clip and its windows)
UPLOAD_TYPES = list(VIDEO_EXTENSIONS) + [".zip"]


@dataclasses.dataclass
class Analysis:
    """What the page shows for one upload."""

    prediction: str
    probabilities: dict[str, float]
    timeline_png: str
    gradcam_png: str | None
    notes: list[str]

    def message(self) -> str:
        p = self.probabilities[self.prediction]
        lines = [f"### Predicted emotion: {self.prediction} (p = {p:.2f})"]
        return "\n\n".join(lines + self.notes)


def source_of(path: str, work_dir: str) -> Source:
    """The clip of an upload: a video file, or a zip of frames extracted under `work_dir`."""
    name = os.path.basename(path)
    if name.lower().endswith(".zip"):
        folder = tempfile.mkdtemp(prefix="frames_", dir=work_dir)
        try:
            with zipfile.ZipFile(path) as archive:
                archive.extractall(folder)  # member names with ".." or "/" are made safe
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(name, f"not a readable zip archive ({e})") from e
        found = discover_sources(folder)
        if len(found) != 1 or found[0].kind != "frames":
            raise DataError(name, f"holds {len(found)} clips; zip one folder of frames")
        return found[0]
    if not name.lower().endswith(tuple(VIDEO_EXTENSIONS)):
        raise DataError(name, f"not a video ({', '.join(VIDEO_EXTENSIONS)}) nor a .zip of frames")
    return Source(path, "video")


def plot_timeline(entries: Sequence[dict], names: Sequence[str], path: str) -> str:
    """Stacked class probabilities per window (x: seconds, or frames without a frame rate), with
    each window's predicted emotion above it."""
    seconds = all("start_s" in e for e in entries)
    start = [e["start_s"] if seconds else e["start_frame"] for e in entries]
    stop = [e["end_s"] if seconds else e["end_frame"] for e in entries]
    probs = np.array([[e["probabilities"][n] for n in names] for e in entries])  # [W, K]
    fig, ax = figures.new_figure(figsize=(max(4.0, 0.9 * len(entries) + 2.5), 2.8))
    edges = start + [stop[-1]]
    stacked = np.vstack([probs, probs[-1:]]).T  # a step per window
    ax.stackplot(edges, stacked, labels=names, step="post", alpha=0.85)
    for a, b, e in zip(start, stop, entries):
        ax.text((a + b) / 2, 1.02, e["prediction"], ha="center", va="bottom", fontsize=7)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (s)" if seconds else "frame")
    ax.set_ylabel("probability")
    ax.set_title("Emotion per window", pad=14)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return figures.save(fig, path, dpi=110)


def plot_gradcam(trained: TrainedModel, clip: np.ndarray, class_name: str, path: str) -> str:
    """Grad-CAM of Y_S and Y_D for `class_name` over GRADCAM_FRAMES frames of `clip`
    [T, S, S, 3] (the model input, first view)."""
    cams = gradcam.clip_cams(trained, clip)
    k = trained.class_names.index(class_name)
    frames = np.unique(np.linspace(0, clip.shape[0] - 1, GRADCAM_FRAMES).round().astype(int))
    shown = gradcam._display_frames(clip, trained.config.data.get("normalization", "unit"))
    fig, axes = figures.new_figure(
        len(gradcam.GROUPS), len(frames), figsize=(1.6 * len(frames) + 1.2, 3.4), squeeze=False
    )
    for row, group in enumerate(gradcam.GROUPS):
        for col, f in enumerate(frames):
            ax = axes[row, col]
            ax.imshow(shown[f].mean(axis=-1), cmap="gray", vmin=0, vmax=1)
            ax.imshow(cams[group][k, f], cmap="jet", vmin=0, vmax=1, alpha=0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if row == 0:
                ax.set_title(f"frame {f}", fontsize=8)
        axes[row, 0].set_ylabel(gradcam.GROUP_TITLES[group], fontsize=8)
    fig.suptitle(f"Grad-CAM for {class_name}", fontsize=9)
    return figures.save(fig, path, dpi=110)


def analyse(
    trained: TrainedModel,
    upload: str,
    work_dir: str,
    *,
    crop_faces: bool = False,
    window_s: float = DEFAULT_WINDOW_S,
) -> Analysis:
    """Reads, predicts and draws one upload; DataError (naming the file) when it is unreadable."""
    out = tempfile.mkdtemp(prefix="result_", dir=work_dir)
    source = source_of(upload, out)
    report = predict.predict_sources(
        trained, [source], batch_size=BATCH_SIZE, crop_faces=crop_faces, window_s=window_s
    )
    if report["errors"]:
        # The message names the file; show the upload's own name, not the server's copy.
        message = report["errors"][0]["error"].replace(source.path, os.path.basename(upload))
        raise ValueError(message)
    record = report["results"][0]
    notes = []
    if record.get("face_crop_note"):
        notes.append(f"Note: {record['face_crop_note']}.")
    entries = record.get("timeline")
    if not entries:
        notes.append("The clip is not longer than one window: the timeline has one window.")
        entries = [dict(record, start_frame=0, end_frame=record["num_frames"])]
        if record.get("fps"):
            entries[0].update(start_s=0.0, end_s=record["num_frames"] / record["fps"])
    names = trained.class_names
    timeline = plot_timeline(entries, names, os.path.join(out, "timeline.png"))
    cam_png = None
    try:
        clip = read_clip(source, trained.config, crop_faces=crop_faces).clips[0]
        cam_png = plot_gradcam(trained, clip, record["prediction"], os.path.join(out, "cam.png"))
    except ValueError as e:  # a model without LADM has no Y_S / Y_D
        notes.append(f"No Grad-CAM: {e}.")
    return Analysis(record["prediction"], record["probabilities"], timeline, cam_png, notes)


def respond(trained: TrainedModel, work_dir: str) -> Callable:
    """The page's callback: (upload path, crop, window) -> (message, probabilities, timeline,
    Grad-CAM); an unreadable upload gives a message and empty outputs."""

    def run(upload: str | None, crop_faces: bool, window_s: float) -> tuple:
        if not upload:
            return "Upload a video or a zip of frames first.", None, None, None
        try:
            result = analyse(
                trained, upload, work_dir, crop_faces=crop_faces, window_s=float(window_s)
            )
        except (DataError, OSError, ValueError) as e:
            return f"### Could not read the upload\n\n{e}", None, None, None
        return result.message(), result.probabilities, result.timeline_png, result.gradcam_png

    return run


def build_app(trained: TrainedModel, work_dir: str):
    """The Gradio page (gr.Blocks); its elements have stable ids for tests."""
    # deferred: gradio is in the optional demo extra
    import gradio as gr

    c = trained.config
    with gr.Blocks(title="IFDD: dynamic facial expression recognition") as app:
        gr.Markdown(
            f"## IFDD emotion recognition\n\n`{c.model_name}` ({c.get('flavor', 'paper')}), "
            f"{trained.num_frames} frames at {trained.image_size}² per clip, classes: "
            f"{', '.join(trained.class_names)}. Checkpoint `{trained.checkpoint}`."
        )
        with gr.Row():
            with gr.Column():
                upload = gr.File(
                    label="A video or a zip of frames",
                    file_types=UPLOAD_TYPES,
                    type="filepath",
                    elem_id="upload",
                )
                crop = gr.Checkbox(label="Crop the face first", value=False, elem_id="crop")
                window = gr.Slider(
                    0.2,
                    10.0,
                    value=DEFAULT_WINDOW_S,
                    step=0.1,
                    label="Timeline window (s)",
                    elem_id="window",
                )
                button = gr.Button("Predict", variant="primary", elem_id="predict")
            with gr.Column():
                message = gr.Markdown(elem_id="message")
                probabilities = gr.Label(
                    label="Class probabilities",
                    elem_id="probabilities",
                    num_top_classes=len(trained.class_names),
                )
        timeline = gr.Image(label="Timeline", type="filepath", elem_id="timeline")
        cams = gr.Image(label="Grad-CAM of Y_S and Y_D", type="filepath", elem_id="gradcam")
        button.click(
            respond(trained, work_dir),
            inputs=[upload, crop, window],
            outputs=[message, probabilities, timeline, cams],
            concurrency_limit=1,
        )
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ifdd_jax.demo", description="A web page predicting emotions with a run."
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--workdir", help="a training run's folder (its best checkpoint is used)")
    where.add_argument("--checkpoint", help="a checkpoint folder or one step folder")
    parser.add_argument("--config", default=None, help="the run's config if it has no config.json")
    parser.add_argument("--host", default="127.0.0.1", help="the address to serve on")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="a temporary public Gradio link")
    args = parser.parse_args(argv)
    try:
        trained = load_trained(args.workdir, args.checkpoint, args.config)
        # deferred: gradio is in the optional demo extra
        import gradio as gr
    except (DataError, OSError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    work_dir = tempfile.mkdtemp(prefix="ifdd_demo_")
    # System fonts: the page loads nothing from outside the server.
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    build_app(trained, work_dir).launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        allowed_paths=[work_dir],
        theme=theme,
        ssr_mode=False,
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home
    compile_cache.enable()
    sys.exit(main())
