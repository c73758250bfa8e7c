"""Equal-budget dilution study: test UAR of several models against the length of the synthetic
set's expression event, over seeds.

    python -m ifdd_jax.experiments.dilution --out runs/dilution --seeds 3 --event_frames 2,4,8 \\
        --models ifdd_2dcnn,baseline_mobilenet_v2,ifdd_2dcnn_issm_only,ifdd_2dcnn_ladm_only

Every cell (model × event_frames × seed) is one run of the main job, `python -m ifdd_jax.main`
(`ifdd_jax.train.train_and_evaluate`), in a fresh process: memory and compile caches do not pile
up, and a crash of one cell is recorded while the study goes on. All cells share one budget: the
config file (`--config`), `--epochs` and every `--set key=value` are passed unchanged to each of
them. A cell's seed sets both `config.seed` (initialisation, the data order, augmentation) and the
synthetic set's seed; the cells of one (seed, event_frames) read one generated set,
`<out>/data/seed{s}_ev{e}`, made once by the first of them.

A model entry is a registered model name, optionally with the config file's colon arguments
(`ifdd_jax/config_lib.py` MODEL_ARGS): `ifdd_2dcnn:ablation=ladm_none`,
`ifdd_2dcnn:issm=even_odd,ladm=none`. In `--models`, entries are separated by commas; a piece
holding `=` but no `:` continues the previous entry's arguments. The first entry is "IFDD" of the
verdict line; the first entry whose name starts with `baseline` is its baseline.

Rerunning the same command resumes: a cell whose workdir holds results.json is skipped, and an
unfinished one continues from its last checkpoint (the main job's own resume). `--dry_run` prints
the cells and their commands; `--report_only` rebuilds the report from the finished cells (with no
grid flags it uses the grid of the last run, kept in study.json).

Written in --out:
    study.md              UAR and WAR tables (mean ± std (n) over seeds), the IFDD-vs-baseline
                          verdict per level, the budget, every run's values; the command on top
    study.csv             one line per finished cell: model, event_frames, seed, uar, war, steps,
                          seconds
    uar_vs_dilution.png   UAR against event_frames, mean ± std error bars, one line per model
    study.json            the study's grid and command (for --report_only)
    data/seed{s}_ev{e}/   the synthetic sets
    cells/<model>/ev{e}_seed{s}/  each cell's workdir (the main job's files) plus cell.json
                          (command, wall seconds, steps) and main.log (the job's output)
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence

import numpy as np

from ifdd_jax.analysis import figures
from ifdd_jax.analysis.figures import run_command
from ifdd_jax.config_lib import load_config_file

DEFAULT_MODELS = "ifdd_2dcnn,baseline_mobilenet_v2,ifdd_2dcnn_issm_only,ifdd_2dcnn_ladm_only"
DEFAULT_LEVELS = "2,4,8"
DEFAULT_SEEDS = "3"
DEFAULT_CONFIG = "configs/default.py"
CSV_FIELDS = ("model", "event_frames", "seed", "uar", "war", "steps", "seconds")
CELL_FILE = "cell.json"
LOG_FILE = "main.log"
SPEC_FILE = "study.json"
# Fields the study sets per cell: a --set of one of them would break the design.
RESERVED = (
    "seed",
    "data.synthetic.seed",
    "data.synthetic.event_frames",
    "data_dir",
    "data.data_dir",
    "model_name",
    "num_epochs",
)
# Config fields that may differ between cells without changing the budget: the model and its
# variant, what the study varies, and where files go.
_BUDGET_EXEMPT = re.compile(
    r"^(model_name|flavor|model\..*|loss\..*|seed|data\.synthetic\.(seed|event_frames)|"
    r"data_dir|data\.data_dir|compilation_cache_dir)$"
)
# The main job's plan line (ifdd_jax/train.py): "... N train clips, S steps/epoch, T steps, ...".
_PLAN = re.compile(r"(\d+) train clips, (\d+) steps/epoch, (\d+) steps")


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """A registered model name plus config colon arguments, e.g. ("ifdd_2dcnn",
    (("ablation", "ladm_none"),))."""

    name: str
    args: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        """Row label: `ifdd_2dcnn` or `ifdd_2dcnn [ablation=ladm_none]`."""
        if not self.args:
            return self.name
        return f"{self.name} [{', '.join(f'{k}={v}' for k, v in self.args)}]"

    @property
    def slug(self) -> str:
        """Folder name: `ifdd_2dcnn` or `ifdd_2dcnn+ablation-ladm_none`."""
        text = "+".join([self.name] + [f"{k}-{v}" for k, v in self.args])
        return re.sub(r"[^A-Za-z0-9_.+-]", "_", text)

    @property
    def is_baseline(self) -> bool:
        return self.name.startswith("baseline")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of the study: a model at one event length and one seed."""

    model: ModelEntry
    event_frames: int
    seed: int

    def workdir(self, out: str) -> str:
        return os.path.join(out, "cells", self.model.slug, f"ev{self.event_frames}_seed{self.seed}")

    def data_dir(self, out: str) -> str:
        return os.path.join(out, "data", f"seed{self.seed}_ev{self.event_frames}")

    def finished(self, out: str) -> bool:
        return os.path.isfile(os.path.join(self.workdir(out), "results.json"))

    def describe(self) -> str:
        return f"{self.model.label} event_frames={self.event_frames} seed={self.seed}"


