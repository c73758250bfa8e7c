"""Grad-CAM of LADM's static and dynamic groups Y_S and Y_D, as the paper's appendix shows them.

    python -m ifdd_jax.analysis.gradcam --workdir runs/default --input clip.mp4 --out_dir figs

For a target class k the activations A are Y_S or Y_D `[t, H, W, C]` as LADM outputs them (in the
reference flavor they are lifted from the layer-normalised groups, LN(X_S) and LN(X_D), and Y_D
passes the released refinement, whose output is what `project_compress` reads). The gradient G of
the logit y_k with respect to A gives the channel weights by spatial averaging,
α[τ, c] = mean_{h, w} G[τ, h, w, c], and the map is ReLU(Σ_c α[τ, c] A[τ, h, w, c]).

Gradients with respect to an intermediate tensor are taken by adding a zero perturbation at the
module call that produces it (flax `intercept_methods`), so the model code needs no hook:
Y_S = X_S + U(·) is perturbed at the updater's output, Y_D = X_D − P(·) at the predictor's
output (with the sign flipped), the reference Y_D at the refiner's output, and without lifting
(LADM "none") at the LayerNorm or the ISSM output that is Y itself.

The t slots of Y come from the frames ISSM read (`static_index`, `dynamic_index`, positions in X's
time axis); each map is placed at its slot's input-frame position, linearly interpolated over the
clip's T frames and resized to the frame size, so a figure shows one heatmap per frame and one
row per emotion.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from data_pipeline.inputs import discover_sources, read_clip
from ifdd_jax import compile_cache
from ifdd_jax.analysis import figures
from ifdd_jax.trained_run import TrainedModel, load_trained

GROUPS = ("static", "dynamic")
GROUP_TITLES = {"static": "Y_S (static)", "dynamic": "Y_D (dynamic)"}

# Where each group is produced, in order of preference: (module path, sign, output key). The
# first path the model calls is used. sign -1: the group is X - module output.
_PRODUCERS = {
    "static": [
        (("ladm", "updater"), 1.0, None),
        (("ladm", "static_norm"), 1.0, None),
        (("issm",), 1.0, "static"),
    ],
    "dynamic": [
        (("ladm", "refiner"), 1.0, None),
        (("ladm", "predictor"), -1.0, None),
        (("ladm", "dynamic_norm"), 1.0, None),
        (("issm",), 1.0, "dynamic"),
    ],
}


def _called_paths(model: nn.Module, variables: dict, clips: jax.Array) -> set:
    paths = set()

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__":
            paths.add(tuple(context.module.path))
        return next_fun(*args, **kwargs)

    def forward(v, x):
        with nn.intercept_methods(record):
            return model.apply(v, x, train=False)

    jax.eval_shape(forward, variables, clips)
    return paths


def producers(model: nn.Module, variables: dict, clips: jax.Array) -> dict[str, tuple]:
    """{group: (module path, sign, output key)} of the calls producing Y_S and Y_D."""
    called = _called_paths(model, variables, clips)
    if ("ladm",) not in called:
        raise ValueError(
            f"Grad-CAM of Y_S/Y_D needs an IFDD model; {type(model).__name__} has no LADM"
        )
    chosen = {}
    for group, candidates in _PRODUCERS.items():
        for path, sign, key in candidates:
            if path in called:
                chosen[group] = (path, sign, key)
                break
        else:
            raise ValueError(f"cannot find the module producing {GROUP_TITLES[group]}")
    return chosen


@functools.partial(jax.jit, static_argnames=("model", "where"))
def logit_gradients(
    variables: dict, clips: jax.Array, *, model: nn.Module, where: tuple[tuple, ...]
) -> tuple[dict, dict[str, jax.Array]]:
    """Outputs on clips [N, T, S, S, 3] and, per group, d logits / d Y as [N, K, t, H, W, C].
    `where`: (group, (module path, sign, output key)) pairs, as `producers` gives them."""
    where = dict(where)

    def forward(perturbation: dict[str, jax.Array]) -> dict:
        def add(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name != "__call__":
                return out
            path = tuple(context.module.path)
            for group, (target, sign, key) in where.items():
                if path == target:
                    eps = perturbation[group]
                    if key is None:
                        out = out + sign * eps.reshape(out.shape).astype(out.dtype)
                    else:
                        out = dict(out)
                        out[key] = out[key] + sign * eps.reshape(out[key].shape)
            return out

        with nn.intercept_methods(add):
            return model.apply(variables, clips, train=False)

    outputs = jax.eval_shape(lambda: model.apply(variables, clips, train=False))
    zeros = {g: jnp.zeros(outputs[g].shape, jnp.float32) for g in GROUPS}
    num_classes = outputs["logits"].shape[-1]

    def logit_sum(perturbation, k):
        # The clips are independent in eval mode, so the gradient of the summed logit k gives
        # every clip's own gradient.
        return forward(perturbation)["logits"][:, k].sum()

    grads = jax.vmap(lambda k: jax.grad(logit_sum)(zeros, k))(jnp.arange(num_classes))
    grads = {g: jnp.moveaxis(grads[g], 0, 1) for g in GROUPS}  # [N, K, t, H, W, C]
    return forward(zeros), grads


def grad_cam(activation: jax.Array, gradient: jax.Array) -> jax.Array:
    """ReLU(Σ_c α[τ, c] A[τ, h, w, c]) with α = spatial mean of the gradient.
    activation [..., t, H, W, C], gradient [..., t, H, W, C] -> [..., t, H, W]."""
    alpha = gradient.mean(axis=(-3, -2))  # [..., t, C]
    return jax.nn.relu(jnp.einsum("...thwc,...tc->...thw", activation, alpha))


def frame_positions(slot_index: np.ndarray, num_frames: int, x_frames: int) -> np.ndarray:
    """Input-frame positions [t] of slots read at X-time positions `slot_index` [t] (X has
    `x_frames` frames, each covering num_frames / x_frames input frames)."""
    ratio = num_frames / x_frames
    return (np.asarray(slot_index, np.float64) + 0.5) * ratio - 0.5


def to_frames(
    cams: np.ndarray, positions: np.ndarray, num_frames: int, image_size: int
) -> np.ndarray:
    """Slot maps [..., t, H, W] at input-frame `positions` [t] -> [..., T, S, S]: linear in time
    (held constant beyond the first and last slot), bilinear in space."""
    order = np.argsort(positions)
    pos, cams = positions[order], np.take(cams, order, axis=-3)
    weights = np.zeros((num_frames, len(pos)))
    for f in range(num_frames):
        if f <= pos[0]:
            weights[f, 0] = 1.0
        elif f >= pos[-1]:
            weights[f, -1] = 1.0
        else:
            j = int(np.searchsorted(pos, f, side="right")) - 1
            span = pos[j + 1] - pos[j]
            w = (f - pos[j]) / span if span > 0 else 0.0
            weights[f, j], weights[f, j + 1] = 1.0 - w, w
    in_time = np.einsum("ft,...thw->...fhw", weights, cams)
    shape = in_time.shape[:-2] + (image_size, image_size)
    return np.asarray(jax.image.resize(in_time, shape, "linear"))


def clip_cams(trained: TrainedModel, clip: np.ndarray) -> dict:
    """Grad-CAM of one clip [T, S, S, 3] for every class.

    Returns {"probabilities": [K], "static"/"dynamic": maps [K, T, S, S] (each in [0, 1], scaled
    by the group's maximum over classes, frames and pixels), "slots": {group: frame positions [t]},
    "raw": {group: slot maps [K, t, H, W]}, "gradients": {group: d logits / d Y [K, t, H, W, C]}}.
    """
    clips = jnp.asarray(clip[None])
    where = producers(trained.model, trained.variables, clips)
    outputs, grads = logit_gradients(
        trained.variables, clips, model=trained.model, where=tuple(sorted(where.items()))
    )
    num_frames, size = clip.shape[0], clip.shape[1]
    x_frames = 2 * outputs["static"].shape[1]  # Y holds T_X / 2 slots
    result = {
        "probabilities": np.asarray(jax.nn.softmax(outputs["logits"][0])),
        "slots": {},
        "raw": {},
        "gradients": {g: np.asarray(grads[g][0]) for g in GROUPS},
    }
    for group in GROUPS:
        raw = np.asarray(grad_cam(outputs[group][0][None], grads[group][0]))  # [K, t, H, W]
        positions = frame_positions(np.asarray(outputs[f"{group}_index"][0]), num_frames, x_frames)
        maps = to_frames(raw, positions, num_frames, size)
        peak = maps.max()
        result[group] = maps / peak if peak > 0 else maps
        result["slots"][group] = positions
        result["raw"][group] = raw
    return result


def _display_frames(clip: np.ndarray, normalization: str) -> np.ndarray:
    """The model input [T, S, S, 3] back in [0, 1] for display."""
    if normalization == "imagenet":
        # deferred: imports TensorFlow
        from data_pipeline.augment import IMAGENET_MEAN, IMAGENET_STD

        clip = clip * np.asarray(IMAGENET_STD) + np.asarray(IMAGENET_MEAN)
    return np.clip(clip, 0.0, 1.0)


def plot_cams(
    frames: np.ndarray,
    cams: np.ndarray,
    class_names: Sequence[str],
    probabilities: np.ndarray,
    slots: np.ndarray,
    title: str,
    path: str,
    dpi: int | None = None,
) -> str:
    """Rows: the frames, then one heatmap row per emotion; columns: the T frames."""
    num_frames = frames.shape[0]
    rows = 1 + len(class_names)
    fig, axes = figures.new_figure(
        rows,
        num_frames,
        figsize=(1.0 * num_frames + 1.6, 1.0 * rows),
        squeeze=False,
        gridspec_kw=dict(wspace=0.04, hspace=0.08),
    )
    gray = frames.mean(axis=-1)
    image = None
    for f in range(num_frames):
        axes[0, f].imshow(frames[f])
        read = np.any(np.abs(slots - f) < 0.5)
        axes[0, f].set_title(f"{f}{'*' if read else ''}", fontsize=7)
        for k in range(len(class_names)):
            ax = axes[k + 1, f]
            ax.imshow(gray[f], cmap="gray", vmin=0, vmax=1)
            image = ax.imshow(cams[k, f], cmap="jet", vmin=0, vmax=1, alpha=0.5)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    axes[0, 0].set_ylabel("input", rotation=0, ha="right", va="center")
    for k, name in enumerate(class_names):
        axes[k + 1, 0].set_ylabel(
            f"{name}\np={probabilities[k]:.2f}", rotation=0, ha="right", va="center"
        )
    fig.suptitle(f"{title}\nframe index (* = frame an ISSM slot reads)", fontsize=9)
    bar = fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.02, pad=0.01)
    bar.set_label("Grad-CAM (normalised)")
    return figures.save(fig, path, dpi or figures.DPI)


def gradcam_figures(
    trained: TrainedModel, source_path: str, out_dir: str, dpi: int | None = None
) -> list[str]:
    """Reads a clip (video or frame folder) as evaluation does and writes
    `<out_dir>/gradcam_<clip>_{static,dynamic}.png`; returns the paths."""
    sources = discover_sources(source_path)
    paths = []
    for source in sources:
        clip = read_clip(source, trained.config).clips[0]  # first view [T, S, S, 3]
        cams = clip_cams(trained, clip)
        frames = _display_frames(clip, trained.config.data.get("normalization", "unit"))
        stem = os.path.splitext(os.path.basename(source.path.rstrip("/")))[0]
        for group in GROUPS:
            path = os.path.join(out_dir, f"gradcam_{stem}_{group}.png")
            title = (
                f"Grad-CAM of {GROUP_TITLES[group]}, {trained.config.model_name}: "
                f"{os.path.basename(source.path.rstrip('/'))}"
            )
            paths.append(
                plot_cams(
                    frames,
                    cams[group],
                    trained.class_names,
                    cams["probabilities"],
                    cams["slots"][group],
                    title,
                    path,
                    dpi,
                )
            )
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ifdd_jax.analysis.gradcam",
        description="Grad-CAM of Y_S and Y_D over a clip's frames.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--workdir", help="a training run's folder")
    where.add_argument("--checkpoint", help="a checkpoint folder or one step folder")
    parser.add_argument("--config", default=None, help="the run's config if it has no config.json")
    parser.add_argument(
        "--input", required=True, help="a video, a frame folder or a folder of them"
    )
    parser.add_argument("--out_dir", default="figures", help="where the PNG files go")
    parser.add_argument("--dpi", type=int, default=None, help="resolution of the PNG files")
    args = parser.parse_args(argv)
    return figures.run_command(
        lambda: gradcam_figures(
            load_trained(args.workdir, args.checkpoint, args.config),
            args.input,
            args.out_dir,
            args.dpi,
        )
    )


if __name__ == "__main__":
    compile_cache.enable()  # a rerun on the same run does not compile the model again
    sys.exit(main())
