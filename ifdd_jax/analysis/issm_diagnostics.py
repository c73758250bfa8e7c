"""What ISSM and LADM do on a trained run's clips: is the split content-aware, are the groups
apart, does the lifting change anything?

    python -m ifdd_jax.analysis.issm_diagnostics --workdir runs/default --out figs/issm_diag.json

Over the clips of a split (the first evaluation view of each), with X `[T_X, H, W, C]` the pyramid
output, t = T_X / 2 slots per group, X_S / X_D `[t, H, W, C]` ISSM's static and dynamic groups and
Y_D LADM's output:

  attention  S itself: the range of its entries within a clip (mean over clips; a small range
             makes both softmaxes nearly uniform) and their std across clips, and
             A_S = softmax(S) and A_D = softmax(-S) `[T_X, T_X]` per clip (S the scaled frame
             similarity of Eq. 2, A the input of the offset Linears): `spread`, the mean over the
             T_X² entries of their std across clips (0: every clip gets the same matrix, so the
             indices cannot depend on the content); the mean Frobenius distance to the identity
             and to the uniform matrix (for scale, the identity is sqrt(T_X - 1) from uniform);
             the mean row entropy / log T_X (0: one-hot rows, 1: uniform rows).
  indices    the positions ISSM reads per slot: mean and std across clips (`std_mean`, the std
             averaged over slots, is 0 when every clip reads the same frames); per clip the
             minimum |I_S[i] - I_D[j]| over all slot pairs (0: a static and a dynamic slot read
             the same frame), its mean and minimum over clips and the share of clips where it is
             below half a frame; the paired |I_S[k] - I_D[k]|, mean over slots and clips.
  lifting    ‖Y_D‖ / ‖X_D‖ per clip (Frobenius over t×H×W×C; 1 when LADM is "none"; against
             ISSM's X_D, before the reference flavor's LayerNorm), mean over clips; the cosine
             between X_S[k] and X_D[k] (slot k of each group, flattened), mean over slots and
             clips, and between every X_S[i] and X_D[j]; the per-clip lifting loss
             (`losses.lifting_loss` with the run's mode, "tc" if the run has it off) in eval
             mode, mean over clips, and the weight the run trains it with.
  training   (diagnose_run only) each module's parameter movement from its initialisation
             against the schedule's lr budget Σ lr (analysis/param_movement.py): do ISSM's and
             LADM's small layers get enough learning rate and warmup?

The intermediates are ISSM's and LADM's return values, read with flax's `capture_intermediates`
(no change to the models). A model without ISSM (the baselines) is skipped with a message.
Writes a JSON of every figure (`--out`) and prints a summary.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ifdd_jax.analysis import param_movement
from ifdd_jax.analysis.figures import run_command
from ifdd_jax.input_pipeline import build_data
from ifdd_jax.models import build_model
from ifdd_jax.models.issm import ISSM
from ifdd_jax.models.ladm import LADM
from ifdd_jax.models.losses import lifting_loss
from ifdd_jax.optim import steps_for
from ifdd_jax.trained_run import load_config, load_trained

# Per-clip measures `_clip_measures` returns (the attention ones only where ISSM computes S).
_ATTENTION = ("similarity", "a_static", "a_dynamic")


class NoISSMError(ValueError):
    """The run's model has no ISSM: nothing to diagnose."""


def load_run(workdir: str):
    """The run's restored model (a TrainedModel: config, model, variables, checkpoint, step)."""
    return load_trained(workdir)


def has_issm(model) -> bool:
    """True for IFDD models (2DCNN and 3DViT): their `issm` attribute is an ISSM module."""
    return isinstance(getattr(model, "issm", None), ISSM)


def _is_probe(module, method_name: str) -> bool:
    return method_name == "__call__" and isinstance(module, (ISSM, LADM))


def _captured(intermediates) -> dict[str, dict]:
    """{"issm": ISSM's output dict, "ladm": LADM's} from the captured intermediates tree (each
    module's `__call__` entry is a tuple of its return values)."""
    found: dict[str, dict] = {}

    def visit(node) -> None:
        for key, value in node.items():
            if key == "__call__":
                for out in value:
                    # ISSM returns the indices, LADM the classification vector.
                    found["issm" if "static_index" in out else "ladm"] = out
            elif hasattr(value, "items"):
                visit(value)

    visit(intermediates)
    return found