# --- the grid ----------------------------------------------------------------------------------


def parse_models(text: str) -> list[ModelEntry]:
    """ "a,b:k=v,k2=v2,c" -> [a, b(k=v, k2=v2), c]; a piece with "=" and no ":" continues the
    previous entry's arguments."""
    entries: list[tuple[str, list[tuple[str, str]]]] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if ":" in piece:
            name, _, arg = piece.partition(":")
            entries.append((name.strip(), []))
            piece = arg.strip()
            if not piece:
                continue
        elif "=" not in piece:
            entries.append((piece, []))
            continue
        if not entries:
            raise ValueError(f"--models: {piece!r} is an argument without a model before it")
        key, _, value = piece.partition("=")
        if key.strip() == "model":
            raise ValueError(f"--models: give the model as the entry's name, not {piece!r}")
        entries[-1][1].append((key.strip(), value.strip()))
    models = [ModelEntry(name, tuple(args)) for name, args in entries]
    if not models:
        raise ValueError("--models names no model")
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise ValueError(f"--models lists a model twice: {', '.join(labels)}")
    return models


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} expects integers separated by commas, got {text!r}") from None
    if not values:
        raise ValueError(f"{flag} is empty")
    if len(set(values)) != len(values):
        raise ValueError(f"{flag} repeats a value: {text!r}")
    return values


def parse_levels(text: str) -> list[int]:
    """ "2,4,8" -> [2, 4, 8] (event lengths in frames, each >= 1)."""
    levels = _int_list(text, "--event_frames")
    if min(levels) < 1:
        raise ValueError(f"--event_frames must be >= 1, got {text!r}")
    return levels


def parse_seeds(text: str) -> list[int]:
    """ "3" -> [0, 1, 2] (a count); "0,5,9" -> those seeds."""
    if "," not in text:
        count = _int_list(text, "--seeds")[0]
        if count < 1:
            raise ValueError(f"--seeds must be a positive count or a list, got {text!r}")
        return list(range(count))
    return _int_list(text, "--seeds")


def parse_sets(items: Sequence[str]) -> list[tuple[str, str]]:
    """["a.b=1", ...] -> [("a.b", "1"), ...]; refuses the fields the study sets itself."""
    sets = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        key = key.removeprefix("config.")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        if key in RESERVED:
            raise ValueError(
                f"--set {key}: the study sets this field per cell "
                f"(use --seeds, --event_frames, --models or --epochs)"
            )
        sets.append((key, value.strip()))
    return sets


def make_cells(
    models: Sequence[ModelEntry], levels: Sequence[int], seeds: Sequence[int]
) -> list[Cell]:
    """Cells in run order: level, then seed, then model, so that each generated set is used by
    every model right after it is made and a partial study compares models on the same data."""
    return [Cell(m, e, s) for e in levels for s in seeds for m in models]


def resolve_config_file(config_file: str) -> str:
    """The config spec with its file made absolute (found from the current directory, then from
    the repository root), so that the cells' `--config=` works from any directory."""
    path, sep, arg = config_file.partition(":")
    if not os.path.isfile(path) and not os.path.isabs(path):
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        if os.path.isfile(os.path.join(root, path)):
            path = os.path.join(root, path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} not found")
    return os.path.abspath(path) + sep + arg


