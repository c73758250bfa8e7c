"""Parity of our IFDD-3DViT (reference flavor) with the authors' released PyTorch code.

    python bench/parity_vs_released.py --released DIR [--batch 2] [--steps 5] [--epoch 10]
        [--seed 0] [--size 224] [--json OUT]
    python bench/parity_vs_released.py --released DIR --write_fixture DIR2 [--released_commit SHA]

DIR is a checkout of the authors' repository (CyberPegasus/IFDD). Its code is imported at run
time from DIR and never copied here. The released model is built the way its `tools/train.py`
builds it: `exps/EXP_IFDD_DFEW.py`'s `Exp`, `configs/IFDD_DFEW.json` merged in, `_dynamic_update()`,
`get_model()`. Its state dict is converted by `ifdd_jax.convert.load_into` into our
`configs/dfew.py:model=ifdd_3dvit,flavor=reference` model, and both run one fixed batch (clips
uniform in [0, 1], 16×224², label-smoothed one-hot targets, i.e. the released targets with mixup
off) in train mode with dropout and stochastic depth off: the released Dropout / StochasticDepth
modules get p = 0, ours gets `model.drop_path = 0`, `model.head_dropout = 0` and a trunk with
`drop_path = 0` (the trunk's rate is not a config field). Figures:

* forward: the trunk's stage 2 and 3 tokens, the pyramid output X, the ISSM reading positions,
  Y_S and Y_D after LADM, the lifting residual (the released `pool_a`), the 768-d feature and the
  logits. The released values come from forward hooks; ours from the model's output dict and
  `capture_intermediates` of the trunk and the pyramid. The released ISSM indices I (its
  `hook_approx` / `hook_detail`) are turned into the frame positions they read by sampling a
  frame ramp 0..T-1 with the released `normalize_grid` and `grid_sample` arguments, which is what
  our `static_index` / `dynamic_index` report.
* loss: soft-target cross entropy and the lifting loss, the released `Exp.get_loss()`
  (SoftTargetCrossEntropy) and `Exp.get_addtional_loss()` (LiftingLoss) against our
  `ifdd_loss` called as our trainer calls it (its `lifting` term is the term as added to the
  objective, weighted and reduced over the batch, which is what the released LiftingLoss returns).
* gradients: per parameter group (trunk, pyramid, issm, ladm, head). The torch gradients, named
  like the state dict, go through the same `load_into` key map and layout transforms as the
  weights (parameters without a gradient, the unused ones, count as zeros).
* training: `--steps` steps of AdamW. Released: `Exp.get_optimizer` (torch AdamW, one group,
  weight decay 1e-3, default betas/eps) with the lr its trainer sets at epoch `--epoch` through
  `core/utils/cos_lr.py`'s `lr_updater` (base lr = lr/32 · batch). Ours: `ifdd_jax.optim
  .make_optimizer` on the reference config, its schedule positioned at the same epoch. The
  parameters are compared per group after every step, and so is the update (params_k - params_0),
  which is far more sensitive than the parameters themselves (Adam normalises each gradient
  element, so elements whose gradient is rounding noise on both sides, e.g. LayerNorm biases on
  the keys, to which the softmax is invariant, move by ±lr at random). The lr of both schedules is
  also compared at every epoch 0..max_epoch-1.

Relative error: ||ours - released|| / max(||released||, tiny), Frobenius norms over all the
elements compared (a group: all its tensors together), tiny = the smallest normal float32.
Everything is float32 on both sides; torch runs on the CPU, deterministic, TF32 off; JAX uses
"highest" matmul precision.

The released package imports modules its model never uses (cv2, loguru, easydict, tabulate,
timm, tqdm, einops). Those that are not installed are replaced, during the import only, by stub
modules whose functions raise if called (loguru's `logger` is a standard `logging` logger and
timm's `register_model` decorator is the identity); the output names every stubbed module.

The last line is `parity vs released: fwd <r> loss <r> grad <r> step<k> <r>`, the worst relative
errors (step<k>: the worst parameter group after the last step). The exit status is 1 when a
figure (or the lr) is over its acceptance threshold (`THRESHOLDS`), 0 otherwise. Needs the torch
extra; about 17 GB of memory and 5-6 minutes on 2 CPU cores at batch 2 and 5 steps.

`--size S` (a multiple of 32 from 64) runs the same comparison on S² clips: the released
backbone hard-codes its 56² token grid, so `build_released_model` patches the three classes that
size it while the model is built (documented there); everything else is the released code. At 64
it needs about 6 GB and 4 CPU-minutes, most of them compiling ours (at 224: 17 GB).

`--write_fixture DIR` records the released side of one step for tests/test_parity_released.py,
which checks ours against it in CI without torch or the released code (`write_fixture`,
`check_fixture`): 16×64² clips, batch 2, the first block of each backbone stage (the other six
dropped through the released `backbone_type` table, see build_released_model), every parameter
set from a seeded rule that the test rebuilds with numpy alone (`fixture_rules`,
`seeded_tensor`). DIR gets a JSON (provenance, the rules, losses, lr schedule, targets) and an NPZ
(forward values in our layouts; gradients and optimiser updates as digests: per tensor its norm
and its products with seeded probe tensors, `Digest`), under 1 MB. The optimiser is checked on
synthetic gradients at a larger lr (OPTIMIZER_LR_SCALE) so that weight decay and Adam's eps are
resolved in float32. The command then checks ours against what it wrote and records the figures.

Reading the figures: float32 rounding alone gives about 1e-6 everywhere except the trunk's
gradient, about 1e-4: there the released float32 gradient itself is 1.3e-4 away from the same
computation in float64 (ours 5.6e-5), mostly in the weights of the patch embedding and the first
blocks (the 56² stage: 25k tokens per clip). A real difference shows as a figure far above these,
localised by the per-module forward figures and the tensor named per gradient group.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import math
import os
import pathlib
import platform
import subprocess
import sys
import types
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

# Released modules imported by the package but not on the model's path; stubbed only when missing.
STUBBABLE = ("cv2", "loguru", "easydict", "tabulate", "timm", "tqdm", "einops")
GROUPS = ("trunk", "pyramid", "issm", "ladm", "head")
TINY = float(np.finfo(np.float32).tiny)
# Acceptance (float32 both sides, CPU, batch 2): above these a figure signals a real difference.
# The lr (float32 on our side) is checked at every epoch of the schedule.
THRESHOLDS = dict(lr=1e-5, fwd=1e-4, loss=1e-5, grad=1e-3, step=1e-3)
MODEL_NAME = "ifdd_3dvit"
CONFIG = "configs/dfew.py:model=ifdd_3dvit,flavor=reference"
EXP_FILE = "exps/EXP_IFDD_DFEW.py"
JSON_CONFIG = "configs/IFDD_DFEW.json"
# The released input: 16 frames at 224² (its backbone hard-codes the 56² token grid). `--size`
# builds it for smaller squares (multiples of 32) through `build_released_model`'s patch.
FRAMES, SIZE = 16, 224
MIN_SIZE = 64  # below this the last stage's grid is 1×1: no spatial structure left to compare
# The released backbone ("MFViT_XS"): 10 blocks, stages starting at these (depths 1, 2, 5, 2).
NUM_BLOCKS, STAGE_FIRST_BLOCKS = 10, (0, 1, 3, 8)
# The committed fixture that tests/test_parity_released.py checks without the released code
# (write_fixture, check_fixture): 64² clips and the first block of each stage (depths 1, 1, 1, 1),
# which keeps every kind of block (block 0 is a plain one: no widening, no stride) while the
# test's forward/backward compiles and runs in about 75 s on 2 CPU cores (most of it compiling).
FIXTURE_DIR = "tests/fixtures/released_parity"
FIXTURE_SIZE = 64
FIXTURE_BLOCKS = STAGE_FIRST_BLOCKS
FIXTURE_JSON, FIXTURE_NPZ = "released_parity.json", "released_parity.npz"
PROBES = 4  # random probe tensors per digest (see Digest)
# Streams of seeded_tensor: the weights, synthetic gradients of optimiser step s (GRAD_STREAM + s),
# probe k (PROBE_STREAM + k), and the batch.
WEIGHT_STREAM, GRAD_STREAM, PROBE_STREAM, BATCH_STREAM = 0, 10, 100, 1000
# The optimiser check: this many AdamW steps on synthetic gradients (the second one exercises the
# moment averages), at the epoch's lr times OPTIMIZER_LR_SCALE (5e-5 -> 5): at the real lr the
# decay lr · wd · p (5e-8 · p) is below float32's resolution of p, and an update p_after - p_before
# is only resolved to ulp(p) / lr; at lr 5 every term of it, the decay included, stands far above.
OPTIMIZER_STEPS, OPTIMIZER_LR_SCALE = 2, 1e5
# The fixture test's acceptance (check_fixture's figures, float32, CPU). Measured when it was
# written (2 CPU cores, jax 0.10.2): lr 2.5e-8, schedule 2.0e-6, forward <= 3.1e-6, loss <= 6.6e-7,
# gradients <= 3.9e-6 outside the trunk, trunk 1.4e-4, optimiser updates <= 8.3e-6. The trunk's
# gradient is the exception: our compiled float32 program's, not the released one's (which is
# 2e-6 from float64), and it moves with the program: 4e-6 .. 3.5e-3 for other block sets and
# depthwise forms, while the same computation in float64 agrees with the released one to 4e-8
# and every block alone agrees to 1e-6. Hence its own, looser threshold.
FIXTURE_THRESHOLDS = dict(
    lr=1e-5,
    lr_schedule=1e-5,
    targets=1e-6,
    forward=1e-4,
    loss=1e-5,
    grad=1e-4,
    grad_trunk=1e-2,
    update=1e-4,
)


# ---------------------------------------------------------------------------------------------
# Pure helpers (tested without the released code).


def relative_error(ours: Any, released: Any) -> float:
    """||ours - released|| / max(||released||, tiny) over all elements (Frobenius norms)."""
    a = np.asarray(ours, np.float64)
    b = np.asarray(released, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: ours {a.shape}, released {b.shape}")
    return float(np.linalg.norm((a - b).ravel()) / max(np.linalg.norm(b.ravel()), TINY))


def param_group(path: str) -> str:
    """The parameter group of one of our leaf paths (`params/trunk/...` -> "trunk")."""
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "params" or parts[1] not in GROUPS:
        raise ValueError(f"{path!r} is not a parameter of a known group {GROUPS}")
    return parts[1]


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """`{"params": {"trunk": {...}}}` -> `{"params/trunk/...": array}`."""
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, path))
        else:
            out[path] = np.asarray(value)
    return out


@dataclasses.dataclass
class GroupError:
    """Relative error of a parameter group, and the tensor that contributes most to it (the
    largest ||ours - released||), with that tensor's own relative error and its share of the
    group's squared difference: this is what localises a difference. (A tensor's own relative
    error can be large and meaningless where its reference is pure rounding noise, e.g. the
    gradient of a LayerNorm bias on the keys, to which the softmax is invariant.)"""

    error: float
    worst_leaf: str
    worst_error: float
    worst_share: float


def group_errors(ours: Mapping[str, Any], released: Mapping[str, Any]) -> dict[str, GroupError]:
    """Per-group (and "all") relative error of two flat `{path: array}` dicts with the same keys;
    a group's error takes all its tensors together."""
    if set(ours) != set(released):
        missing = sorted(set(ours) ^ set(released))[:5]
        raise ValueError(f"the trees differ in their leaves, e.g. {missing}")
    diff2: dict[str, float] = {g: 0.0 for g in GROUPS + ("all",)}
    ref2: dict[str, float] = dict(diff2)
    worst: dict[str, tuple[str, float, float]] = {g: ("", 0.0, -1.0) for g in diff2}
    for path in sorted(ours):
        a = np.asarray(ours[path], np.float64).ravel()
        b = np.asarray(released[path], np.float64).ravel()
        d2, r2 = float(np.sum((a - b) ** 2)), float(np.sum(b**2))
        leaf_error = math.sqrt(d2) / max(math.sqrt(r2), TINY)
        for g in (param_group(path), "all"):
            diff2[g] += d2
            ref2[g] += r2
            if d2 > worst[g][2]:
                worst[g] = (path, leaf_error, d2)
    return {
        g: GroupError(
            error=math.sqrt(diff2[g]) / max(math.sqrt(ref2[g]), TINY),
            worst_leaf=worst[g][0],
            worst_error=worst[g][1],
            worst_share=worst[g][2] / diff2[g] if diff2[g] > 0 else 0.0,
        )
        for g in diff2
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--released", required=True, help="checkout of the authors' repository")
    parser.add_argument("--batch", type=int, default=2, help="clips in the fixed batch")
    parser.add_argument("--steps", type=int, default=5, help="AdamW steps to compare (>= 0)")
    parser.add_argument("--epoch", type=int, default=10, help="epoch whose released lr is used")
    parser.add_argument("--seed", type=int, default=0, help="seeds the released init and the batch")
    parser.add_argument("--json", default=None, help="write every figure to this JSON file")
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help=f"clip height = width: {SIZE} (the released size, the default) or a multiple of 32 "
        f"down to {MIN_SIZE} (the released grid scaled down, see build_released_model); "
        f"{FIXTURE_SIZE} by default with --write_fixture",
    )
    parser.add_argument(
        "--write_fixture",
        default=None,
        metavar="DIR",
        help="instead of comparing, write the test fixture of the released side (seeded "
        f"weights, --size {FIXTURE_SIZE} unless given, one step) to DIR, then check it",
    )
    parser.add_argument(
        "--released_commit",
        default=None,
        help="the released checkout's commit, recorded in the fixture (default: git rev-parse "
        "HEAD in --released)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.batch < 1:
        raise SystemExit(f"--batch must be at least 1, got {args.batch}")
    if args.steps < 0:
        raise SystemExit(f"--steps must be >= 0, got {args.steps}")
    if args.epoch < 0:
        raise SystemExit(f"--epoch must be >= 0, got {args.epoch}")
    if args.size is None:
        args.size = FIXTURE_SIZE if args.write_fixture else SIZE
    try:
        check_size(args.size)
    except ValueError as e:
        raise SystemExit(f"--size: {e}") from None
    return args


def check_size(size: int) -> int:
    """`size` if the released grid can be built for size² clips: 224, or a multiple of 32 from
    MIN_SIZE (every stage's grid is then size/4 · 2^-stage, as the released FPN assumes)."""
    if size != SIZE and (size % 32 or not MIN_SIZE <= size < SIZE):
        raise ValueError(f"{size} is not {SIZE} or a multiple of 32 in [{MIN_SIZE}, {SIZE})")
    return size


# ---------------------------------------------------------------------------------------------
# Importing the released code.


class _Unavailable:
    """A stubbed function or class: importable, but raises when the released code calls it (the
    model's path must never need a stubbed module)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"the released code called {self._name}, from a module the parity tool stubbed "
            "because it is not installed; install it and rerun"
        )

    def __getattr__(self, name: str) -> _Unavailable:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Unavailable(f"{self._name}.{name}")


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name == "logger":  # loguru's logger: the released model logs through it (`_frozen`)
            return logging.getLogger("released_ifdd")
        if name == "register_model":  # timm's decorator, applied at import time
            return lambda fn: fn
        return _Unavailable(f"{self.__name__}.{name}")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves `_StubModule`s for the given top-level names and all their submodules."""

    def __init__(self, roots: Sequence[str]) -> None:
        self.roots = frozenset(roots)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []  # a package, so `from timm.models.layers import x` resolves
        return module

    def exec_module(self, module) -> None:
        pass


@contextlib.contextmanager
def stubbed_imports(names: Sequence[str]) -> Iterator[list[str]]:
    """Within the block, the modules of `names` that cannot be imported are stubs; yields those
    names. Afterwards the finder and the stub modules are removed again, so that nothing else in
    the process (JAX, TensorFlow) mistakes a stub for the real package."""
    missing = [n for n in names if n not in sys.modules and importlib.util.find_spec(n) is None]
    finder = _StubFinder(missing)
    sys.meta_path.append(finder)
    try:
        yield missing
    finally:
        sys.meta_path.remove(finder)
        for name in list(sys.modules):
            if name.split(".")[0] in finder.roots:
                del sys.modules[name]


@dataclasses.dataclass
class Released:
    """What the tool uses from the released code."""

    exp: Any  # the DFEW Exp after the JSON merge and _dynamic_update()
    model: Any  # torch.nn.Module
    cls_loss: Any  # Exp.get_loss(): SoftTargetCrossEntropy (mixup is on in the JSON)
    lift_loss: Any  # Exp.get_addtional_loss(): LiftingLoss
    lr_updater: Any  # core.utils.cos_lr.lr_updater
    mixup_target: Callable[..., Any]  # core.utils.mixup.mixup_target
    stubbed: list[str]


def load_released(
    directory: str, seed: int, size: int = SIZE, blocks: Sequence[int] | None = None
) -> Released:
    """Builds the released IFDD-3DViT as its tools/train.py does (the model's init is seeded),
    for size² clips and with the backbone blocks `blocks` (None: all; see build_released_model)."""
    import torch

    root = pathlib.Path(directory).resolve()
    for needed in (EXP_FILE, JSON_CONFIG, "core/__init__.py"):
        if not (root / needed).is_file():
            raise SystemExit(f"{root} is not a checkout of the released IFDD code: no {needed}")
    loaded = sys.modules.get("core")
    loaded_from = pathlib.Path(getattr(loaded, "__file__", None) or "").parent.parent
    if loaded is not None and loaded_from != root:
        raise SystemExit(f"another package named 'core' is already imported ({loaded})")
    sys.path.insert(0, str(root))
    try:
        with stubbed_imports(STUBBABLE) as stubbed:
            spec = importlib.util.spec_from_file_location("EXP_IFDD_DFEW", root / EXP_FILE)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            from core.utils.cos_lr import lr_updater
            from core.utils.mixup import mixup_target

            exp = module.Exp()
            with open(root / JSON_CONFIG) as f:
                exp.merge(json.load(f))
            exp._dynamic_update()
            torch.manual_seed(seed)
            model = build_released_model(exp, check_size(size), blocks)
            return Released(
                exp=exp,
                model=model,
                cls_loss=exp.get_loss(),
                lift_loss=exp.get_addtional_loss(),
                lr_updater=lr_updater,
                mixup_target=mixup_target,
                stubbed=stubbed,
            )
    finally:
        sys.path.remove(str(root))


def build_released_model(exp: Any, size: int, blocks: Sequence[int] | None = None) -> Any:
    """`exp.get_model()`, for size² clips, with only the backbone blocks `blocks`.

    At 224 and with all blocks this is the released model untouched.

    `blocks` (indices into the 10 blocks of the released "MFViT_XS" table, check_blocks): the
    backbone is built from `Exp.backbone_type`, a name the released `MFViT_build_backbone` looks
    up in `core.model.backbone` (`eval(type)()`): while the model is built that module gets one
    more table, "MFViT_XS" restricted to those rows, and `exp.backbone_type` names it. Keeping
    each stage's first block keeps every width, stride and stage boundary; only depth goes.

    `size`: the released backbone fixes its token grid at [8, 56, 56] (224 / 4) in places that
    no constructor argument reaches; below 224 they are patched, and only while the model is
    built (restored afterwards):

    * `core.model.backbone.PositionalEncoding` and `.MultiscaleBlock` (looked up by name when
      `MFViT_backbone` is built) become subclasses that scale the grid they are given by
      size / 224: the encoding's `spatial_size` sets the grid of the forward pass, the block's
      `input_size` sizes its relative-position tables;
    * `core.wave_methods.WaveLift.WaveSF_trans_CLS` (imported by name in `MFViT_FPN.__init__`)
      gets its [T, H, W] scaled the same way (H·W sizes `spatial_pos` and `project_compress`,
      and its forward reshapes to it);
    * after the build, `MFViT_FPN.size` (the per-stage grid its forward reshapes to) is scaled.

    The patch embedding's stride (224 / out_resolution = 4) already fits any size. Every grid of
    the released network is then size/4 · 2^-stage, exactly what its conv arithmetic gives for
    multiples of 32 (check_size), and the layers themselves are the released ones."""
    import core.model.backbone as backbone
    import core.wave_methods.WaveLift as wavelift

    patches: list[tuple[Any, str, Any]] = []
    if blocks is not None:
        keep = check_blocks(blocks)
        full = getattr(backbone, exp.backbone_type)

        def fewer_blocks() -> dict[str, list]:
            return {key: [rows[i] for i in keep] for key, rows in full().items()}

        exp.backbone_type = "MFViT_XS_parity"
        patches.append((backbone, exp.backbone_type, fewer_blocks))
    if size == SIZE:
        return _built_with(exp, patches)

    def scaled(grid: Sequence[int]) -> list[int]:
        return [g * size // SIZE for g in grid]

    class ScaledEncoding(backbone.PositionalEncoding):
        def __init__(self, embed_size, spatial_size, temporal_size, rel_pos_embed) -> None:
            super().__init__(embed_size, tuple(scaled(spatial_size)), temporal_size, rel_pos_embed)

    class ScaledBlock(backbone.MultiscaleBlock):
        def __init__(self, input_size, *args, **kwargs) -> None:
            super().__init__([input_size[0], *scaled(input_size[1:])], *args, **kwargs)

    class ScaledLifting(wavelift.WaveSF_trans_CLS):
        def __init__(self, input_size, *args, **kwargs) -> None:
            super().__init__([input_size[0], *scaled(input_size[1:])], *args, **kwargs)

    patches += [
        (backbone, "PositionalEncoding", ScaledEncoding),
        (backbone, "MultiscaleBlock", ScaledBlock),
        (wavelift, "WaveSF_trans_CLS", ScaledLifting),
    ]
    model = _built_with(exp, patches)
    model.backbone.size = scaled(model.backbone.size)
    return model


def _built_with(exp: Any, patches: Sequence[tuple[Any, str, Any]]) -> Any:
    """`exp.get_model()` with each (module, attribute, value) of `patches` set while it runs;
    afterwards every attribute is as before (or absent again)."""
    missing = object()
    saved = [(module, name, getattr(module, name, missing)) for module, name, _ in patches]
    try:
        for module, name, value in patches:
            setattr(module, name, value)
        return exp.get_model()
    finally:
        for module, name, original in reversed(saved):
            if original is missing:
                delattr(module, name)
            else:
                setattr(module, name, original)


def check_blocks(blocks: Sequence[int]) -> tuple[int, ...]:
    """`blocks` as a sorted tuple if it is a subset of the 10 backbone blocks that keeps the first
    block of every stage (STAGE_FIRST_BLOCKS)."""
    keep = tuple(sorted(set(int(b) for b in blocks)))
    if not set(STAGE_FIRST_BLOCKS) <= set(keep) or not set(keep) <= set(range(NUM_BLOCKS)):
        raise ValueError(
            f"blocks {list(blocks)} must lie in 0..{NUM_BLOCKS - 1} and include every stage's "
            f"first block {list(STAGE_FIRST_BLOCKS)}"
        )
    return keep


def disable_randomness(model: Any) -> dict[str, int]:
    """Sets p = 0 on every Dropout and StochasticDepth module (train mode stays on); returns how
    many modules of each kind were changed."""
    import torch

    changed: dict[str, int] = {}
    for module in model.modules():
        is_dropout = isinstance(module, torch.nn.modules.dropout._DropoutNd)
        is_depth = type(module).__name__ == "StochasticDepth" and hasattr(module, "p")
        if is_dropout or is_depth:
            kind = type(module).__name__
            changed[kind] = changed.get(kind, 0) + 1
            module.p = 0.0
    return changed


def released_lr(released: Released, epoch: int) -> float:
    """The lr the released trainer sets at `epoch` (core/train/trainer.py: base lr = lr/32 ·
    batch, end lr = base · 0.01, an lr_updater over max_epoch with warmup_epoch)."""
    exp = released.exp
    base = exp.lr / 32 * exp.batch_size
    updater = released.lr_updater(
        max_epoch=exp.max_epoch, warmup_epoch=exp.warmup_epoch, base_lr=base, end_lr=base * 0.01
    )
    return float(updater.get_lr_at_epoch(cur_epoch=epoch))


def released_read_positions(split: Any, index: Any, num_frames: int) -> np.ndarray:
    """The frame positions the released ISSM reads for indices `index` [B, K]: its own
    normalize_grid and grid_sample arguments applied to a ramp of frame numbers."""
    import torch
    import torch.nn.functional as F

    b, k = index.shape
    grid = F.pad(split.normalize_grid(index)[..., None, None], (1, 0), value=0.0)  # (x=0, y=g)
    ramp = torch.arange(num_frames, dtype=index.dtype).view(1, 1, num_frames, 1)
    read = F.grid_sample(
        ramp.expand(b, 1, num_frames, 1),
        grid,
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )
    return read.reshape(b, k).numpy()


# ---------------------------------------------------------------------------------------------
# The two sides of one training step.


@dataclasses.dataclass
class StepResult:
    """One side's forward values (our layout), loss terms, gradients (flat, our paths)."""

    forward: dict[str, np.ndarray]
    loss: dict[str, float]
    grads: dict[str, np.ndarray]


def tokens_to_grid(tokens: np.ndarray, t: int, h: int, w: int) -> np.ndarray:
    """`[B, 1 + t·h·w, C]` (class token first) -> `[B, t, h, w, C]`."""
    b, _, c = tokens.shape
    return tokens[:, 1:].reshape(b, t, h, w, c)


class TorchSide:
    """The released model, optimiser and losses, with hooks on its intermediate outputs."""

    def __init__(self, released: Released, epoch: int) -> None:
        import torch

        self.torch = torch
        self.released = released
        self.model = released.model
        self.model.train()
        self.optimizer = released.exp.get_optimizer(self.model)
        self.lr = released_lr(released, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        self.captured: dict[str, Any] = {}
        self._hook()

    def _hook(self) -> None:
        m = self.model
        wave = m.backbone.WaveLifts

        def keep(name: str) -> Callable[..., None]:
            # A detached copy: later in-place operations of the released code cannot alter it.
            def hook(module, inputs, output) -> None:
                if isinstance(output, dict):  # the backbone's {stage: tokens}
                    self.captured[name] = {k: v.detach().clone() for k, v in output.items()}
                else:
                    self.captured[name] = output.detach().clone()

            return hook

        m.backbone.backbone.register_forward_hook(keep("stages"))
        m.backbone.CatConv.register_forward_hook(keep("x"))
        wave.adapt_split.hook_approx.register_forward_hook(keep("static_index"))
        wave.adapt_split.hook_detail.register_forward_hook(keep("dynamic_index"))
        wave.hook_xa.register_forward_hook(keep("static"))
        wave.hook_xd.register_forward_hook(keep("dynamic"))
        # The head's Dropout is in place: read the feature on the way in, before it runs.
        m.head.register_forward_pre_hook(
            lambda module, inputs: self.captured.__setitem__("feature", inputs[0].detach().clone())
        )

    def targets(self, labels: np.ndarray, num_classes: int) -> Any:
        """The released trainer's targets with mixup off: its mixup_target at lam = 1."""
        return self.released.mixup_target(
            self.torch.from_numpy(labels),
            num_classes,
            lam=1.0,
            smoothing=self.released.exp.label_smoothing,
            device="cpu",
        )

    def step(self, clips: np.ndarray, targets: Any, apply: bool) -> StepResult:
        """As the released trainer: forward, SoftCE + LiftingLoss, backward, and with `apply`
        optimizer.step(). Values and gradients are those before the step."""
        torch = self.torch
        self.captured.clear()
        self.optimizer.zero_grad(set_to_none=True)
        logits, pool_a, x_d = self.model(torch.from_numpy(clips))
        cls = self.released.cls_loss(logits, targets)
        lift = self.released.lift_loss(pool_a, x_d)
        loss = cls + lift
        loss.backward()
        # Unused parameters (ISSM's time_project, LADM's positions) have no gradient: zeros.
        grads = {
            name: np.zeros(tuple(p.shape), np.float32) if p.grad is None else p.grad.numpy().copy()
            for name, p in self.model.named_parameters()
        }
        if apply:
            self.optimizer.step()
        forward = self._forward_values(logits, pool_a)
        return StepResult(
            forward=forward,
            loss=dict(
                classification=cls.item(),
                lifting=float(torch.as_tensor(lift).detach()),
                total=loss.item(),
            ),
            grads=grads,
        )

    def _forward_values(self, logits: Any, pool_a: Any) -> dict[str, np.ndarray]:
        """The captured values in our layouts (channels last, [B, T, H, W, C] grids)."""
        c = {k: v.numpy() for k, v in self.captured.items() if k != "stages"}
        b = logits.shape[0]
        t = FRAMES // 2  # frames of X after the patch embedding's temporal stride 2
        grid = self.model.backbone.size  # the FPN's per-stage grids: 56/28/14/7 at 224²
        stages = self.captured["stages"]
        x = c["x"]  # [B·T, C, H, W]
        _, ch, h, w = x.shape
        split = self.model.backbone.WaveLifts.adapt_split
        with self.torch.no_grad():
            positions = {
                g: released_read_positions(split, self.captured[f"{g}_index"], t)
                for g in ("static", "dynamic")
            }
        return {
            "trunk stage 2": tokens_to_grid(stages[2].numpy(), t, grid[2], grid[2]),
            "trunk stage 3": tokens_to_grid(stages[3].numpy(), t, grid[3], grid[3]),
            "pyramid X": x.reshape(b, t, ch, h, w).transpose(0, 1, 3, 4, 2),
            "ISSM static positions": positions["static"],
            "ISSM dynamic positions": positions["dynamic"],
            "LADM Y_S": c["static"],
            "LADM Y_D": c["dynamic"],
            "lift residual (pool_a)": pool_a.detach().numpy(),
            "feature": c["feature"],
            "logits": logits.detach().numpy(),
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().copy() for k, v in self.model.state_dict().items()}


class JaxSide:
    """Our model (reference config, randomness off), loss and optimiser, on converted weights."""

    def __init__(
        self,
        torch_state: Mapping[str, np.ndarray],
        epoch: int,
        steps: int,
        size: int = SIZE,
        blocks: Sequence[int] | None = None,
    ) -> None:
        """`size`: the clips' height = width; `blocks`: the trunk blocks kept, as the released
        side's (build_released_model), None: all."""
        import jax
        import jax.numpy as jnp
        import optax

        from ifdd_jax.config_lib import load_config_file
        from ifdd_jax.convert import load_into
        from ifdd_jax.models import build_model

        self.jax, self.jnp, self.optax = jax, jnp, optax
        config = load_config_file(CONFIG)
        config.model.drop_path = 0.0
        config.model.head_dropout = 0.0
        config.data.image_size = size  # the relative-position tables and LADM are sized for it
        self.config = config
        model = build_model(config)
        if not hasattr(model, "trunk") or not hasattr(model.trunk, "drop_path"):
            raise SystemExit("our IFDD model no longer has trunk.drop_path: update the tool")
        trunk = model.trunk.clone(drop_path=0.0)
        if blocks is not None:
            if len(trunk.blocks) != NUM_BLOCKS:
                raise SystemExit(f"our trunk no longer has {NUM_BLOCKS} blocks: update the tool")
            trunk = trunk.clone(blocks=tuple(trunk.blocks[i] for i in check_blocks(blocks)))
        self.model = model.clone(trunk=trunk)
        self.like = zero_variables(self.model, size)
        variables, report = load_into(self.like, dict(torch_state), MODEL_NAME, strict=True)
        if report.not_loaded or report.resized:
            raise SystemExit("conversion left parameters at init or resized:\n" + report.format())
        self.report = report
        self.params = variables["params"]
        self.batch_stats = variables.get("batch_stats", {})

        self.per_epoch = max(steps, 1)
        self.tx, self.schedule, self.opt_state = self.optimizer(epoch, self.per_epoch)
        self.lr = float(self.schedule(epoch * self.per_epoch))
        self._step = jax.jit(self._step_fn, static_argnames=("apply",))

    def optimizer(self, epoch: int, per_epoch: int, lr_scale: float = 1.0) -> tuple:
        """(tx, schedule, state at self.params): our optimiser on the reference recipe, with one
        epoch = `per_epoch` steps and its schedule positioned at `epoch`, so that the compared
        steps all fall in that epoch. Adam's own counter (bias correction) starts at 0, as a
        fresh torch AdamW's does. `lr_scale` multiplies config.optim.lr, and so the lr of every
        epoch past the warmup (the cosine is linear in it; the warmup is not)."""
        from ifdd_jax.optim import make_optimizer

        config = self.config.copy_and_resolve_references()
        config.optim.lr = config.optim.lr * lr_scale
        tx, schedule = make_optimizer(
            config, steps_per_epoch=per_epoch, total_steps=config.num_epochs * per_epoch
        )
        return tx, schedule, start_schedule_at(tx.init(self.params), epoch * per_epoch)

    def targets(self, labels: np.ndarray, num_classes: int, smoothing: float) -> Any:
        from ifdd_jax.models.losses import smooth_labels

        return smooth_labels(self.jnp.asarray(labels), num_classes, smoothing)

    def _step_fn(self, params, opt_state, clips, targets, *, apply: bool):
        """Forward, loss and gradients at `params`; with `apply`, one optimiser step too."""
        jax, optax = self.jax, self.optax
        from ifdd_jax.models.losses import ifdd_loss

        config = self.config

        def loss_fn(p):
            def capture(mdl, method):
                return method == "__call__" and mdl.path in (("trunk",), ("pyramid",))

            outputs, state = self.model.apply(
                {"params": p, "batch_stats": self.batch_stats},
                clips,
                train=True,
                rngs={"dropout": jax.random.key(0)},
                capture_intermediates=capture,
                mutable=["batch_stats", "intermediates"],
            )
            # As ifdd_jax/train.py calls it, so the config's flavor defaults apply.
            loss, terms = ifdd_loss(
                outputs,
                targets,
                lift=config.loss.lift,
                lift_weight=config.loss.lift_weight,
                lift_reduction=config.loss.lift_reduction,
                flavor=config.flavor,
            )
            return loss, (outputs, terms, state["intermediates"])

        (loss, (outputs, terms, inter)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        if apply:
            updates, opt_state = self.tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
        return params, opt_state, loss, outputs, terms, inter, grads

    def step(self, clips: np.ndarray, targets: Any, apply: bool) -> StepResult:
        """Clips `[B, 3, T, H, W]` (the released layout); values before the step, which is
        applied when `apply`."""
        from ifdd_jax.models.losses import lift_residual

        jnp = self.jnp
        params, opt_state, loss, out, terms, inter, grads = self._step(
            self.params,
            self.opt_state,
            jnp.asarray(clips.transpose(0, 2, 3, 4, 1)),
            targets,
            apply=apply,
        )
        if apply:
            self.params, self.opt_state = params, opt_state
        b = clips.shape[0]
        levels = inter["trunk"]["__call__"][0]
        x = np.asarray(inter["pyramid"]["__call__"][0])
        x = x.reshape((b, x.shape[0] // b) + x.shape[1:])
        tokens = lambda y: np.asarray(y).reshape(b, -1, np.shape(y)[-1])  # noqa: E731
        forward = {
            "trunk stage 2": np.asarray(levels[0]),
            "trunk stage 3": np.asarray(levels[1]),
            "pyramid X": x,
            "ISSM static positions": np.asarray(out["static_index"]),
            "ISSM dynamic positions": np.asarray(out["dynamic_index"]),
            "LADM Y_S": tokens(out["static"]),
            "LADM Y_D": tokens(out["dynamic"]),
            "lift residual (pool_a)": np.asarray(
                lift_residual(out["static"], out["pooled_x"], self.config.loss.lift)
            ),
            "feature": np.asarray(out["feature"]),
            "logits": np.asarray(out["logits"]),
        }
        return StepResult(
            forward=forward,
            # `lifting` is the term exactly as added to the objective (weighted and reduced).
            loss=dict(
                classification=float(terms["classification"]),
                lifting=float(terms["lifting"]),
                total=float(loss),
            ),
            grads=flatten({"params": grads}),
        )

    def torch_to_ours(self, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A torch-named tree (weights or gradients) in our paths and layouts."""
        return torch_to_ours(state, self.like)

    def torch_to_tree(self, state: Mapping[str, np.ndarray]) -> Any:
        """A torch-named tree as our `params` tree (e.g. gradients for the optimiser)."""
        from ifdd_jax.convert import load_into

        return load_into(self.like, dict(state), MODEL_NAME, strict=True)[0]["params"]


def zero_variables(model: Any, size: int = SIZE) -> dict[str, Any]:
    """Zero-filled variables of our model for [1, FRAMES, size, size, 3] clips (structure only,
    no init)."""
    import jax
    import jax.numpy as jnp

    clips = jax.ShapeDtypeStruct((1, FRAMES, size, size, 3), jnp.float32)
    abstract = jax.eval_shape(lambda x: model.init({"params": jax.random.key(0)}, x), clips)
    return jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), dict(abstract))


def torch_to_ours(
    state: Mapping[str, np.ndarray], like: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """Maps a tensor dict named like the released state dict (weights, or gradients keyed by
    `named_parameters()`) onto our flat `params/...` paths with the converter's key map and
    layout transforms (`like`: our variables, for the structure)."""
    from ifdd_jax.convert import load_into

    variables, _ = load_into(like, dict(state), MODEL_NAME, strict=True)
    return flatten({"params": variables["params"]})


def start_schedule_at(opt_state: Any, step: int) -> Any:
    """`opt_state` with the step counter of its lr schedule(s) set to `step` (Adam's moment
    counter is left alone)."""
    import jax
    import jax.numpy as jnp
    import optax

    found = []

    def shift(node: Any) -> Any:
        if isinstance(node, optax.ScaleByScheduleState):
            found.append(node)
            return node._replace(count=jnp.asarray(step, jnp.asarray(node.count).dtype))
        return node

    shifted = jax.tree.map(
        shift, opt_state, is_leaf=lambda n: isinstance(n, optax.ScaleByScheduleState)
    )
    if not found:
        raise ValueError("the optimiser has no schedule state (optax.ScaleByScheduleState)")
    return shifted


# ---------------------------------------------------------------------------------------------
# The fixture: the released side of one step, recorded so that a test checks ours against it
# without the released code (tests/test_parity_released.py).


@dataclasses.dataclass(frozen=True)
class TensorRule:
    """How the fixture fills one released parameter: its torch name and shape, the mean and
    standard deviation of its seeded weights, and the scale of its synthetic gradients for the
    optimiser check (0: none, so only weight decay moves it; 1e-8: Adam's eps matters)."""

    name: str
    shape: tuple[int, ...]
    mean: float
    std: float
    grad_scale: float


def seeded_tensor(
    name: str, shape: Sequence[int], seed: int, stream: int, mean: float = 0.0, std: float = 1.0
) -> np.ndarray:
    """float32 `mean + std · u`, u uniform with unit variance (√12 · (U[0, 1) - ½)), from
    numpy's PCG64 seeded with (seed, stream, crc32(name)). Uniform rather than normal because
    numpy draws float32 uniforms with integer operations only (the same bits on every platform),
    and seeded per name so that any tensor is rebuilt alone, without torch."""
    rng = np.random.default_rng([seed, stream, zlib.crc32(name.encode())])
    u = rng.random(tuple(shape), dtype=np.float32) - np.float32(0.5)
    return u * np.float32(std * math.sqrt(12.0)) + np.float32(mean)


def seeded_tensors(
    rules: Sequence[TensorRule], seed: int, stream: int, kind: str = "probe"
) -> dict[str, np.ndarray]:
    """Torch-named tensors for `rules`: "weight" (each rule's mean and std), "grad" (unit std
    times its grad_scale) or "probe" (unit std)."""
    out = {}
    for r in rules:
        mean, std = dict(weight=(r.mean, r.std), grad=(0.0, r.grad_scale)).get(kind, (0.0, 1.0))
        out[r.name] = seeded_tensor(r.name, r.shape, seed, stream, mean, std)
    return out


def fixture_rules(model: Any) -> list[TensorRule]:
    """The fixture's rule for every parameter of the released `model`. Well conditioned rather
    than the released init (Linear N(0, 0.02²), LayerNorm 1 and 0, zero biases), under which
    attention is nearly uniform and a dropped or swapped affine term goes unseen: Linear and
    conv weights have std 1/√fan_in (activations and attention logits stay of unit scale),
    LayerNorm scales 1 ± 0.1 and biases ±0.1, other biases 0.05, relative-position tables 0.05
    (their logit term is then about 0.5), the class token and LADM's (unused) position tables
    0.5. The synthetic gradient scale is 0, 1e-8 or 1 by crc32(name) mod 4 (0, 1, else)."""
    import torch  # deferred: the torch extra, only to write the fixture

    owners = dict(model.named_modules())
    rules = []
    for name, param in model.named_parameters():
        owner_name, _, leaf = name.rpartition(".")
        owner = owners[owner_name]
        shape = tuple(param.shape)
        if isinstance(owner, torch.nn.LayerNorm):
            mean, std = (1.0, 0.1) if leaf == "weight" else (0.0, 0.1)
        elif leaf == "bias":
            mean, std = 0.0, 0.05
        elif isinstance(owner, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)):
            mean, std = 0.0, 1.0 / math.sqrt(math.prod(shape[1:]))
        elif leaf.startswith("rel_pos"):
            mean, std = 0.0, 0.05
        else:
            mean, std = 0.0, 0.5
        kind = zlib.crc32(name.encode()) % 4
        grad_scale = 0.0 if kind == 0 else 1e-8 if kind == 1 else 1.0
        rules.append(TensorRule(name, shape, mean, std, grad_scale))
    return rules


def fixture_batch(
    seed: int, batch: int, size: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(clips [batch, 3, FRAMES, size, size] uniform in [0, 1), labels [batch])."""
    rng = np.random.default_rng([seed, BATCH_STREAM])
    clips = rng.random((batch, 3, FRAMES, size, size), dtype=np.float32)
    return clips, rng.integers(0, num_classes, batch)


def sha256(arrays: Sequence[np.ndarray]) -> str:
    """The hex SHA-256 of the arrays' bytes (C order), one after another."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


@dataclasses.dataclass
class Digest:
    """A compact stand-in for a set of tensors (gradients, or updates of the optimiser check): per
    tensor its norm [N] and its inner products with PROBES seeded probe tensors [N, PROBES]. Both
    are layout invariant, so a digest of torch-layout tensors compares with one of the same
    tensors in our layout (their probes converted with them). For a difference Δ of a tensor,
    <Δ, probe> has mean 0 and variance ||Δ||² (unit-variance iid probe entries), so the mean
    square of the probe differences estimates ||Δ||² (digest_errors)."""

    norms: np.ndarray
    products: np.ndarray

    @classmethod
    def empty(cls, n: int) -> Digest:
        return cls(np.zeros(n), np.zeros((n, PROBES)))

    def add_norms(self, tensors: Sequence[Any]) -> None:
        self.norms[:] = [np.linalg.norm(np.asarray(t, np.float64).ravel()) for t in tensors]

    def add_products(self, k: int, tensors: Sequence[Any], probes: Sequence[Any]) -> None:
        self.products[:, k] = [
            np.dot(np.asarray(t, np.float64).ravel(), np.asarray(p, np.float64).ravel())
            for t, p in zip(tensors, probes, strict=True)
        ]


def digest_errors(
    ours: Digest, released: Digest, groups: Sequence[str], names: Sequence[str]
) -> dict[str, GroupError]:
    """Per group of `groups` (one per tensor) and "all": the relative error estimated from the
    digests, sqrt(max(Σ mean_k Δproduct², Σ Δnorm²)) / sqrt(Σ norm²) over the group's tensors
    (the norm term is a lower bound of ||Δ||, the probe term an unbiased estimate of ||Δ||²), and
    the tensor that contributes most (GroupError; its name is the torch name)."""
    d2 = np.maximum(
        np.mean((ours.products - released.products) ** 2, axis=1),
        (ours.norms - released.norms) ** 2,
    )
    out = {}
    for g in sorted(set(groups)) + ["all"]:
        idx = [i for i, gi in enumerate(groups) if g in (gi, "all")]
        diff2, ref2 = float(np.sum(d2[idx])), float(np.sum(released.norms[idx] ** 2))
        worst = idx[int(np.argmax(d2[idx]))]
        out[g] = GroupError(
            error=math.sqrt(diff2) / max(math.sqrt(ref2), TINY),
            worst_leaf=names[worst],
            worst_error=math.sqrt(d2[worst]) / max(released.norms[worst], TINY),
            worst_share=float(d2[worst] / diff2) if diff2 > 0 else 0.0,
        )
    return out


def grad_class(scale: float) -> str:
    """The optimiser check's tensor class of a synthetic gradient scale."""
    return "decay only" if scale == 0 else "eps scale" if scale < 1e-4 else "adam"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def released_optimizer_updates(
    torch_side: TorchSide, rules: Sequence[TensorRule], seed: int
) -> dict[str, np.ndarray]:
    """The released optimiser (`Exp.get_optimizer`, fresh) at OPTIMIZER_LR_SCALE times the
    epoch's lr, OPTIMIZER_STEPS steps on the synthetic gradients of `rules` (every parameter
    gets one, zeros included, so every parameter is decayed as in ours): the update
    p_after - p_before of every parameter, torch-named."""
    torch = torch_side.torch
    model = torch_side.model
    optimizer = torch_side.released.exp.get_optimizer(model)
    for group in optimizer.param_groups:
        group["lr"] = OPTIMIZER_LR_SCALE * torch_side.lr
    before = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    for step in range(OPTIMIZER_STEPS):
        grads = seeded_tensors(rules, seed, GRAD_STREAM + step, "grad")
        for name, param in model.named_parameters():
            param.grad = torch.from_numpy(grads[name])
        optimizer.step()
    return {n: p.detach().numpy() - before[n] for n, p in model.named_parameters()}


def write_fixture(args: argparse.Namespace) -> dict:
    """Writes the released side of the fixture to `args.write_fixture`: FIXTURE_JSON (how it was
    made, the weight rules, buffers, batch labels and targets, losses, lr) and FIXTURE_NPZ (the
    forward values in our layouts, and the digests of the gradients and of the optimiser
    check's updates). The released model is built at `args.size` with FIXTURE_BLOCKS, its
    parameters set by fixture_rules; returns the JSON's content."""
    import torch  # deferred: the torch extra

    configure_determinism()
    released = load_released(args.released, args.seed, args.size, FIXTURE_BLOCKS)
    zeroed = disable_randomness(released.model)
    model = released.model
    rules = fixture_rules(model)
    names = [r.name for r in rules]
    weights = seeded_tensors(rules, args.seed, WEIGHT_STREAM, "weight")
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(torch.from_numpy(weights[name]))
    buffers = {n: b.detach().numpy().copy() for n, b in model.named_buffers()}
    torch_side = TorchSide(released, args.epoch)
    exp = released.exp
    clips, labels = fixture_batch(args.seed, args.batch, args.size, exp.num_classes)
    targets = torch_side.targets(labels, exp.num_classes)
    result = torch_side.step(clips, targets, apply=False)
    updates = released_optimizer_updates(torch_side, rules, args.seed)

    grads, steps = Digest.empty(len(rules)), Digest.empty(len(rules))
    grads.add_norms([result.grads[n] for n in names])
    steps.add_norms([updates[n] for n in names])
    for k in range(PROBES):
        probes = seeded_tensors(rules, args.seed, PROBE_STREAM + k)
        grads.add_products(k, [result.grads[n] for n in names], [probes[n] for n in names])
        steps.add_products(k, [updates[n] for n in names], [probes[n] for n in names])

    commit = args.released_commit or _git_head(args.released)
    meta = dict(
        about="The released IFDD code's side of one training step, for "
        "tests/test_parity_released.py; written by bench/parity_vs_released.py "
        "(write_fixture), checked by its check_fixture. Generated data only.",
        command="python bench/parity_vs_released.py --released DIR --released_commit "
        f"{commit} --write_fixture {args.write_fixture} --size {args.size} "
        f"--batch {args.batch} --epoch {args.epoch} --seed {args.seed}",
        released=dict(
            repository="https://github.com/CyberPegasus/IFDD",
            commit=commit,
            model=f"{EXP_FILE} Exp + {JSON_CONFIG}, get_model() via build_released_model",
            stubbed=released.stubbed,
            randomness_off=zeroed,
        ),
        versions=dict(
            torch=torch.__version__, numpy=np.__version__, python=platform.python_version()
        ),
        batch=args.batch,
        frames=FRAMES,
        size=args.size,
        blocks=list(FIXTURE_BLOCKS),
        epoch=args.epoch,
        seed=args.seed,
        probes=PROBES,
        num_classes=exp.num_classes,
        label_smoothing=exp.label_smoothing,
        labels=labels.tolist(),
        targets=targets.numpy().tolist(),
        weights_sha256=sha256([weights[n] for n in names]),
        clips_sha256=sha256([clips]),
        loss=result.loss,
        lr=dict(
            epoch=torch_side.lr,
            schedule=[released_lr(released, e) for e in range(exp.max_epoch)],
        ),
        optimizer=dict(
            steps=OPTIMIZER_STEPS,
            lr_scale=OPTIMIZER_LR_SCALE,
            lr=OPTIMIZER_LR_SCALE * torch_side.lr,
        ),
        forward=list(result.forward),
        buffers={n: dict(dtype=str(b.dtype), values=b.tolist()) for n, b in buffers.items()},
        rules=[[r.name, list(r.shape), r.mean, r.std, r.grad_scale] for r in rules],
    )
    arrays = {f"forward_{_slug(n)}": v.astype(np.float32) for n, v in result.forward.items()}
    arrays.update(
        grad_norms=grads.norms,
        grad_products=grads.products,
        update_norms=steps.norms,
        update_products=steps.products,
    )
    out = pathlib.Path(args.write_fixture)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / FIXTURE_NPZ, **arrays)
    with open(out / FIXTURE_JSON, "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    return meta


def _git_head(directory: str) -> str:
    """The commit checked out in `directory`, or "unknown" (not a git checkout)."""
    try:
        done = subprocess.run(
            ["git", "-C", directory, "rev-parse", "HEAD"], capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def read_fixture(directory: str) -> tuple[dict, dict[str, np.ndarray], list[TensorRule]]:
    """(the JSON's content, the NPZ's arrays, the weight rules) of a fixture."""
    root = pathlib.Path(directory)
    with open(root / FIXTURE_JSON) as f:
        meta = json.load(f)
    with np.load(root / FIXTURE_NPZ) as npz:
        arrays = {k: npz[k] for k in npz.files}
    rules = [TensorRule(n, tuple(s), m, sd, g) for n, s, m, sd, g in meta["rules"]]
    return meta, arrays, rules


FIXTURE_PARTS = ("step", "optimizer")


def check_fixture(directory: str, parts: Sequence[str] = FIXTURE_PARTS) -> dict:
    """Our side of the fixture in `directory` against its released side; returns the figures
    (relative errors, see FIXTURE_THRESHOLDS). Parts: "step" (targets, forward values from the
    trunk to the logits, both loss terms, gradients per group: fixture_step_figures) and
    "optimizer" (the lr at the epoch and at every epoch, two AdamW steps on synthetic gradients:
    fixture_optimizer_figures). Needs JAX only: the weights, batch, synthetic gradients and
    probes are rebuilt from their seeds, and our model is the reference config at the fixture's
    size and blocks, its attention and pooling in the forms "auto" picks."""
    import jax  # deferred: JAX loads TensorFlow's plugins; the parser needs none of it

    meta, arrays, rules = read_fixture(directory)
    seed, names = meta["seed"], [r.name for r in rules]
    weights = seeded_tensors(rules, seed, WEIGHT_STREAM, "weight")
    clips, labels = fixture_batch(seed, meta["batch"], meta["size"], meta["num_classes"])
    if sha256([weights[n] for n in names]) != meta["weights_sha256"] or (
        sha256([clips]) != meta["clips_sha256"] or labels.tolist() != meta["labels"]
    ):
        raise ValueError(
            "numpy no longer draws the fixture's weights or batch bit for bit (numpy "
            f"{np.__version__}; the fixture's: {meta['versions']['numpy']}): regenerate it"
        )
    state = dict(weights)
    state.update({n: np.array(b["values"], b["dtype"]) for n, b in meta["buffers"].items()})
    side = JaxSide(state, meta["epoch"], OPTIMIZER_STEPS, meta["size"], meta["blocks"])
    del state, weights
    # Our tensors under the torch names (one target leaf per torch tensor, so that a digest of
    # ours lines up with the released one).
    target_of = dict(side.report.loaded)
    if len(set(target_of.values())) != len(target_of):
        raise ValueError("a torch tensor fills several of our leaves: digests need one each")
    leaves = [target_of[n] for n in names]
    figures: dict = {}
    with jax.default_matmul_precision("highest"):
        if "step" in parts:
            figures.update(fixture_step_figures(side, meta, arrays, rules, leaves, clips, labels))
        if "optimizer" in parts:
            figures.update(fixture_optimizer_figures(side, meta, arrays, rules, leaves))
    return figures


def fixture_step_figures(
    side: JaxSide,
    meta: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    rules: Sequence[TensorRule],
    leaves: Sequence[str],
    clips: np.ndarray,
    labels: np.ndarray,
) -> dict:
    """check_fixture's "step" part: one forward/backward of ours on the fixture's batch."""
    targets = side.targets(labels, meta["num_classes"], meta["label_smoothing"])
    result = side.step(clips, targets, apply=False)
    grads = _digest_of(side, rules, meta["seed"], [result.grads[t] for t in leaves], leaves)
    released = Digest(arrays["grad_norms"], arrays["grad_products"])
    errors = digest_errors(
        grads, released, [param_group(t) for t in leaves], [r.name for r in rules]
    )
    return dict(
        targets=relative_error(np.asarray(targets), np.asarray(meta["targets"])),
        forward={
            n: relative_error(result.forward[n], arrays[f"forward_{_slug(n)}"])
            for n in meta["forward"]
        },
        loss={n: relative_error(result.loss[n], v) for n, v in meta["loss"].items()},
        grad={g: dataclasses.asdict(e) for g, e in errors.items()},
    )


def fixture_optimizer_figures(
    side: JaxSide,
    meta: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    rules: Sequence[TensorRule],
    leaves: Sequence[str],
) -> dict:
    """check_fixture's "optimizer" part: our lr schedule, and our optimiser's two steps on the
    synthetic gradients, per class of gradient scale (grad_class)."""
    epochs = np.arange(len(meta["lr"]["schedule"]))
    ours_lrs = np.asarray(side.schedule(epochs * side.per_epoch), np.float64)
    released_lrs = np.asarray(meta["lr"]["schedule"])
    updates, opt_lr = our_optimizer_updates(side, rules, meta["seed"], meta["epoch"])
    steps = _digest_of(side, rules, meta["seed"], [updates[t] for t in leaves], leaves)
    released = Digest(arrays["update_norms"], arrays["update_products"])
    classes = [grad_class(r.grad_scale) for r in rules]
    errors = digest_errors(steps, released, classes, [r.name for r in rules])
    return dict(
        lr=relative_error(side.lr, meta["lr"]["epoch"]),
        lr_schedule=float(np.max(np.abs(ours_lrs - released_lrs) / released_lrs)),
        optimizer_lr=relative_error(opt_lr, meta["optimizer"]["lr"]),
        update={c: dataclasses.asdict(e) for c, e in errors.items()},
    )


def _digest_of(
    side: JaxSide,
    rules: Sequence[TensorRule],
    seed: int,
    tensors: Sequence[Any],
    leaves: Sequence[str],
) -> Digest:
    """The Digest of our `tensors` (one per rule, our layout at `leaves`): the probes are the
    fixture's, converted to our layout as the weights are."""
    digest = Digest.empty(len(rules))
    digest.add_norms(tensors)
    for k in range(PROBES):
        probes = side.torch_to_ours(seeded_tensors(rules, seed, PROBE_STREAM + k))
        digest.add_products(k, tensors, [probes[t] for t in leaves])
    return digest


def our_optimizer_updates(
    side: JaxSide, rules: Sequence[TensorRule], seed: int, epoch: int
) -> tuple[dict[str, np.ndarray], float]:
    """Our optimiser (lr × OPTIMIZER_LR_SCALE, positioned at `epoch`) for OPTIMIZER_STEPS steps
    on the synthetic gradients of `rules`, from side.params: ({our leaf path: p_after -
    p_before}, its lr)."""
    import jax  # deferred: see check_fixture
    import optax  # deferred: with JAX

    tx, schedule, state = side.optimizer(epoch, OPTIMIZER_STEPS, OPTIMIZER_LR_SCALE)
    update = jax.jit(tx.update)
    params = side.params
    for step in range(OPTIMIZER_STEPS):
        grads = side.torch_to_tree(seeded_tensors(rules, seed, GRAD_STREAM + step, "grad"))
        changes, state = update(grads, state, params)
        params = optax.apply_updates(params, changes)
    before, after = flatten({"params": side.params}), flatten({"params": params})
    lr = float(schedule(epoch * OPTIMIZER_STEPS))
    return {p: after[p] - before[p] for p in before}, lr


def fixture_failures(figures: Mapping[str, Any]) -> list[str]:
    """Every figure of check_fixture (those present) over its FIXTURE_THRESHOLDS entry, as
    readable lines."""
    t = FIXTURE_THRESHOLDS
    checks = [(n, figures[n], t[n]) for n in ("lr", "lr_schedule", "targets") if n in figures]
    if "optimizer_lr" in figures:
        checks.append(("optimizer_lr", figures["optimizer_lr"], t["lr"]))
    checks += [(f"forward {n}", e, t["forward"]) for n, e in figures.get("forward", {}).items()]
    checks += [(f"loss {n}", e, t["loss"]) for n, e in figures.get("loss", {}).items()]
    for kind in ("grad", "update"):
        for g, e in figures.get(kind, {}).items():
            name = f"{kind} {g} (most: {e['worst_leaf']}, {_fmt(e['worst_error'])})"
            limit = t["grad_trunk"] if kind == "grad" and g in ("trunk", "all") else t[kind]
            checks.append((name, e["error"], limit))
    return [f"{name}: {_fmt(err)} > {limit:g}" for name, err, limit in checks if not err <= limit]


# ---------------------------------------------------------------------------------------------
# Running and reporting.


def configure_determinism() -> None:
    import jax
    import torch

    torch.use_deterministic_algorithms(True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    jax.config.update("jax_default_matmul_precision", "highest")


def _fmt(x: float) -> str:
    return f"{x:.2e}"


def run(args: argparse.Namespace) -> tuple[dict, bool]:
    """The comparison; returns (all figures, whether they are within THRESHOLDS)."""
    import torch  # noqa: F401  (first: torch after TensorFlow crashes, see tests/conftest.py)

    configure_determinism()
    released = load_released(args.released, args.seed, args.size)
    if released.stubbed:
        print(
            f"stubbed released-code imports (not installed, unused by the model): "
            f"{', '.join(released.stubbed)}"
        )
    zeroed = disable_randomness(released.model)
    print(
        "randomness off in the released model (p = 0): "
        + ", ".join(f"{n} {k}" for k, n in sorted(zeroed.items()))
    )
    torch_side = TorchSide(released, args.epoch)
    jax_side = JaxSide(torch_side.state_dict(), args.epoch, args.steps, args.size)
    print(
        f"converted {len(jax_side.report.loaded)} tensors; "
        f"skipped {len(jax_side.report.skipped)} (buffers)"
    )

    rng = np.random.default_rng(args.seed)
    clips = rng.uniform(0.0, 1.0, (args.batch, 3, FRAMES, args.size, args.size))
    clips = clips.astype(np.float32)
    k = released.exp.num_classes
    labels = rng.integers(0, k, args.batch)
    t_targets = torch_side.targets(labels, k)
    j_targets = jax_side.targets(labels, k, released.exp.label_smoothing)

    figures: dict = dict(
        command=dict(
            batch=args.batch, steps=args.steps, epoch=args.epoch, seed=args.seed, size=args.size
        ),
        stubbed=released.stubbed,
        randomness_off=zeroed,
        lr=dict(
            released=torch_side.lr,
            ours=jax_side.lr,
            relative=relative_error(jax_side.lr, torch_side.lr),
        ),
        targets=relative_error(np.asarray(j_targets), t_targets.numpy()),
        steps=[],
    )
    # The whole per-epoch schedule too (no model involved): warmup quirk, cosine, end.
    epochs = np.arange(released.exp.max_epoch)
    ours_lrs = np.asarray(jax_side.schedule(epochs * jax_side.per_epoch), np.float64)
    released_lrs = np.array([released_lr(released, int(e)) for e in epochs])
    per_epoch_err = np.abs(ours_lrs - released_lrs) / np.maximum(np.abs(released_lrs), TINY)
    e = int(np.argmax(per_epoch_err))
    figures["lr_schedule"] = dict(
        max_relative=float(per_epoch_err[e]),
        worst_epoch=e,
        released=released_lrs.tolist(),
        ours=ours_lrs.tolist(),
    )
    print(
        f"lr at epoch {args.epoch}: released {torch_side.lr:.6g}, ours {jax_side.lr:.6g} "
        f"(relative {_fmt(figures['lr']['relative'])}); over epochs 0-{len(epochs) - 1}: worst "
        f"{_fmt(per_epoch_err[e])} at epoch {e} (released {released_lrs[e]:.6g}, ours "
        f"{ours_lrs[e]:.6g}); targets {_fmt(figures['targets'])}"
    )

    params0 = jax_side.torch_to_ours(torch_side.state_dict())
    for i in range(max(args.steps, 1)):
        apply = i < args.steps
        t_res = torch_side.step(clips, t_targets, apply)
        j_res = jax_side.step(clips, j_targets, apply)
        step_fig: dict = dict(
            step=i,
            loss={
                name: dict(
                    released=t_res.loss[name],
                    ours=j_res.loss[name],
                    relative=relative_error(j_res.loss[name], t_res.loss[name]),
                )
                for name in t_res.loss
            },
        )
        if i == 0:
            figures["forward"] = {
                name: relative_error(j_res.forward[name], t_res.forward[name])
                for name in t_res.forward
            }
            grads = group_errors(j_res.grads, jax_side.torch_to_ours(t_res.grads))
            figures["grad"] = {g: dataclasses.asdict(e) for g, e in grads.items()}
            figures["loss"] = step_fig["loss"]
            _print_step0(figures)
        if apply:
            t_params = jax_side.torch_to_ours(torch_side.state_dict())
            j_params = flatten({"params": jax_side.params})
            p_err = group_errors(j_params, t_params)
            u_err = group_errors(
                {p: j_params[p] - params0[p] for p in params0},
                {p: t_params[p] - params0[p] for p in params0},
            )
            step_fig["params"] = {g: dataclasses.asdict(e) for g, e in p_err.items()}
            step_fig["update"] = {g: dataclasses.asdict(e) for g, e in u_err.items()}
            print(
                f"step {i + 1}: loss released {t_res.loss['total']:.6f} ours "
                f"{j_res.loss['total']:.6f} | params "
                + " ".join(f"{g} {_fmt(p_err[g].error)}" for g in GROUPS)
                + " | update (p_k - p_0) "
                + " ".join(f"{g} {_fmt(u_err[g].error)}" for g in GROUPS)
            )
        figures["steps"].append(step_fig)

    worst = dict(
        lr=max(figures["lr"]["relative"], figures["lr_schedule"]["max_relative"]),
        fwd=max(figures["forward"].values()),
        loss=max(v["relative"] for v in figures["loss"].values()),
        grad=max(figures["grad"][g]["error"] for g in GROUPS),
    )
    if args.steps:
        last = figures["steps"][args.steps - 1]
        worst["step"] = max(last["params"][g]["error"] for g in GROUPS)
    figures["worst"] = worst
    ok = all(worst[key] <= THRESHOLDS[key] for key in worst)
    figures["within_thresholds"] = ok
    figures["thresholds"] = THRESHOLDS
    return figures, ok


def _print_step0(figures: dict) -> None:
    print("forward (relative error ||ours - released|| / ||released||)")
    for name, err in figures["forward"].items():
        print(f"  {name:26s} {_fmt(err)}")
    print("loss (released / ours / relative)")
    for name, v in figures["loss"].items():
        print(f"  {name:26s} {v['released']:.7f} {v['ours']:.7f} {_fmt(v['relative'])}")
    print("gradients per group (relative error; worst tensor)")
    for g in GROUPS + ("all",):
        e = figures["grad"][g]
        print(
            f"  {g:8s} {_fmt(e['error'])}   most: {e['worst_leaf']} ({_fmt(e['worst_error'])}, "
            f"{100 * e['worst_share']:.0f}% of the difference)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.write_fixture:
        return fixture_main(args)
    figures, ok = run(args)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    w = figures["worst"]
    line = f"parity vs released: fwd {_fmt(w['fwd'])} loss {_fmt(w['loss'])} grad {_fmt(w['grad'])}"
    if "step" in w:
        line += f" step{args.steps} {_fmt(w['step'])}"
    if not ok:
        over = [k for k in w if w[k] > THRESHOLDS[k]]
        print(f"over the acceptance thresholds {THRESHOLDS}: {', '.join(over)}")
    print(line)
    return 0 if ok else 1


def fixture_main(args: argparse.Namespace) -> int:
    """--write_fixture: writes the fixture, checks ours against it (as the test does), records
    the figures in its JSON ("measured") and prints them; 1 when one is over its threshold."""
    meta = write_fixture(args)
    print(f"wrote {args.write_fixture} (released commit {meta['released']['commit']})")
    figures = check_fixture(args.write_fixture)
    meta["measured"] = dict(
        note="check_fixture's figures when the fixture was written (our code at that time)",
        figures=figures,
        thresholds=FIXTURE_THRESHOLDS,
    )
    with open(pathlib.Path(args.write_fixture) / FIXTURE_JSON, "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(json.dumps(figures, indent=1))
    failures = fixture_failures(figures)
    for line in failures:
        print(f"over the threshold: {line}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
