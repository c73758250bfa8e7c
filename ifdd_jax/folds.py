"""Cross-validation report in the form of the paper's Table 13.

    python -m ifdd_jax.folds --workdirs runs/dfew_fold1 runs/dfew_fold2 ...
    python -m ifdd_jax.folds --pattern 'runs/dfew_fold*'

reads each run's `results.json` and prints UAR/WAR per fold, their mean and (population) standard
deviation, and the paper's per-fold numbers beside them where the paper reports them.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections.abc import Sequence

import numpy as np

# Table 13 of the paper: (UAR, WAR) per fold.
PAPER_FOLDS = {
    ("dfew", "ifdd_2dcnn"): [
        (56.02, 70.03),
        (55.23, 67.39),
        (56.74, 70.93),
        (57.68, 70.27),
        (57.96, 71.49),
    ],
    ("dfew", "ifdd_3dvit"): [
        (59.11, 73.43),
        (59.50, 71.89),
        (62.37, 74.62),
        (63.38, 74.12),
        (61.60, 75.06),
    ],
    ("mafw", "ifdd_2dcnn"): [
        (29.09, 42.38),
        (31.44, 46.60),
        (34.90, 50.24),
        (37.53, 54.20),
        (35.45, 51.30),
    ],
    ("mafw", "ifdd_3dvit"): [
        (31.46, 47.09),
        (37.83, 51.06),
        (42.34, 57.39),
        (43.98, 57.81),
        (40.95, 56.25),
    ],
}


def load_results(workdirs: Sequence[str]) -> list:
    """results.json of each workdir (a path to the file itself also works)."""
    runs = []
    for path in workdirs:
        file = path if path.endswith(".json") else os.path.join(path, "results.json")
        if not os.path.isfile(file):
            raise FileNotFoundError(f"{file}: no results.json (did the run finish?)")
        with open(file) as f:
            runs.append((path, json.load(f)))
    return runs


def fold_table(runs: list) -> str:
    """The report text. Runs must share dataset and model; they are sorted by fold."""
    if not runs:
        raise ValueError("no runs given")
    keys = {(r["dataset"], r["model"]) for _, r in runs}
    if len(keys) > 1:
        raise ValueError(f"the runs mix datasets/models: {sorted(keys)}")
    dataset, model = keys.pop()
    runs = sorted(runs, key=lambda item: item[1].get("fold") or 0)
    paper = PAPER_FOLDS.get((dataset, model))
    lines = [
        f"{dataset} / {model} (flavor {', '.join(sorted({r['flavor'] for _, r in runs}))})",
        "",
    ]
    header = f"{'fold':>4}  {'UAR':>6}  {'WAR':>6}"
    if paper:
        header += f"   {'paper UAR':>9}  {'paper WAR':>9}"
    lines += [header + "   run", "-" * len(header)]
    uars, wars = [], []
    for path, r in runs:
        fold = r.get("fold")
        uars.append(r["uar"])
        wars.append(r["war"])
        row = f"{fold if fold is not None else '-':>4}  {r['uar']:6.2f}  {r['war']:6.2f}"
        if paper:
            if fold is not None and 1 <= fold <= len(paper):
                row += f"   {paper[fold - 1][0]:9.2f}  {paper[fold - 1][1]:9.2f}"
            else:
                row += f"   {'':9}  {'':9}"
        lines.append(row + f"   {path}")
    lines.append("-" * len(header))
    row = f"{'mean':>4}  {np.mean(uars):6.2f}  {np.mean(wars):6.2f}"
    if paper:
        row += f"   {np.mean([p[0] for p in paper]):9.2f}  {np.mean([p[1] for p in paper]):9.2f}"
    lines.append(row)
    row = f"{'std':>4}  {np.std(uars):6.2f}  {np.std(wars):6.2f}"
    if paper:
        row += f"   {np.std([p[0] for p in paper]):9.2f}  {np.std([p[1] for p in paper]):9.2f}"
    lines.append(row)
    folds = [r.get("fold") for _, r in runs]
    if len(set(folds)) != len(folds):
        lines.append(f"warning: repeated folds {folds}")
    protocols = {r.get("validation_protocol") for _, r in runs}
    lines.append(f"checkpoint selection: {', '.join(str(p) for p in sorted(protocols, key=str))}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdirs", nargs="*", default=[], help="run directories")
    parser.add_argument("--pattern", default=None, help="glob of run directories")
    args = parser.parse_args(argv)
    workdirs = list(args.workdirs)
    if args.pattern:
        workdirs += sorted(glob.glob(args.pattern))
    if not workdirs:
        parser.error("give --workdirs or --pattern")
    try:
        print(fold_table(load_results(workdirs)))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
