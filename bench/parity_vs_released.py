"""Parity of our IFDD-3DViT (reference flavor) with the authors' released PyTorch code.

    python bench/parity_vs_released.py --released DIR [--batch 2] [--steps 5] [--epoch 10]
        [--seed 0] [--json OUT]

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
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import math
import os
import pathlib
import sys
import types
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
# The released input is fixed: 16 frames at 224² (its backbone hard-codes the token grid).
FRAMES, SIZE = 16, 224


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
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.batch < 1:
        raise SystemExit(f"--batch must be at least 1, got {args.batch}")
    if args.steps < 0:
        raise SystemExit(f"--steps must be >= 0, got {args.steps}")
    if args.epoch < 0:
        raise SystemExit(f"--epoch must be >= 0, got {args.epoch}")
    return args


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


def load_released(directory: str, seed: int) -> Released:
    """Builds the released IFDD-3DViT as its tools/train.py does (the model's init is seeded)."""
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
            model = exp.get_model()
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
            "trunk stage 2": tokens_to_grid(stages[2].numpy(), t, 14, 14),
            "trunk stage 3": tokens_to_grid(stages[3].numpy(), t, 7, 7),
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

    def __init__(self, torch_state: Mapping[str, np.ndarray], epoch: int, steps: int) -> None:
        import jax
        import jax.numpy as jnp
        import optax

        from ifdd_jax.config_lib import load_config_file
        from ifdd_jax.convert import load_into
        from ifdd_jax.models import build_model
        from ifdd_jax.optim import make_optimizer

        self.jax, self.jnp, self.optax = jax, jnp, optax
        config = load_config_file(CONFIG)
        config.model.drop_path = 0.0
        config.model.head_dropout = 0.0
        self.config = config
        model = build_model(config)
        if not hasattr(model, "trunk") or not hasattr(model.trunk, "drop_path"):
            raise SystemExit("our IFDD model no longer has trunk.drop_path: update the tool")
        self.model = model.clone(trunk=model.trunk.clone(drop_path=0.0))
        self.like = zero_variables(self.model)
        variables, report = load_into(self.like, dict(torch_state), MODEL_NAME, strict=True)
        if report.not_loaded or report.resized:
            raise SystemExit("conversion left parameters at init or resized:\n" + report.format())
        self.report = report
        self.params = variables["params"]
        self.batch_stats = variables.get("batch_stats", {})

        # Our optimiser on the reference recipe with one epoch = the compared steps, so that all
        # of them fall in epoch `epoch`: its schedule's step counter starts there while Adam's
        # own counter (bias correction) starts at 0, as a fresh torch AdamW's does.
        per_epoch = max(steps, 1)
        total = config.num_epochs * per_epoch
        self.tx, self.schedule = make_optimizer(
            config, steps_per_epoch=per_epoch, total_steps=total
        )
        self.per_epoch = per_epoch
        self.lr = float(self.schedule(epoch * per_epoch))
        self.opt_state = start_schedule_at(self.tx.init(self.params), epoch * per_epoch)
        self._step = jax.jit(self._step_fn, static_argnames=("apply",))

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


def zero_variables(model: Any) -> dict[str, Any]:
    """Zero-filled variables of our model at the released input size (structure only, no init)."""
    import jax
    import jax.numpy as jnp

    clips = jax.ShapeDtypeStruct((1, FRAMES, SIZE, SIZE, 3), jnp.float32)
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
    released = load_released(args.released, args.seed)
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
    jax_side = JaxSide(torch_side.state_dict(), args.epoch, args.steps)
    print(
        f"converted {len(jax_side.report.loaded)} tensors; "
        f"skipped {len(jax_side.report.skipped)} (buffers)"
    )

    rng = np.random.default_rng(args.seed)
    clips = rng.uniform(0.0, 1.0, (args.batch, 3, FRAMES, SIZE, SIZE)).astype(np.float32)
    k = released.exp.num_classes
    labels = rng.integers(0, k, args.batch)
    t_targets = torch_side.targets(labels, k)
    j_targets = jax_side.targets(labels, k, released.exp.label_smoothing)

    figures: dict = dict(
        command=dict(batch=args.batch, steps=args.steps, epoch=args.epoch, seed=args.seed),
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


if __name__ == "__main__":
    sys.exit(main())