def config_spec(config_file: str, entry: ModelEntry) -> str:
    """`configs/default.py[:args]` with the entry's model and arguments appended (later wins)."""
    path, _, base = config_file.partition(":")
    args = [a.strip() for a in base.split(",") if a.strip()]
    args.append(f"model={entry.name}")
    args += [f"{k}={v}" for k, v in entry.args]
    return f"{path}:{','.join(args)}"


def cell_command(
    cell: Cell,
    out: str,
    *,
    config_file: str,
    epochs: int | None,
    sets: Sequence[tuple[str, str]],
    python: str = sys.executable,
) -> list[str]:
    """The main job's command line for `cell` (argv list)."""
    command = [
        python,
        "-m",
        "ifdd_jax.main",
        f"--config={config_spec(config_file, cell.model)}",
        f"--workdir={cell.workdir(out)}",
        f"--config.data_dir={cell.data_dir(out)}",
        f"--config.seed={cell.seed}",
        f"--config.data.synthetic.seed={cell.seed}",
        f"--config.data.synthetic.event_frames={cell.event_frames}",
    ]
    if epochs is not None:
        command.append(f"--config.num_epochs={epochs}")
    command += [f"--config.{k}={v}" for k, v in sets]
    return command


def check_grid(
    config_file: str,
    models: Sequence[ModelEntry],
    levels: Sequence[int],
    sets: Sequence[tuple[str, str]] = (),
) -> None:
    """Loads the config once per model entry and checks what would otherwise fail in every
    cell, before any training: unknown arguments, ablations, model names and `--set` fields, and
    event lengths longer than the clip."""
    for entry in models:
        try:
            config = load_config_file(config_spec(config_file, entry))
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(f"model entry {entry.label!r}: {e}") from None
        if config.dataset != "synthetic":
            raise ValueError(
                f"{config_file}: the study needs the synthetic dataset, the config "
                f"uses {config.dataset!r}"
            )
    for key, _ in sets:
        node = config
        for part in key.split("."):
            if not hasattr(node, "keys") or part not in node.keys():
                raise ValueError(f"--set {key}: the config has no field {key!r}")
            node = node[part]
    frames = dict(sets).get("data.synthetic.num_frames", config.data.synthetic.num_frames)
    too_long = [e for e in levels if e > int(frames)]
    if too_long:
        raise ValueError(
            f"--event_frames {', '.join(map(str, too_long))}: longer than the "
            f"clip's {frames} frames"
        )
    try:
        from ifdd_jax.models.registry import MODELS  # deferred: a failure is reported per cell
    except Exception:  # a registry that fails to import fails every cell, reported there
        MODELS = None
    if MODELS is not None:
        unknown = [m.name for m in models if m.name not in MODELS]
        if unknown:
            raise ValueError(
                f"unknown model {', '.join(unknown)}; registered: {', '.join(sorted(MODELS))}"
            )


# --- running -----------------------------------------------------------------------------------


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json(path: str, value: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2)
    os.replace(tmp, path)


def _checkpoint_step(workdir: str) -> int | None:
    """The highest step saved in the run's latest-checkpoints folder (the final step, for a
    finished run: the trainer validates and saves at the last step)."""
    folder = os.path.join(workdir, "checkpoints")
    try:
        steps = [int(name) for name in os.listdir(folder) if name.isdigit()]
    except OSError:
        return None
    return max(steps) if steps else None


def _plan_from_log(path: str) -> dict | None:
    """{train_clips, steps_per_epoch, total_steps} from the main job's last plan line."""
    try:
        with open(path, errors="replace") as f:
            matches = _PLAN.findall(f.read())
    except OSError:
        return None
    if not matches:
        return None
    clips, per_epoch, total = (int(v) for v in matches[-1])
    return dict(train_clips=clips, steps_per_epoch=per_epoch, total_steps=total)


