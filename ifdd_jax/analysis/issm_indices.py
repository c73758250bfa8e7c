"""Where ISSM's learned static and dynamic indices fall in time.

    python -m ifdd_jax.analysis.issm_indices --workdir runs/default --out figs/issm_indices.png

Left: for the first `--num_clips` clips of a split, the positions (in X's time axis, T_X frames)
that each static slot (circles) and dynamic slot (triangles) reads, with the fixed even/odd split
as a reference. Right: their distribution over the whole split (histograms, one per group).
Positions are ISSM's `static_index` / `dynamic_index` outputs, the clamped frame positions that
the interpolation reads.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from ifdd_jax import compile_cache
from ifdd_jax.analysis import figures
from ifdd_jax.analysis.outputs import split_outputs
from ifdd_jax.trained_run import load_trained

STATIC_COLOUR, DYNAMIC_COLOUR = "tab:blue", "tab:orange"


def plot_indices(
    static: np.ndarray,
    dynamic: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    path: str,
    *,
    num_clips: int = 8,
    title: str = "",
    dpi: int | None = None,
) -> str:
    """static, dynamic [N, t] positions in X's time axis (T_X = 2t frames); labels [N]."""
    n, t = static.shape
    x_frames = 2 * t
    shown = min(num_clips, n)
    fig, (left, right) = figures.new_figure(
        1, 2, figsize=(8.0, 0.35 * shown + 2.0), gridspec_kw=dict(width_ratios=(1.2, 1.0))
    )
    for i in range(shown):
        left.scatter(
            static[i],
            np.full(t, i),
            marker="o",
            color=STATIC_COLOUR,
            s=22,
            label="static I_S" if i == 0 else None,
            zorder=3,
        )
        left.scatter(
            dynamic[i],
            np.full(t, i),
            marker="^",
            color=DYNAMIC_COLOUR,
            s=22,
            label="dynamic I_D" if i == 0 else None,
            zorder=3,
        )
    for frame in range(x_frames):  # the fixed split reads the even (static) and odd frames
        left.axvline(frame, color="0.85" if frame % 2 else "0.7", lw=0.6, zorder=1)
    left.set_yticks(range(shown))
    left.set_yticklabels([f"clip {i} ({class_names[int(labels[i])]})" for i in range(shown)])
    left.invert_yaxis()
    left.set_xlim(-0.5, x_frames - 0.5)
    left.set_xlabel(f"temporal position in X (frames 0 to {x_frames - 1})")
    left.set_title("indices per clip (grid: even / odd frames)")
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)

    bins = np.linspace(-0.5, x_frames - 0.5, 4 * x_frames + 1)
    right.hist(static.ravel(), bins=bins, color=STATIC_COLOUR, alpha=0.6, label="static I_S")
    right.hist(dynamic.ravel(), bins=bins, color=DYNAMIC_COLOUR, alpha=0.6, label="dynamic I_D")
    right.set_xlim(-0.5, x_frames - 0.5)
    right.set_xlabel(f"temporal position in X (frames 0 to {x_frames - 1})")
    right.set_ylabel(f"number of indices ({n} clips × {t} slots)")
    right.set_title("distribution over the split")
    right.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return figures.save(fig, path, dpi or figures.DPI)


def indices_figure(
    workdir: str,
    path: str,
    *,
    split: str = "test",
    num_clips: int = 8,
    max_clips: int | None = None,
    dpi: int | None = None,
) -> str:
    trained = load_trained(workdir)
    outputs = split_outputs(
        trained, workdir, ["static_index", "dynamic_index"], split=split, max_clips=max_clips
    )
    title = (
        f"ISSM indices, {trained.config.model_name} ({trained.config.flavor}), {split} split, "
        f"T = {trained.num_frames} input frames"
    )
    return plot_indices(
        outputs["static_index"],
        outputs["dynamic_index"],
        outputs["label"],
        trained.class_names,
        path,
        num_clips=num_clips,
        title=title,
        dpi=dpi,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ifdd_jax.analysis.issm_indices", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--workdir", required=True, help="a training run's folder")
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--num_clips", type=int, default=8, help="clips shown one per row")
    parser.add_argument(
        "--max_clips",
        type=int,
        default=None,
        help="clips in the distribution (default: the whole split)",
    )
    figures.add_output_args(parser, "issm_indices.png")
    parser.add_argument("--dpi", type=int, default=None)
    args = parser.parse_args(argv)
    out = figures.output_path(args, "issm_indices.png")
    return figures.run_command(
        lambda: indices_figure(
            args.workdir,
            out,
            split=args.split,
            num_clips=args.num_clips,
            max_clips=args.max_clips,
            dpi=args.dpi,
        )
    )


if __name__ == "__main__":
    compile_cache.enable()  # a rerun on the same run does not compile the model again
    sys.exit(main())
