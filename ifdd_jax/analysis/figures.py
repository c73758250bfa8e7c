"""Matplotlib set-up shared by the analysis figures: the Agg backend (no display), a paper-like
style and `save`, which writes a PNG at a stated DPI and refuses to leave an empty file."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window (CI, Colab, servers)

import matplotlib.pyplot as plt  # noqa: E402

DPI = 200  # dots per inch of every saved figure unless a command's --dpi says otherwise

STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def new_figure(*args, **kwargs):
    """plt.subplots with the shared style applied."""
    plt.rcParams.update(STYLE)
    return plt.subplots(*args, **kwargs)


def save(fig, path: str, dpi: int = DPI) -> str:
    """Writes `fig` to `path` (PNG) at `dpi` and closes it; returns the path."""
    if not path.lower().endswith(".png"):
        raise ValueError(f"{path}: figures are written as PNG, the name must end in .png")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    if os.path.getsize(path) == 0:
        raise OSError(f"{path}: matplotlib wrote an empty file")
    return path


def add_output_args(parser: argparse.ArgumentParser, filename: str) -> None:
    """`--out_dir DIR` (where figures go, the same flag in every analysis command) and `--out FILE`
    (the PNG itself, kept for scripts written before --out_dir)."""
    parser.add_argument(
        "--out_dir", default="figures", help=f"where the figure goes (as DIR/{filename})"
    )
    parser.add_argument("--out", default=None, help="the PNG file itself (overrides --out_dir)")


def output_path(args: argparse.Namespace, filename: str) -> str:
    """The PNG path the flags of `add_output_args` name."""
    return args.out or os.path.join(args.out_dir, filename)


def run_command(
    write: Callable[[], str | Iterable[str]],
    errors: tuple[type[BaseException], ...] = (OSError, ValueError),
) -> int:
    """The tail of every analysis command: runs `write` (which returns the PNG path or paths it
    wrote), prints `wrote <path>` for each, or one `error: ...` line; returns the exit status."""
    try:
        written = write()
        paths = [written] if isinstance(written, str) else list(written)
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"wrote {path}")
    return 0