def run_cell(cell: Cell, command: list[str], out: str) -> dict:
    """Runs the main job for `cell` (output appended to its main.log) and updates its cell.json
    (wall seconds accumulate over resumed invocations). Returns the record."""
    workdir = cell.workdir(out)
    os.makedirs(workdir, exist_ok=True)
    record_path = os.path.join(workdir, CELL_FILE)
    record = _read_json(record_path) or dict(seconds=0.0, invocations=0)
    record.update(
        model=cell.model.label,
        model_name=cell.model.name,
        model_args=dict(cell.model.args),
        event_frames=cell.event_frames,
        seed=cell.seed,
        command=shlex.join(command),
    )
    log_path = os.path.join(workdir, LOG_FILE)
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.time()
    interrupted = False
    with open(log_path, "a") as log:
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
        log.flush()
        # The repository root on the path, so that `-m ifdd_jax.main` and the relative config
        # file resolve the same way from any current directory.
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            returncode = process.wait()
        except KeyboardInterrupt:
            # The job got the same Ctrl-C (one process group): let it finish the checkpoint
            # saves it started, so the rerun resumes, before giving up on it.
            interrupted = True
            try:
                returncode = process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                returncode = process.wait()
    record["seconds"] = float(record.get("seconds", 0.0)) + (time.time() - start)
    record["invocations"] = int(record.get("invocations", 0)) + 1
    record["returncode"] = returncode
    record["steps"] = _checkpoint_step(workdir)
    plan = _plan_from_log(log_path)
    if plan:
        record.update(plan)
    _write_json(record_path, record)
    if interrupted:
        raise KeyboardInterrupt
    return record


def _tail(path: str, lines: int = 6) -> str:
    try:
        with open(path, errors="replace") as f:
            text = f.read().rstrip().splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])


# --- collecting and summarising ----------------------------------------------------------------


def collect(out: str, cells: Sequence[Cell]) -> tuple[list[dict], list[Cell], list[dict]]:
    """(rows of finished cells in CSV form plus `workdir`, unfinished cells, their config.json
    dicts for the finished cells in row order)."""
    rows, missing, configs = [], [], []
    for cell in cells:
        workdir = cell.workdir(out)
        results = _read_json(os.path.join(workdir, "results.json"))
        if results is None:
            missing.append(cell)
            continue
        record = _read_json(os.path.join(workdir, CELL_FILE)) or {}
        steps = record.get("steps") or _checkpoint_step(workdir)
        rows.append(
            dict(
                model=cell.model.label,
                event_frames=cell.event_frames,
                seed=cell.seed,
                uar=float(results["uar"]),
                war=float(results["war"]),
                steps=int(steps) if steps is not None else None,
                seconds=float(record["seconds"]) if "seconds" in record else None,
                workdir=workdir,
                train_clips=record.get("train_clips"),
                steps_per_epoch=record.get("steps_per_epoch"),
                num_classes=len(results.get("class_names") or []) or None,
                test_clips=results.get("num_clips"),
            )
        )
        configs.append(_read_json(os.path.join(workdir, "config.json")) or {})
    return rows, missing, configs


def write_csv(rows: Sequence[dict], path: str) -> str:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: (
                        ""
                        if row.get(k) is None
                        else (f"{row[k]:.4f}" if isinstance(row[k], float) else row[k])
                    )
                    for k in CSV_FIELDS
                }
            )
    return path


def read_csv(path: str) -> list[dict]:
    """Rows of a study.csv (numbers parsed; empty fields None)."""

    def number(text: str, kind):
        return None if text in ("", None) else kind(text)

    with open(path, newline="") as f:
        return [
            dict(
                model=r["model"],
                event_frames=int(r["event_frames"]),
                seed=int(r["seed"]),
                uar=float(r["uar"]),
                war=float(r["war"]),
                steps=number(r["steps"], int),
                seconds=number(r["seconds"], float),
            )
            for r in csv.DictReader(f)
        ]


@dataclasses.dataclass(frozen=True)
class Stat:
    """mean ± std over n seeds; std is the sample standard deviation (ddof = 1), 0 for n = 1."""

    mean: float
    std: float
    n: int

    def text(self) -> str:
        if self.n == 1:
            return f"{self.mean:.2f} (1)"
        return f"{self.mean:.2f} ± {self.std:.2f} ({self.n})"


def stat(values: Iterable[float]) -> Stat:
    v = np.asarray(list(values), np.float64)
    if v.size == 0:
        raise ValueError("no values")
    return Stat(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size))


