"""ISSM diagnostics and index plots for every finished IFDD cell of a dilution study.

    python -m ifdd_jax.experiments.dilution_diagnostics --out runs/dilution \\
        [--copy_to docs/dilution]

For each cell of `<out>/cells/<model>/ev{e}_seed{s}/` that holds results.json and whose model has
an ISSM, runs (in a fresh process each, skipped where its file already exists)
  * `python -m ifdd_jax.analysis.issm_diagnostics` -> the cell's issm_diagnostics.json, and
  * `python -m ifdd_jax.analysis.issm_indices` -> the cell's issm_indices.png,
then writes `<out>/issm_diagnostics.csv`, one line per cell with the figures the study report
discusses (COLUMNS, described in `row`). `--copy_to DIR` also copies the CSV and every index plot
to DIR as issm_indices_<model>_ev{e}_seed{s}.png, for committing beside the study's table.
Baseline cells (no ISSM) are skipped with a message.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence

import numpy as np

CELL_NAME = re.compile(r"^ev(\d+)_seed(\d+)$")
DIAGNOSTICS_FILE = "issm_diagnostics.json"
INDICES_FILE = "issm_indices.png"
CSV_FILE = "issm_diagnostics.csv"
COLUMNS = (
    "model",
    "event_frames",
    "seed",
    "test_uar",
    "S_range_in_clip",
    "A_S_spread",
    "A_S_row_entropy",
    "static_index_mean",
    "dynamic_index_mean",
    "index_std_mean",
    "min_dist_IS_ID_mean",
    "share_clips_overlap_below_half_frame",
    "yd_over_xd",
    "cos_xs_xd",
    "lifting_loss",
    "lr_sum",
    "offset_mean_abs_change",
    "trunk_mean_abs_change",
)


def finished_cells(out: str) -> list[tuple[str, int, int, str]]:
    """(model folder, event_frames, seed, workdir) of every cell with results.json, sorted."""
    cells = []
    root = os.path.join(out, "cells")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no cells folder (is --out a dilution study's folder?)")
    for model in sorted(os.listdir(root)):
        for name in sorted(os.listdir(os.path.join(root, model))):
            match = CELL_NAME.match(name)
            workdir = os.path.join(root, model, name)
            if match and os.path.isfile(os.path.join(workdir, "results.json")):
                cells.append((model, int(match.group(1)), int(match.group(2)), workdir))
    return sorted(cells, key=lambda c: (c[0], c[1], c[2]))


def _run(module: str, workdir: str, out_file: str) -> str:
    """Runs `python -m module --workdir W --out F`; returns its combined output."""
    command = [sys.executable, "-m", module, "--workdir", workdir, "--out", out_file]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(
            f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return done.stdout


def diagnose_cell(workdir: str) -> dict | None:
    """The cell's diagnostics (computed once, then read from its JSON); None without an ISSM."""
    path = os.path.join(workdir, DIAGNOSTICS_FILE)
    if not os.path.isfile(path):
        _run("ifdd_jax.analysis.issm_diagnostics", workdir, path)
    with open(path) as f:
        figures = json.load(f)
    if "skipped" in figures:  # the command's record of a model without ISSM
        return None
    plot = os.path.join(workdir, INDICES_FILE)
    if not os.path.isfile(plot):
        _run("ifdd_jax.analysis.issm_indices", workdir, plot)
    return figures


def _positions(values: Sequence[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def row(model: str, event_frames: int, seed: int, workdir: str, d: dict) -> dict:
    """One CSV line: the run's test UAR; S's range within a clip; A_S's spread across clips and
    row entropy (of the maximum); mean index per slot and the mean over slots of their std across
    clips; the per-clip minimum |I_S - I_D| (mean) and the share of clips where it is below half a
    frame; ‖Y_D‖/‖X_D‖; cos(X_S, X_D) paired; the lifting loss; the lr budget Σ lr and the mean
    |Δθ| of the offset Linears (both groups) and of the trunk."""
    with open(os.path.join(workdir, "results.json")) as f:
        uar = json.load(f)["uar"]
    att, idx, lift = d.get("attention"), d["indices"], d["lifting"]
    moved = (d.get("training") or {}).get("movement", {})
    offsets = [
        moved[k]["mean_abs_change"]
        for k in ("issm/static_offset", "issm/dynamic_offset")
        if k in moved
    ]
    return dict(
        model=model,
        event_frames=event_frames,
        seed=seed,
        test_uar=f"{uar:.2f}",
        S_range_in_clip=f"{att['similarity']['range_mean']:.3g}" if att else "",
        A_S_spread=f"{att['static']['spread']:.3g}" if att else "",
        A_S_row_entropy=f"{att['static']['row_entropy']:.3f}" if att else "",
        static_index_mean=_positions(idx["static_mean"]),
        dynamic_index_mean=_positions(idx["dynamic_mean"]),
        index_std_mean=f"{(idx['static_std_mean'] + idx['dynamic_std_mean']) / 2:.3f}",
        min_dist_IS_ID_mean=f"{idx['min_distance_mean']:.3f}",
        share_clips_overlap_below_half_frame=f"{idx['min_distance_below_half']:.2f}",
        yd_over_xd=f"{lift['yd_over_xd_norm']:.3f}",
        cos_xs_xd=f"{lift['cos_xs_xd_paired']:.3f}",
        lifting_loss=f"{lift['lifting_loss']:.2g}",
        lr_sum=f"{d['training']['lr']['lr_sum']:.3g}" if d.get("training") else "",
        offset_mean_abs_change=f"{np.mean(offsets):.3g}" if offsets else "",
        trunk_mean_abs_change=f"{moved['trunk']['mean_abs_change']:.3g}" if moved else "",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the dilution study's folder")
    parser.add_argument("--copy_to", default="", help="also copy the CSV and plots here")
    args = parser.parse_args(argv)
    rows = []
    for model, level, seed, workdir in finished_cells(args.out):
        d = diagnose_cell(workdir)
        if d is None:
            print(f"skipped {model} ev{level} seed {seed}: no ISSM")
            continue
        rows.append(row(model, level, seed, workdir, d))
        print(f"{model} ev{level} seed {seed}: index std {rows[-1]['index_std_mean']}")
        if args.copy_to:
            os.makedirs(args.copy_to, exist_ok=True)
            shutil.copyfile(
                os.path.join(workdir, INDICES_FILE),
                os.path.join(args.copy_to, f"issm_indices_{model}_ev{level}_seed{seed}.png"),
            )
    paths = [os.path.join(args.out, CSV_FILE)]
    if args.copy_to:
        paths.append(os.path.join(args.copy_to, CSV_FILE))
    for path in paths:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {path} ({len(rows)} cells)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
