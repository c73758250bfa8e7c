"""The efficiency table (the paper's Table 12 form): params and GFLOPs of every registered model
and every named ablation, with the paper's figures beside them.

    python -m ifdd_jax.analysis.efficiency --config configs/dfew.py --out figs/efficiency.png

Costs come from `ifdd_jax.tools.model_summary.model_cost` (shapes from `jax.eval_shape`, MACs of
the parameterised layers from the traced program, as `model_summary` reports them; nothing is
compiled or executed), for one clip of the config's input size (16 × 224² for DFEW) unless
`--num_frames` / `--image_size` say otherwise. Ablations are rows of IFDD-2DCNN
(`model=ifdd_2dcnn,ablation=<name>`). Writes the PNG table and, next to it, the same table as
Markdown and CSV.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys
from collections.abc import Sequence

from ifdd_jax.analysis import figures
from ifdd_jax.config_lib import ABLATIONS, load_config_file
from ifdd_jax.models.registry import MODELS
from ifdd_jax.tools.model_summary import PAPER_COSTS, model_cost

ABLATION_BASE = "ifdd_2dcnn"


@dataclasses.dataclass
class Row:
    name: str  # a registered model, or "ifdd_2dcnn + <ablation>"
    params_m: float
    gflops: float
    paper_params_m: float | None
    paper_gflops: float | None
    paper_label: str


def _config(spec: str, args: str, num_frames: int | None, image_size: int | None):
    base, _, given = spec.partition(":")
    config = load_config_file(f"{base}:{','.join(a for a in (given, args) if a)}")
    if num_frames:
        config.data.num_frames = num_frames
    if image_size:
        config.data.image_size = image_size
    return config


def efficiency_rows(
    spec: str = "configs/dfew.py",
    *,
    num_frames: int | None = None,
    image_size: int | None = None,
    models: Sequence[str] | None = None,
    ablations: Sequence[str] | None = None,
) -> list[Row]:
    """One row per registered model (default: all of `MODELS`) and per ablation (default: all of
    `ABLATIONS`), measured at the input size of the config `spec`."""
    models = list(MODELS) if models is None else list(models)
    ablations = list(ABLATIONS) if ablations is None else list(ablations)
    jobs = [(name, f"model={name}", name) for name in models]
    jobs += [
        (f"{ABLATION_BASE} + {a}", f"model={ABLATION_BASE},ablation={a}", None) for a in ablations
    ]
    rows = []
    for name, args, paper_key in jobs:
        params, macs = model_cost(_config(spec, args, num_frames, image_size))
        label, paper_params, paper_gflops = PAPER_COSTS.get(paper_key, ("", None, None))
        rows.append(Row(name, params / 1e6, macs / 1e9, paper_params, paper_gflops, label))
    return rows


def _cells(row: Row) -> list[str]:
    def number(x, fmt):
        return "–" if x is None else format(x, fmt)

    gflops = f"{row.gflops:.3f}" if row.gflops < 1 else f"{row.gflops:.2f}"
    return [
        row.name,
        f"{row.params_m:.2f}",
        gflops,
        number(row.paper_params_m, ".2f"),
        number(row.paper_gflops, ".2f"),
    ]


HEADER = ["model", "params (M)", "GFLOPs", "paper params (M)", "paper GFLOPs"]


def markdown_table(rows: Sequence[Row], input_text: str) -> str:
    lines = [
        f"Input: one clip of {input_text}. GFLOPs = GMACs, as the paper counts them.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def write_csv(rows: Sequence[Row], path: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "params_m", "gflops", "paper_params_m", "paper_gflops"])
        for r in rows:
            writer.writerow(
                [
                    r.name,
                    round(r.params_m, 4),
                    round(r.gflops, 4),
                    r.paper_params_m if r.paper_params_m is not None else "",
                    r.paper_gflops if r.paper_gflops is not None else "",
                ]
            )


def plot_table(rows: Sequence[Row], input_text: str, path: str, dpi: int | None = None) -> str:
    """The table as a figure (matplotlib's table), paper rows shaded."""
    fig, ax = figures.new_figure(figsize=(7.5, 0.28 * len(rows) + 0.9))
    ax.axis("off")
    labels = ["model", "params\n(M)", "GFLOPs", "paper\nparams (M)", "paper\nGFLOPs"]
    table = ax.table(
        cellText=[_cells(r) for r in rows],
        colLabels=labels,
        loc="center",
        cellLoc="right",
        colLoc="right",
        colWidths=[0.44, 0.12, 0.12, 0.16, 0.14],
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1.0, 1.25)
    for (r, c), cell in table.get_celld().items():
        cell.set_linewidth(0.3)
        if c == 0:
            cell.set_text_props(ha="left")
            cell._loc = "left"
        if r == 0:
            cell.set_text_props(weight="bold")
            cell.set_height(cell.get_height() * 1.8)
        elif rows[r - 1].paper_params_m is not None:
            cell.set_facecolor("0.93")
    ax.set_title(
        f"Parameters and cost per clip of {input_text} (GFLOPs = GMACs)\n"
        f"shaded: models the paper reports (its figures are for 16 × 224 × 224 × 3)",
        fontsize=9,
    )
    return figures.save(fig, path, dpi or figures.DPI)


def efficiency_table(
    spec: str,
    path: str,
    *,
    num_frames: int | None = None,
    image_size: int | None = None,
    models: Sequence[str] | None = None,
    ablations: Sequence[str] | None = None,
    dpi: int | None = None,
) -> tuple:
    """Writes `<path>` (PNG) and `<path stem>.md`, `.csv`; returns (rows, markdown)."""
    rows = efficiency_rows(
        spec, num_frames=num_frames, image_size=image_size, models=models, ablations=ablations
    )
    config = _config(spec, "", num_frames, image_size)
    size = config.data.image_size
    input_text = f"{config.data.num_frames} × {size} × {size} × 3"
    markdown = markdown_table(rows, input_text)
    plot_table(rows, input_text, path, dpi)
    stem = os.path.splitext(path)[0]
    with open(stem + ".md", "w") as f:
        f.write(markdown + "\n")
    write_csv(rows, stem + ".csv")
    return rows, markdown


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ifdd_jax.analysis.efficiency", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--config",
        default="configs/dfew.py",
        help="the config whose input size is measured (file.py[:args])",
    )
    parser.add_argument("--num_frames", type=int, default=None, help="override T")
    parser.add_argument("--image_size", type=int, default=None, help="override S")
    parser.add_argument("--models", nargs="*", default=None, help="default: every registered model")
    parser.add_argument("--ablations", nargs="*", default=None, help="default: every ablation")
    figures.add_output_args(parser, "efficiency.png")
    parser.add_argument("--dpi", type=int, default=None)
    args = parser.parse_args(argv)
    out = figures.output_path(args, "efficiency.png")

    def write() -> str:
        _, markdown = efficiency_table(
            args.config,
            out,
            num_frames=args.num_frames,
            image_size=args.image_size,
            models=args.models,
            ablations=args.ablations,
            dpi=args.dpi,
        )
        print(markdown)
        return out

    return figures.run_command(write)


if __name__ == "__main__":
    sys.exit(main())