def summarize(rows: Sequence[dict]) -> dict[str, dict[tuple[str, int], Stat]]:
    """{"uar"|"war": {(model, event_frames): Stat over that cell's seeds}}."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], int(row["event_frames"])), []).append(row)
    return {
        metric: {key: stat(r[metric] for r in group) for key, group in groups.items()}
        for metric in ("uar", "war")
    }


def _ordered(values: Iterable) -> list:
    seen: list = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def verdicts(
    summary: dict[str, dict[tuple[str, int], Stat]],
    ifdd: str,
    baseline: str | None,
    levels: Sequence[int],
) -> list[str]:
    """One line per level: does `ifdd` beat `baseline` by mean test UAR?"""
    if baseline is None:
        return ["No baseline among the models (a name starting with `baseline`): no verdict."]
    lines = []
    uar = summary["uar"]
    for level in levels:
        a, b = uar.get((ifdd, level)), uar.get((baseline, level))
        if a is None or b is None:
            lines.append(f"- event_frames {level}: not all runs finished, no verdict.")
            continue
        diff = a.mean - b.mean
        word = "**beats**" if diff > 0 else "**does not beat**"
        pooled = math.sqrt((a.std**2 + b.std**2) / 2)
        within = " (within one pooled std)" if pooled and abs(diff) <= pooled else ""
        lines.append(
            f"- event_frames {level}: {ifdd} {a.mean:.2f} vs {baseline} {b.mean:.2f}: "
            f"IFDD {word} the baseline by mean UAR ({diff:+.2f} points{within})."
        )
    return lines


def _flat(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            flat.update(_flat(v, key))
        else:
            flat[key] = v
    return flat


def budget_differences(configs: Sequence[dict]) -> list[str]:
    """Config fields outside the model/seed/level/paths that differ between the cells."""
    flats = [_flat(c) for c in configs if c]
    keys = sorted({k for f in flats for k in f if not _BUDGET_EXEMPT.match(k)})
    diffs = []
    for key in keys:
        values = _ordered(json.dumps(f.get(key), sort_keys=True) for f in flats)
        if len(values) > 1:
            diffs.append(f"{key}: {', '.join(values)}")
    return diffs


# --- the report --------------------------------------------------------------------------------


def _table(
    summary: dict[tuple[str, int], Stat], models: Sequence[str], levels: Sequence[int]
) -> list[str]:
    lines = [
        "| model | " + " | ".join(f"event_frames {e}" for e in levels) + " |",
        "|---|" + "---|" * len(levels),
    ]
    for model in models:
        cells = [summary[(model, e)].text() if (model, e) in summary else "–" for e in levels]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def _span(values: Sequence, unit: str = "", fmt: str = "{}") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "unknown"
    distinct = _ordered(values)
    if len(distinct) == 1:
        return fmt.format(distinct[0]) + unit
    return "differs: " + ", ".join(fmt.format(v) for v in distinct) + unit


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    h, m = divmod(minutes, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def render_markdown(
    rows: Sequence[dict],
    *,
    command: str,
    models: Sequence[str],
    levels: Sequence[int],
    missing: Sequence[str] = (),
    configs: Sequence[dict] = (),
    config_file: str = "",
) -> str:
    """study.md's text. `rows` as `collect` or `read_csv` gives them; `models` in table order
    (the first is IFDD; the first starting with `baseline` its baseline)."""
    summary = summarize(rows)
    baseline = next((m for m in models if m.startswith("baseline")), None)
    flats = [_flat(c) for c in configs if c]
    frames = [f.get("data.num_frames") for f in flats]
    clip_frames = f"{_span(frames)} " if frames and None not in frames else ""
    intro = (
        f"Synthetic diluted-dynamics set ({config_file or 'the config file'}): `event_frames` of "
        f"the clip's {clip_frames}frames carry the expression event; the rest is head motion, "
        "talking and blinks. Every cell trains one model at one event length and one seed "
        "(the seed sets `config.seed` and the synthetic set's seed) at the same budget, and "
        "tests its best checkpoint by the flavor's validation criterion. Cells: mean ± std (n) "
        "over seeds, std the sample standard deviation (ddof = 1)."
    )
    lines = [
        "# Dilution study: test UAR against the expression event's length",
        "",
        "Made by:",
        "",
        "```bash",
        command,
        "```",
        "",
        intro,
        "",
        "## Test UAR (%)",
        "",
        *_table(summary["uar"], models, levels),
        "",
        "## Test WAR (%)",
        "",
        *_table(summary["war"], models, levels),
        "",
        f"## IFDD ({models[0]}) against the baseline ({baseline or 'none'})",
        "",
        *verdicts(summary, models[0], baseline, levels),
        "",
        "## Budget (every cell)",
        "",
        *_budget_lines(rows, flats),
    ]
    diffs = budget_differences(configs)
    if diffs:
        lines += [
            "",
            "**Warning: the cells' configs differ beyond the model, seed and level:**",
            "",
        ] + [f"- {d}" for d in diffs]
    lines += ["", "## Every run", "", *_runs_table(rows, models)]
    if missing:
        lines += ["", f"## Not finished ({len(missing)})", ""] + [f"- {m}" for m in missing]
    return "\n".join(lines) + "\n"


def _budget_lines(rows: Sequence[dict], flats: Sequence[dict]) -> list[str]:
    """The budget section: steps, epochs, clips, input size, recipe and wall time."""

    def field(key: str) -> list:
        return [f.get(key) for f in flats]

    def switch(key: str) -> str:
        return _span([None if v is None else ("on" if v else "off") for v in field(key)])

    frames = field("data.num_frames")
    seconds = [r["seconds"] for r in rows if r.get("seconds") is not None]
    steps = f"- steps: {_span([r.get('steps') for r in rows])}"
    if any(r.get("steps_per_epoch") for r in rows):
        steps += f" ({_span([r.get('steps_per_epoch') for r in rows])} per epoch)"
    epochs = f"- epochs: {_span(field('num_epochs'))}"
    fixed_steps = [v for v in field("num_train_steps") if v is not None and v > 0]
    if fixed_steps:
        epochs += f" (overridden by num_train_steps {_span(fixed_steps)})"
    clips = (
        f"- clips: {_span(field('data.synthetic.num_clips'))} generated "
        f"(train {_span([r.get('train_clips') for r in rows])}, "
        f"test {_span([r.get('test_clips') for r in rows])}), "
        f"batch {_span(field('batch_size'))}"
    )
    size = (
        f"- frames: {_span(frames)}, size: {_span(field('data.image_size'))} px "
        f"(rendered at {_span(field('data.synthetic.size'))} px)"
    )
    jitter = "/".join(
        _span(field(f"data.augment.{k}")) for k in ("brightness", "contrast", "saturation", "hue")
    )
    recipe = (
        f"- learning rate: {_span(field('optim.lr'))}; augmentation "
        f"{switch('data.augment.enabled')}: flip p {_span(field('data.augment.flip_prob'))}, "
        f"crop scale from {_span(field('data.augment.crop_scale_min'))}, colour jitter "
        f"b/c/s/h {jitter}; mixup/cutmix {switch('data.mix.enabled')}"
    )
    lines = [steps, epochs, clips, size, recipe]
    if seconds:
        lines.append(
            f"- wall time per cell: mean {_duration(float(np.mean(seconds)))} "
            f"(min {_duration(min(seconds))}, max {_duration(max(seconds))}); "
            f"total {_duration(sum(seconds))} over {len(seconds)} cells (each a fresh "
            "process: start-up, data generation for the first cell of a set, compile, "
            "training and testing)"
        )
    return lines


def _runs_table(rows: Sequence[dict], models: Sequence[str]) -> list[str]:
    """One table row per finished cell, in model order."""
    lines = [
        "| model | event_frames | seed | UAR | WAR | steps | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    order = {m: i for i, m in enumerate(models)}
    for r in sorted(
        rows, key=lambda r: (order.get(r["model"], len(order)), r["event_frames"], r["seed"])
    ):
        secs = "" if r.get("seconds") is None else f"{r['seconds']:.0f}"
        steps = "" if r.get("steps") is None else str(r["steps"])
        lines.append(
            f"| {r['model']} | {r['event_frames']} | {r['seed']} | {r['uar']:.2f} | "
            f"{r['war']:.2f} | {steps} | {secs} |"
        )
    return lines


def plot_uar(
    rows: Sequence[dict],
    models: Sequence[str],
    levels: Sequence[int],
    path: str,
    *,
    num_classes: int | None = None,
    dpi: int | None = None,
) -> str:
    """UAR against event_frames, mean ± std error bars, one line per model."""
    summary = summarize(rows)["uar"]
    fig, ax = figures.new_figure(figsize=(5.2, 3.6))
    # A small horizontal offset per model keeps overlapping error bars apart.
    span = max(max(levels) - min(levels), 2)
    width = 0.025 * span
    for i, model in enumerate(models):
        xs = [e for e in levels if (model, e) in summary]
        if not xs:
            continue
        shift = (i - (len(models) - 1) / 2) * width
        ax.errorbar(
            [x + shift for x in xs],
            [summary[(model, e)].mean for e in xs],
            yerr=[summary[(model, e)].std for e in xs],
            marker="o",
            ms=4,
            capsize=3,
            label=model,
        )
    if num_classes:
        ax.axhline(100.0 / num_classes, color="0.6", ls=":", lw=1, label="chance")
    ax.set_xticks(list(levels))
    ax.set_xlim(min(levels) - 0.1 * span, max(levels) + 0.1 * span)
    ax.set_xlabel("event_frames (frames carrying the expression event)")
    ax.set_ylabel("test UAR (%)")
    n = _ordered(s.n for s in summary.values())
    ax.set_title(f"Test UAR vs dilution (mean ± std over {'/'.join(map(str, n))} seeds)")
    ax.legend(fontsize=7)
    return figures.save(fig, path, dpi or figures.DPI)


def write_report(out: str, spec: dict, cells: Sequence[Cell]) -> list[str]:
    """Writes study.csv, study.md and uar_vs_dilution.png from the finished cells; returns the
    paths. Raises ValueError when no cell has finished."""
    rows, missing, configs = collect(out, cells)
    if not rows:
        raise ValueError(f"{out}: no finished cell (no results.json under {out}/cells)")
    models = [m.label for m in _ordered(c.model for c in cells)]
    levels = _ordered(c.event_frames for c in cells)
    paths = [write_csv(rows, os.path.join(out, "study.csv"))]
    text = render_markdown(
        rows,
        command=spec["command"],
        models=models,
        levels=levels,
        missing=[c.describe() for c in missing],
        configs=configs,
        config_file=spec.get("config", ""),
    )
    path = os.path.join(out, "study.md")
    with open(path, "w") as f:
        f.write(text)
    paths.append(path)
    classes = next((r["num_classes"] for r in rows if r.get("num_classes")), None)
    paths.append(
        plot_uar(
            rows, models, levels, os.path.join(out, "uar_vs_dilution.png"), num_classes=classes
        )
    )
    return paths


# --- the command -------------------------------------------------------------------------------


def _spec_from_args(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    """The grid: flags given now, else the last run's study.json (for --report_only), else the
    defaults."""
    saved = _read_json(os.path.join(args.out, SPEC_FILE)) or {}
    given = {k: getattr(args, k) for k in ("models", "event_frames", "seeds", "config", "epochs")}
    use_saved = args.report_only and saved
    spec = {}
    defaults = dict(
        models=DEFAULT_MODELS,
        event_frames=DEFAULT_LEVELS,
        seeds=DEFAULT_SEEDS,
        config=DEFAULT_CONFIG,
        epochs=None,
    )
    for key, value in given.items():
        if value is not None:
            spec[key] = value
        elif use_saved and key in saved:
            spec[key] = saved[key]
        else:
            spec[key] = defaults[key]
    spec["set"] = list(args.set) if args.set or not use_saved else saved.get("set", [])
    if use_saved and "command" in saved:
        spec["command"] = saved["command"]
    else:
        spec["command"] = shlex.join(["python", "-m", "ifdd_jax.experiments.dilution", *argv])
    return spec


def make_parser() -> argparse.ArgumentParser:
    """The command's flags."""
    parser = argparse.ArgumentParser(
        prog="python -m ifdd_jax.experiments.dilution", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, help="the study's folder")
    parser.add_argument(
        "--models", default=None, help=f"model entries, comma-separated (default {DEFAULT_MODELS})"
    )
    parser.add_argument(
        "--event_frames", default=None, help=f"event lengths in frames (default {DEFAULT_LEVELS})"
    )
    parser.add_argument(
        "--seeds", default=None, help=f"a count (seeds 0..n-1) or a list (default {DEFAULT_SEEDS})"
    )
    parser.add_argument(
        "--config",
        default=None,
        help=f"the config file, optionally with colon arguments (default {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="config.num_epochs for every cell (default: the config's)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for every cell (repeatable): --set batch_size=32",
    )
    parser.add_argument(
        "--dry_run", action="store_true", help="print the cells and their commands, run nothing"
    )
    parser.add_argument(
        "--report_only",
        action="store_true",
        help="rebuild study.md/csv/png from the finished cells",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = make_parser().parse_args(argv)
    try:
        spec = _spec_from_args(args, argv)
        models = parse_models(spec["models"])
        levels = parse_levels(str(spec["event_frames"]))
        seeds = parse_seeds(str(spec["seeds"]))
        sets = parse_sets(spec["set"])
        if spec["epochs"] is not None and int(spec["epochs"]) < 1:
            raise ValueError(f"--epochs must be >= 1, got {spec['epochs']}")
        if not args.report_only:
            check_grid(spec["config"], models, levels, sets)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = os.path.abspath(args.out)
    cells = make_cells(models, levels, seeds)
    config_file = spec["config"]
    if not args.report_only:
        config_file = resolve_config_file(config_file)
    epochs = None if spec["epochs"] is None else int(spec["epochs"])
    commands = [
        cell_command(c, out, config_file=config_file, epochs=epochs, sets=sets) for c in cells
    ]

    if args.dry_run:
        print(
            f"{len(cells)} cells ({len(models)} models × {len(levels)} levels × "
            f"{len(seeds)} seeds) in {out}"
        )
        _print_plan(cells, commands, out)
        return 0
    if args.report_only:
        return run_command(lambda: write_report(out, spec, cells))
    return _run_study(out, spec, cells, commands)


def _print_plan(cells: Sequence[Cell], commands: Sequence[list[str]], out: str) -> None:
    """--dry_run: each cell, its state and its command."""
    for i, (cell, command) in enumerate(zip(cells, commands), 1):
        if cell.finished(out):
            state = "done"
        elif os.path.isdir(os.path.join(cell.workdir(out), "checkpoints")):
            state = "partial"
        else:
            state = "to run"
        print(f"[{i}/{len(cells)}] {cell.describe()} ({state})\n    {shlex.join(command)}")


def _run_study(out: str, spec: dict, cells: Sequence[Cell], commands: Sequence[list[str]]) -> int:
    """Runs the unfinished cells one after the other, reporting after each; 1 if any failed."""
    os.makedirs(out, exist_ok=True)
    _write_json(os.path.join(out, SPEC_FILE), dict(spec, cells=len(cells)))
    failed = []
    todo = [(c, cmd) for c, cmd in zip(cells, commands) if not c.finished(out)]
    print(
        f"{len(cells)} cells, {len(cells) - len(todo)} already finished, {len(todo)} to run "
        f"in {out}",
        flush=True,
    )
    for i, (cell, command) in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {cell.describe()} ...", flush=True)
        record = run_cell(cell, command, out)
        results = _read_json(os.path.join(cell.workdir(out), "results.json"))
        if record["returncode"] != 0 or results is None:
            failed.append(cell)
            log = os.path.join(cell.workdir(out), LOG_FILE)
            print(
                f"    FAILED (exit status {record['returncode']}) after "
                f"{record['seconds']:.0f} s; see {log}:\n{_tail(log)}",
                flush=True,
            )
        else:
            print(
                f"    UAR {results['uar']:.2f} WAR {results['war']:.2f}, {record['steps']} "
                f"steps, {record['seconds']:.0f} s",
                flush=True,
            )
        # The report grows with every cell, so a long study can be read while it runs.
        if cell.finished(out):
            try:
                write_report(out, spec, cells)
            except (OSError, ValueError) as e:
                print(f"    (report not updated: {e})", flush=True)
    status = 0
    if any(c.finished(out) for c in cells):
        status = run_command(lambda: write_report(out, spec, cells))
    if failed:
        print(
            f"error: {len(failed)} cell(s) failed: "
            f"{'; '.join(c.describe() for c in failed)}. Rerun the same command to retry them.",
            file=sys.stderr,
        )
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
