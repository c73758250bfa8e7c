"""Throughput of our IFDD-3DViT against the authors' released PyTorch IFDD-3DViT, same device,
same run.

    python bench/vs_released.py --released DIR [--batch N] [--reps 5] [--steps 2]
        [--modes released_fp32,released_bf16,ours_fp32,ours_bf16] [--peak_tflops X] [--json OUT]

DIR is a checkout of the authors' repository (CyberPegasus/IFDD); its code is imported from DIR
at run time and never copied here (built as bench/parity_vs_released.py builds it: its Exp, the
JSON merged in, `_dynamic_update()`, `get_model()`; modules it imports but never uses are stubbed
when missing). Ours is `configs/dfew.py:model=ifdd_3dvit,flavor=reference`, the same network.
Both run as configured for training: dropout and stochastic depth on, the released AdamW
(`Exp.get_optimizer`) against ours (`ifdd_jax.optim.make_optimizer`), SoftTargetCrossEntropy +
LiftingLoss against `ifdd_loss` on label-smoothed one-hot targets.

Modes (rows):
  released_fp32  the released model as configured (float32; torch's own defaults for TF32).
  released_bf16  the same under `torch.autocast(device, torch.bfloat16)` for the forward and the
                 loss (no GradScaler: bf16 has float32's range). On a CPU this is torch's CPU
                 autocast, which only helps on CPUs with bf16 matrix units.
  ours_fp32      config.compute_dtype = "float32".
  ours_bf16      config.compute_dtype = "bfloat16": bf16 compute, float32 master parameters and
                 optimizer state, as our trainer does.
Default: all four on a GPU; on a CPU only the two float32 rows (XLA's and torch's CPU bf16 paths
are emulated on most CPUs, so they say little); name the bf16 modes in --modes to time them anyway.

Timing mode: one clip batch `[B, 16, 224, 224, 3]` (uniform in [0, 1]) per device, resident on it.
Per mode: a train step is forward + backward + optimizer update (ours: one jitted function, the
parameters and optimizer state donated; released: forward, loss, backward, `optimizer.step()`,
`zero_grad()`); eval is the forward pass in inference mode (ours: `train=False` jitted; released:
`model.eval()` under `torch.inference_mode()`). Each mode is warmed up (compiled, cuDNN/oneDNN
primitives chosen) once, untimed. Then the repetitions are *interleaved*: for rep in 1..--reps,
each mode in turn runs --steps train steps and --steps eval passes, each group timed from a
device sync to a device sync (`block_until_ready` / `torch.cuda.synchronize`). The figure is the
median over the repetitions of batch·steps / seconds, so a machine whose load changes during the
run biases no mode against another. `--steps` / `--reps` trade time for noise.

Columns: clips/s (train, eval), ratio to the released float32 row, peak memory, MFU, compile
seconds (ours: jit lower + compile of the train step, the first-compile figure; released: n/a).
* Peak MiB: released on CUDA, `torch.cuda.max_memory_allocated()` over its train repetitions;
  ours, XLA's buffer assignment of the compiled train step (arguments + outputs + temporaries,
  less donated aliases). On a CPU the released figure is n/a (one process shares one heap); the
  process's peak resident memory is printed once.
* MFU: FLOPs of one train step / step time / device peak. The FLOPs are XLA's count of our
  lowered train step (`lowered.cost_analysis()["flops"]`) at the row's dtype, traced with the
  dense attention core (`mvit.auto_forms_as(attention="dense")`, what accelerators run: XLA
  counts the body of the CPU's per-frame attention loop once), for the released
  rows too (the same network: the same useful work), so MFU compares the rows exactly as clips/s
  does. The peak is the device's dense bf16 matrix peak (`PEAK_BF16_TFLOPS`, e.g. H100 SXM 989),
  used for every row, float32 included; `--peak_tflops` overrides it. On a CPU there is no table
  entry: n/a unless --peak_tflops is given.

Without TensorFlow: nothing here imports it. Our rows run the trainer's own jitted step from
`ifdd_jax/train_step.py`, which needs no TensorFlow (ifdd_jax/train.py does, through the input
pipeline). On a GPU,
JAX's preallocation is turned off (XLA_PYTHON_CLIENT_PREALLOCATE=false unless set) so that torch
and JAX share the device memory, and torch's cache is emptied before each of our rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

# Before JAX is imported: let torch and JAX share one GPU (JAX would take 75 % of it up front).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
# "Ours" is this checkout's ifdd_jax even where another copy is installed (a script's sys.path
# starts at bench/, so an installed or editable ifdd_jax would otherwise win).
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
CONFIG = "configs/dfew.py:model=ifdd_3dvit,flavor=reference"
FRAMES, SIZE = 16, 224  # the released backbone hard-codes its token grid for these
MODES = ("released_fp32", "released_bf16", "ours_fp32", "ours_bf16")
CPU_MODES = ("released_fp32", "ours_fp32")
# Dense bf16 matrix peak (TFLOP/s, no sparsity) by a substring of the device name.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


# ---------------------------------------------------------------------------------------------
# Pure helpers.


def parse_modes(text: str, on_gpu: bool) -> tuple[str, ...]:
    """`--modes` ("" = the device's default) -> the mode names, validated, in MODES order."""
    if not text:
        return MODES if on_gpu else CPU_MODES
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = sorted(set(names) - set(MODES))
    if unknown or not names:
        raise SystemExit(f"--modes: unknown {unknown or 'empty'}; choose from {', '.join(MODES)}")
    return tuple(m for m in MODES if m in names)


def peak_tflops(device_name: str, override: float | None) -> float | None:
    """The bf16 matrix peak for MFU: --peak_tflops, else the table entry matching the device."""
    if override:
        return override
    for key, value in PEAK_BF16_TFLOPS.items():
        if key.lower() in device_name.lower():
            return value
    return None


def median_rate(seconds: Sequence[float], clips: int) -> float:
    """Median clips/s over repetitions that each processed `clips` clips."""
    return statistics.median(clips / s for s in seconds)


def mfu(flops: float | None, rate: float, batch: int, peak: float | None) -> float | None:
    """Model FLOPs utilisation: `flops` per step of `batch` clips at `rate` clips/s, / peak."""
    if not flops or not peak or not rate:
        return None
    return flops * rate / batch / (peak * 1e12)


def machine_load() -> str:
    """The 1/5/15-minute load averages and the core count (figures on a shared host need them)."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--released", required=True, help="checkout of the authors' repository")
    parser.add_argument("--batch", type=int, default=0, help="clips per step (0: 16 GPU, 2 CPU)")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions (median)")
    parser.add_argument("--steps", type=int, default=2, help="steps per timed repetition")
    parser.add_argument("--modes", default="", help=f"comma list of {', '.join(MODES)}")
    parser.add_argument("--peak_tflops", type=float, default=None, help="bf16 peak for MFU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.batch < 0 or args.reps < 1 or args.steps < 1:
        raise SystemExit("--batch must be >= 0, --reps and --steps >= 1")
    return args


# ---------------------------------------------------------------------------------------------
# The two sides. Each mode is a `Runner`: train(steps) and evaluate(steps) run and sync.


@dataclasses.dataclass
class Runner:
    name: str
    train: Callable[[int], None]
    evaluate: Callable[[int], None]
    flops: float | None = None  # XLA's count of one train step (ours only)
    memory_mib: Callable[[], float | None] = lambda: None
    compile_s: float | None = None
    before: Callable[[], None] = lambda: None  # run before each timed group


def _parity_tool() -> Any:
    """bench/parity_vs_released.py as a module (it builds the released model)."""
    path = ROOT / "bench" / "parity_vs_released.py"
    spec = importlib.util.spec_from_file_location("parity_vs_released", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@dataclasses.dataclass
class TorchSide:
    """The released model, its optimizer, losses and the resident batch (shared by its modes)."""

    model: Any
    optimizer: Any
    loss: Callable[..., Any]  # (logits, pool_a, x_d) -> SoftTargetCE + LiftingLoss
    clips: Any  # [B, 3, T, H, W] on the device
    device: Any


def torch_side(released: Any, device: Any, clips: np.ndarray, labels: np.ndarray) -> TorchSide:
    """Moves the released model to `device`; `clips` `[B, T, H, W, 3]` go to its layout once;
    targets are label-smoothed one-hot (the released trainer's targets with mixup off)."""
    import torch  # deferred: torch is this bench's optional side

    model = released.model.to(device)
    k, smooth = released.exp.num_classes, released.exp.label_smoothing
    targets = torch.full((len(labels), k), smooth / k, device=device)
    targets[torch.arange(len(labels)), torch.from_numpy(labels).to(device)] += 1.0 - smooth

    def loss(logits: Any, pool_a: Any, x_d: Any) -> Any:
        return released.cls_loss(logits, targets) + released.lift_loss(pool_a, x_d)

    x = torch.from_numpy(np.ascontiguousarray(clips.transpose(0, 4, 1, 2, 3))).to(device)
    return TorchSide(model, released.exp.get_optimizer(model), loss, x, device)


def released_runner(side: TorchSide, bf16: bool) -> Runner:
    """A mode of the released model: float32 as configured, or under bf16 autocast."""
    import torch  # deferred: torch is this bench's optional side

    model, x = side.model, side.clips
    on_cuda = side.device.type == "cuda"
    sync = torch.cuda.synchronize if on_cuda else (lambda: None)

    def autocast() -> Any:
        return torch.autocast(side.device.type, dtype=torch.bfloat16, enabled=bf16)

    def train(steps: int) -> None:
        model.train()
        for _ in range(steps):
            with autocast():
                loss = side.loss(*model(x))
            loss.backward()
            side.optimizer.step()
            side.optimizer.zero_grad(set_to_none=True)
        sync()

    def evaluate(steps: int) -> None:
        model.eval()
        with torch.inference_mode(), autocast():
            for _ in range(steps):
                model(x)
        sync()

    def before() -> None:
        if on_cuda:
            torch.cuda.reset_peak_memory_stats()

    def memory_mib() -> float | None:
        return torch.cuda.max_memory_allocated() / 2**20 if on_cuda else None

    name = "released_bf16" if bf16 else "released_fp32"
    return Runner(name, train, evaluate, memory_mib=memory_mib, before=before)


def _cost_flops(lowered_or_compiled: Any) -> float | None:
    """XLA's FLOP count of a lowered or compiled computation (a dict, or a list of one per
    module)."""
    cost = lowered_or_compiled.cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else {}
    flops = (cost or {}).get("flops")
    return float(flops) if flops else None


def _memory_mib(compiled: Any) -> float | None:
    """Arguments + outputs + temporaries of a compiled computation, less donated aliases."""
    m = compiled.memory_analysis()
    if m is None:
        return None
    total = (
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        + m.temp_size_in_bytes
        - m.alias_size_in_bytes
    )
    return total / 2**20


def ours_runner(  # long: builds model, optimizer, the jitted train and eval steps, and runs them
    bf16: bool,
    clips: np.ndarray,
    labels: np.ndarray,
    smoothing: float,
    seed: int,
    empty_torch_cache: Callable[[], None],
) -> Runner:
    """A mode of our IFDD-3DViT, timed with the trainer's own jitted step
    (`ifdd_jax.train_step.make_train_step`; bf16: parameters cast for compute, float32 master
    copy) on one device."""
    import jax
    import jax.numpy as jnp

    from ifdd_jax import sharding, train_state
    from ifdd_jax.config_lib import load_config_file
    from ifdd_jax.models import build_model, mvit
    from ifdd_jax.models.losses import smooth_labels
    from ifdd_jax.optim import make_optimizer
    from ifdd_jax.train_step import TRAIN_KEYS, make_train_step

    config = load_config_file(str(ROOT / CONFIG))
    config.compute_dtype = "bfloat16" if bf16 else "float32"
    config.seed = seed
    dtype = jnp.bfloat16 if bf16 else jnp.float32
    model = build_model(config)
    tx, _ = make_optimizer(config, steps_per_epoch=100, total_steps=10_000)
    mesh = sharding.make_mesh(jax.devices()[:1])
    targets = smooth_labels(jnp.asarray(labels), config.num_classes, smoothing)
    batch = sharding.global_batch(
        mesh, {"clips": clips, "label": labels, "target": np.asarray(targets)}, TRAIN_KEYS
    )
    x = batch["clips"]
    first_state = train_state.create_state(model, tx, config, mesh)
    batch_stats = first_state.batch_stats

    start = time.perf_counter()
    compiled = make_train_step(model, tx, config, mesh).lower(first_state, batch).compile()
    compile_s = time.perf_counter() - start
    with mvit.auto_forms_as(attention="dense"):
        flops = _cost_flops(make_train_step(model, tx, config, mesh).lower(first_state, batch))

    def forward(p: Any) -> jax.Array:
        cast = jax.tree.map(lambda a: a.astype(dtype), p)
        return model.apply({"params": cast, "batch_stats": batch_stats}, x.astype(dtype))["logits"]

    evaluate_fn = jax.jit(forward)
    state = {"train": first_state}

    def train(steps: int) -> None:
        for _ in range(steps):
            state["train"], _ = compiled(state["train"], batch)
        jax.block_until_ready(state["train"].params)

    def evaluate(steps: int) -> None:
        for _ in range(steps):
            out = evaluate_fn(state["train"].params)
        jax.block_until_ready(out)

    return Runner(
        "ours_bf16" if bf16 else "ours_fp32",
        train,
        evaluate,
        flops=flops,
        memory_mib=lambda: _memory_mib(compiled),
        compile_s=compile_s,
        before=empty_torch_cache,
    )


# ---------------------------------------------------------------------------------------------
# Running and reporting.


@dataclasses.dataclass
class Timings:
    train_s: list[float] = dataclasses.field(default_factory=list)
    eval_s: list[float] = dataclasses.field(default_factory=list)
    memory_mib: float | None = None


def _timed(fn: Callable[[int], None], steps: int) -> float:
    start = time.perf_counter()
    fn(steps)
    return time.perf_counter() - start


def interleave(runners: Sequence[Runner], reps: int, steps: int) -> dict[str, Timings]:
    """Warms every mode up once, then `reps` rounds of (each mode: train group, eval group)."""
    timings = {r.name: Timings() for r in runners}
    for r in runners:
        r.before()
        r.train(1)
        r.evaluate(1)
        print(f"warmed up {r.name} ({machine_load()})", flush=True)
    for rep in range(reps):
        for r in runners:
            t = timings[r.name]
            r.before()
            t.train_s.append(_timed(r.train, steps))
            mem = r.memory_mib()
            if mem is not None:
                t.memory_mib = max(t.memory_mib or 0.0, mem)
            r.before()
            t.eval_s.append(_timed(r.evaluate, steps))
        print(f"rep {rep + 1}/{reps} done ({machine_load()})", flush=True)
    return timings


def _cell(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


TABLE_HEAD = (
    "mode",
    "train c/s",
    "x rel",
    "eval c/s",
    "x rel",
    "peak MiB",
    "MFU %",
    "GFLOP/step",
    "compile s",
)


def table_cells(row: dict, base: dict) -> tuple[str, ...]:
    """One table row's cells; ratios are to `base` (the released float32 row)."""
    mfu_pct = None if row["mfu"] is None else 100 * row["mfu"]
    return (
        row["mode"],
        f"{row['train_clips_s']:.3f}",
        f"{row['train_clips_s'] / base['train_clips_s']:.2f}",
        f"{row['eval_clips_s']:.3f}",
        f"{row['eval_clips_s'] / base['eval_clips_s']:.2f}",
        _cell(row["peak_mib"], ".0f"),
        _cell(mfu_pct, ".2f"),
        _cell(row["step_gflop"], ".1f"),
        _cell(row["compile_s"], ".1f"),
    )


def format_row(cells: Sequence[str]) -> str:
    return f"{cells[0]:15s}" + "".join(f" {c:>11s}" for c in cells[1:])


def report(  # long: one table, its footnotes and the JSON rows
    runners: Sequence[Runner],
    timings: dict[str, Timings],
    batch: int,
    steps: int,
    peak: float | None,
    device_name: str,
) -> list[dict]:
    """Prints the table; returns its rows."""
    flops = {r.name: r.flops for r in runners}
    rows = []
    for r in runners:
        t = timings[r.name]
        dtype = "bf16" if r.name.endswith("bf16") else "fp32"
        step_flops = flops.get(f"ours_{dtype}") or next((f for f in flops.values() if f), None)
        train = median_rate(t.train_s, batch * steps)
        rows.append(
            dict(
                mode=r.name,
                train_clips_s=train,
                eval_clips_s=median_rate(t.eval_s, batch * steps),
                peak_mib=t.memory_mib if t.memory_mib is not None else r.memory_mib(),
                mfu=mfu(step_flops, train, batch, peak),
                step_gflop=step_flops / 1e9 if step_flops else None,
                compile_s=r.compile_s,
            )
        )
    base = next((row for row in rows if row["mode"] == "released_fp32"), rows[0])
    print(f"\ndevice: {device_name}; batch {batch}, {FRAMES}x{SIZE}x{SIZE}; {machine_load()}")
    print(format_row(TABLE_HEAD))
    for row in rows:
        print(format_row(table_cells(row, base)))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_text = f"{peak:g} TFLOP/s bf16 dense" if peak else "n/a (no peak for this device)"
    print(
        f"x rel: over released_fp32. MFU: XLA's FLOPs of our train step at the row's dtype / step "
        f"time / peak {peak_text}. Peak MiB: released = torch.cuda.max_memory_allocated, ours = "
        f"XLA buffer assignment of the train step. Process peak RSS {rss:.0f} MiB."
    )
    return rows


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def device_description(torch_device: Any) -> str:
    """Both sides' device, named; raises if torch and JAX would not run on the same kind."""
    import jax
    import torch  # deferred: torch is this bench's optional side

    backend = jax.default_backend()
    if (torch_device.type == "cuda") != (backend == "gpu"):
        raise SystemExit(f"torch runs on {torch_device.type}, JAX on {backend}: not one device")
    if backend == "gpu":
        return f"{torch.cuda.get_device_name(torch_device)} (JAX: {jax.devices()[0].device_kind})"
    return f"{cpu_name()}, {os.cpu_count()} cores"


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def run(args: argparse.Namespace) -> dict:
    """Builds the requested modes, times them interleaved; returns the figures."""
    import torch  # deferred: torch first (torch after TensorFlow crashes, see tests/conftest.py)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.type == "cuda"
    name = device_description(device)
    modes = parse_modes(args.modes, on_gpu)
    batch = args.batch or (16 if on_gpu else 2)
    rng = np.random.default_rng(args.seed)
    clips = rng.uniform(0.0, 1.0, (batch, FRAMES, SIZE, SIZE, 3)).astype(np.float32)
    print(f"{name}; batch {batch}; modes {', '.join(modes)}; {machine_load()}", flush=True)

    runners = []
    released = _parity_tool().load_released(args.released, args.seed)
    if released.stubbed:
        print(f"stubbed released-code imports (unused by the model): {', '.join(released.stubbed)}")
    labels = rng.integers(0, released.exp.num_classes, batch)
    side = torch_side(released, device, clips, labels)
    for mode in modes:
        if mode.startswith("released"):
            runners.append(released_runner(side, bf16=mode.endswith("bf16")))
    empty = torch.cuda.empty_cache if on_gpu else (lambda: None)
    smoothing = released.exp.label_smoothing
    for mode in modes:
        if mode.startswith("ours"):
            bf16 = mode.endswith("bf16")
            runners.append(ours_runner(bf16, clips, labels, smoothing, args.seed, empty))
            print(f"compiled {runners[-1].name}: {runners[-1].compile_s:.1f} s", flush=True)
    timings = interleave(runners, args.reps, args.steps)
    peak = peak_tflops(name, args.peak_tflops)
    rows = report(runners, timings, batch, args.steps, peak, name)
    return dict(
        device=name,
        batch=batch,
        steps=args.steps,
        reps=args.reps,
        peak_tflops=peak,
        revision=git_revision(),
        load=machine_load(),
        rows=rows,
        seconds={n: dataclasses.asdict(t) for n, t in timings.items()},
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    figures = run(args)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