def _unit(x: jax.Array) -> jax.Array:
    """Rows of `[..., D]` scaled to unit norm (zero rows stay zero)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("model", "lift"))
def _clip_measures(variables: dict, clips: jax.Array, *, model, lift: str) -> dict:
    """Per-clip measures of clips `[B, T, S, S, 3]`: similarity, a_static, a_dynamic
    `[B, T_X, T_X]` (where ISSM computes S), static_index, dynamic_index `[B, t]`, and `[B]`
    yd_over_xd, cos_paired, cos_all, lift."""
    outputs, state = model.apply(
        variables, clips, train=False, capture_intermediates=_is_probe, mutable=["intermediates"]
    )
    probes = _captured(state["intermediates"])
    split, lifted = probes["issm"], probes["ladm"]
    xs = split["static"].astype(jnp.float32)  # X_S [B, t, H, W, C]
    xd = split["dynamic"].astype(jnp.float32)  # X_D [B, t, H, W, C]
    yd = lifted["dynamic"].astype(jnp.float32)  # Y_D [B, t, H, W, C]
    b, t = xs.shape[:2]
    result = dict(static_index=split["static_index"], dynamic_index=split["dynamic_index"])
    if "similarity" in split:
        s = split["similarity"].astype(jnp.float32)  # S [B, T_X, T_X], already scaled
        result["similarity"] = s
        result["a_static"] = jax.nn.softmax(s, axis=-1)
        result["a_dynamic"] = jax.nn.softmax(-s, axis=-1)
    result["yd_over_xd"] = jnp.linalg.norm(yd.reshape(b, -1), axis=-1) / jnp.maximum(
        jnp.linalg.norm(xd.reshape(b, -1), axis=-1), 1e-12
    )
    cos = jnp.einsum("bid,bjd->bij", _unit(xs.reshape(b, t, -1)), _unit(xd.reshape(b, t, -1)))
    result["cos_paired"] = jnp.trace(cos, axis1=1, axis2=2) / t
    result["cos_all"] = cos.mean(axis=(1, 2))
    # Positional call: the same in every version of lifting_loss (static, pooled_x, mode).
    result["lift"] = lifting_loss(outputs["static"], outputs["pooled_x"], lift)
    return result


def _lift_mode(config) -> str:
    mode = config.loss.get("lift", "tc") if "loss" in config else "tc"
    return "tc" if mode in (None, "off") else mode


def measure_clips(
    model, variables: dict, clips: np.ndarray, *, lift: str = "tc", batch_size: int = 8
) -> dict[str, np.ndarray]:
    """Per-clip measures (see `_clip_measures`) of clips `[N, T, S, S, 3]` (already
    preprocessed), run in batches of `batch_size` (the last one padded, so one compile)."""
    clips = np.asarray(clips, np.float32)
    n = clips.shape[0]
    parts: dict[str, list] = {}
    for start in range(0, n, batch_size):
        batch = clips[start : start + batch_size]
        count = batch.shape[0]
        if count < batch_size:
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - count, 0)])
        out = jax.device_get(_clip_measures(variables, batch, model=model, lift=lift))
        for key, value in out.items():
            parts.setdefault(key, []).append(np.asarray(value)[:count])
    return {key: np.concatenate(value) for key, value in parts.items()}


def measure_split(
    trained, workdir: str, *, split: str = "test", max_clips: int | None = None
) -> dict[str, np.ndarray]:
    """Per-clip measures over `split` as evaluation reads it (first view of each clip), plus
    "label" `[N]`."""
    data = build_data(trained.config, workdir)
    lift = _lift_mode(trained.config)
    parts: dict[str, list] = {}
    total = 0
    for batch in data.make_eval_iter(split):
        keep = np.asarray(batch["mask"], bool)
        clips = np.asarray(batch["clips"])[:, 0]  # [B, T, S, S, 3]: the first view
        out = jax.device_get(
            _clip_measures(trained.variables, clips, model=trained.model, lift=lift)
        )
        out["label"] = batch["label"]
        for key, value in out.items():
            parts.setdefault(key, []).append(np.asarray(value)[keep])
        total += int(keep.sum())
        if max_clips is not None and total >= max_clips:
            break
    if total == 0:
        raise ValueError(f"{workdir}: the {split} split has no clips")
    result = {key: np.concatenate(value) for key, value in parts.items()}
    if max_clips is not None:
        result = {key: value[:max_clips] for key, value in result.items()}
    return result


def _attention_figures(a: np.ndarray) -> dict:
    """a `[N, T, T]` row-stochastic matrices -> spread and distances (see the module docstring)."""
    a = a.astype(np.float64)
    t = a.shape[-1]
    identity = np.eye(t)
    entropy = -(a * np.log(np.clip(a, 1e-12, None))).sum(-1)  # [N, T]
    return dict(
        spread=float(a.std(axis=0).mean()),
        spread_max=float(a.std(axis=0).max()),
        distance_identity=float(np.linalg.norm(a - identity, axis=(1, 2)).mean()),
        distance_uniform=float(np.linalg.norm(a - 1.0 / t, axis=(1, 2)).mean()),
        identity_to_uniform=float(math.sqrt(t - 1)),
        row_entropy=float(entropy.mean() / math.log(t)),
        mean=a.mean(axis=0).round(6).tolist(),
    )


def summarize(measures: dict[str, np.ndarray]) -> dict:
    """The figures of per-clip `measures` (as `measure_clips` / `measure_split` return them)."""
    static = measures["static_index"].astype(np.float64)  # [N, t]
    dynamic = measures["dynamic_index"].astype(np.float64)
    pair_gaps = np.abs(static[:, :, None] - dynamic[:, None, :])  # [N, t, t]
    min_gap = pair_gaps.min(axis=(1, 2))  # [N]
    result = dict(
        num_clips=int(static.shape[0]),
        slots=int(static.shape[1]),
        attention=None,
        indices=dict(
            static_mean=static.mean(0).round(4).tolist(),
            static_std=static.std(0).round(6).tolist(),
            dynamic_mean=dynamic.mean(0).round(4).tolist(),
            dynamic_std=dynamic.std(0).round(6).tolist(),
            static_std_mean=float(static.std(0).mean()),
            dynamic_std_mean=float(dynamic.std(0).mean()),
            min_distance_mean=float(min_gap.mean()),
            min_distance_min=float(min_gap.min()),
            min_distance_below_half=float((min_gap < 0.5).mean()),
            paired_distance_mean=float(np.abs(static - dynamic).mean()),
        ),
        lifting=dict(
            yd_over_xd_norm=float(measures["yd_over_xd"].mean()),
            cos_xs_xd_paired=float(measures["cos_paired"].mean()),
            cos_xs_xd_all=float(measures["cos_all"].mean()),
            lifting_loss=float(measures["lift"].mean()),
        ),
    )
    if all(k in measures for k in _ATTENTION):
        s = measures["similarity"].astype(np.float64)  # [N, T_X, T_X]
        result["attention"] = dict(
            static=_attention_figures(measures["a_static"]),
            dynamic=_attention_figures(measures["a_dynamic"]),
            # S before the softmax: a small range within a clip makes both A nearly uniform.
            similarity=dict(
                range_mean=float((s.max(axis=(1, 2)) - s.min(axis=(1, 2))).mean()),
                spread=float(s.std(axis=0).mean()),
                mean=s.mean(axis=0).round(4).tolist(),
            ),
        )
        result["frames_x"] = int(measures["a_static"].shape[-1])
    else:
        result["frames_x"] = 2 * result["slots"]
    return result


def diagnose_clips(
    model, variables: dict, clips: np.ndarray, *, lift: str = "tc", batch_size: int = 8
) -> dict:
    """The figures of clips `[N, T, S, S, 3]` (already preprocessed) under `model`."""
    if not has_issm(model):
        raise NoISSMError(f"{type(model).__name__} has no ISSM")
    return summarize(measure_clips(model, variables, clips, lift=lift, batch_size=batch_size))


def diagnose_run(workdir: str, *, split: str = "test", max_clips: int | None = None) -> dict:
    """The figures of a trained run over `split`, with what was measured where."""
    config = load_config(workdir)
    # Checked on the config before anything is restored: the baselines have nothing to measure.
    if not has_issm(build_model(config)):
        raise NoISSMError(
            f"{workdir}: {config.model_name} has no ISSM (nothing to diagnose; "
            f"this measures IFDD models)"
        )
    trained = load_trained(workdir, config=config)
    figures = summarize(measure_split(trained, workdir, split=split, max_clips=max_clips))
    figures["training"] = _training_figures(trained, workdir)
    m = trained.config.model
    loss = trained.config.get("loss", {})
    weight = loss.get("lift_weight")
    if weight is None:
        weight = 1.0 if trained.config.flavor == "paper" else 0.1
    figures["lifting"].update(
        mode=_lift_mode(trained.config),
        trained_mode=loss.get("lift"),
        trained_weight=weight,
        trained_reduction=loss.get("lift_reduction"),
    )
    return dict(
        workdir=os.path.abspath(workdir),
        checkpoint=trained.checkpoint,
        step=trained.step,
        model=trained.config.model_name,
        flavor=trained.config.flavor,
        split=split,
        issm=m.get("issm"),
        issm_range=m.get("issm_range"),
        ladm=m.get("ladm"),
        event_frames=trained.config.data.get("synthetic", {}).get("event_frames"),
        **figures,
    )


def _training_figures(trained, workdir: str) -> dict | None:
    """Parameter movement per module against the lr budget (analysis/param_movement.py); None
    for a run that started from converted weights (its θ₀ is not the seed's)."""
    config = trained.config
    if config.get("init_from"):
        return None
    num_train = build_data(config, workdir).meta["num_examples"]["train"]
    steps_per_epoch, total_steps = steps_for(config, num_train)
    initial = param_movement.initial_params(trained.model, config)
    return dict(
        lr=param_movement.lr_budget(
            config, steps=trained.step, steps_per_epoch=steps_per_epoch, total_steps=total_steps
        ),
        movement=param_movement.movement(initial, trained.variables["params"]),
    )


def _numbers(values: Sequence[float], digits: int = 2) -> str:
    return "[" + ", ".join(f"{v:.{digits}f}" for v in values) + "]"


def format_summary(d: dict) -> str:
    """A readable summary of `diagnose_run`'s (or `summarize`'s) figures."""
    lines = []
    if "model" in d:
        lines.append(
            f"{d['model']} ({d['flavor']}, ISSM {d.get('issm')}, LADM {d.get('ladm')}), "
            f"{d['split']} split, step {d['step']}: {d['num_clips']} clips, X has "
            f"{d['frames_x']} frames, {d['slots']} slots per group"
        )
    att = d.get("attention")
    if att is None:
        lines.append("attention: none (this ISSM variant computes no frame similarity)")
    else:
        sim = att["similarity"]
        lines.append(
            f"similarity S: range within a clip {sim['range_mean']:.3g} (mean over "
            f"clips), spread across clips {sim['spread']:.3g}"
        )
        for name, a in (("A_S", att["static"]), ("A_D", att["dynamic"])):
            lines.append(
                f"attention {name}: spread across clips {a['spread']:.3g} (max entry std "
                f"{a['spread_max']:.3g}); distance to identity {a['distance_identity']:.3f}, to "
                f"uniform {a['distance_uniform']:.3f} (identity-uniform "
                f"{a['identity_to_uniform']:.3f}); row entropy {a['row_entropy']:.3f} of the "
                f"maximum"
            )
    i = d["indices"]
    lines.append(
        f"indices static: mean {_numbers(i['static_mean'])} std "
        f"{_numbers(i['static_std'], 3)} (mean std {i['static_std_mean']:.3g})"
    )
    lines.append(
        f"indices dynamic: mean {_numbers(i['dynamic_mean'])} std "
        f"{_numbers(i['dynamic_std'], 3)} (mean std {i['dynamic_std_mean']:.3g})"
    )
    lines.append(
        f"min |I_S - I_D| per clip: mean {i['min_distance_mean']:.3f}, min "
        f"{i['min_distance_min']:.3f}, {100 * i['min_distance_below_half']:.0f}% of clips "
        f"below half a frame; paired |I_S[k] - I_D[k]| mean "
        f"{i['paired_distance_mean']:.3f}"
    )
    f = d["lifting"]
    weight = (
        f" (mode {f['mode']}, trained with weight {f['trained_weight']:g}"
        f"{', off' if f.get('trained_mode') == 'off' else ''})"
        if "mode" in f
        else ""
    )
    lines.append(
        f"lifting: |Y_D|/|X_D| {f['yd_over_xd_norm']:.3f}; cos(X_S, X_D) paired "
        f"{f['cos_xs_xd_paired']:.3f}, all pairs {f['cos_xs_xd_all']:.3f}; lifting "
        f"loss {f['lifting_loss']:.4g}{weight}"
    )
    t = d.get("training")
    if t:
        lr = t["lr"]
        lines.append(
            f"training: {lr['steps']} steps, lr peak {lr['lr_peak']:.3g}, warmup "
            f"{lr['warmup_steps']} steps, lr budget sum(lr) {lr['lr_sum']:.3g}"
        )
        for name, g in sorted(t["movement"].items()):
            rel = g["relative_change"]
            lines.append(
                f"  {name}: |dtheta|/|theta0| {'n/a' if rel is None else f'{rel:.3g}'}, "
                f"mean |dtheta| "
                f"{g['mean_abs_change']:.3g} (mean |theta0| {g['mean_abs_initial']:.3g}), "
                f"{g['entries']} entries"
            )
    return "\n".join(lines)


def _write(workdir: str, out: str | None, split: str, max_clips: int | None) -> list:
    try:
        figures = diagnose_run(workdir, split=split, max_clips=max_clips)
    except NoISSMError as e:
        print(f"skipped: {e}")
        if out:
            _dump(dict(workdir=os.path.abspath(workdir), skipped=str(e)), out)
            return [out]
        return []
    print(format_summary(figures))
    if out:
        _dump(figures, out)
        return [out]
    return []


def _dump(value: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(value, f, indent=2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ifdd_jax.analysis.issm_diagnostics", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--workdir", required=True, help="a training run's folder")
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument(
        "--max_clips", type=int, default=None, help="clips measured (default: the whole split)"
    )
    parser.add_argument("--out", default=None, help="the JSON file (default: print only)")
    args = parser.parse_args(argv)
    return run_command(lambda: _write(args.workdir, args.out, args.split, args.max_clips))


if __name__ == "__main__":
    from ifdd_jax import compile_cache

    compile_cache.enable()  # a rerun on the same run does not compile the model again
    sys.exit(main())
