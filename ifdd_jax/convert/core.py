"""`load_into`: fills an initialised model's variables from a checkpoint and reports every key.

Every target leaf ends in exactly one of: loaded (possibly resized), missing (its source key is
absent), mismatched (wrong shape), or not loaded (the checkpoint family does not cover it, e.g.
IFDD's pyramid when starting from an ImageNet/Kinetics backbone). Every source key ends in exactly
one of: used, skipped (known and deliberately unused, with the reason) or unexpected. With
`strict`, any missing, mismatched or unexpected key raises `ConversionError` naming the keys; the
"not loaded" leaves are always listed by name in the report, never silently kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.core import meta, unfreeze

from ifdd_jax.convert import families
from ifdd_jax.convert.sources import StateDict, read_state_dict, unwrap
from ifdd_jax.models.mvit import linear_resize_matrix


class ConversionError(ValueError):
    """A checkpoint that does not fit the model (the message names every offending key)."""


@dataclasses.dataclass
class ConversionReport:
    family: str
    model_name: str
    loaded: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (source, target)
    resized: list[tuple[str, str, tuple, tuple]] = dataclasses.field(default_factory=list)
    missing: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (target, source)
    mismatched: list[tuple[str, str, tuple, tuple]] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (source, reason)
    not_loaded: list[str] = dataclasses.field(default_factory=list)  # targets kept at init
    block_remap: dict[int, int] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.mismatched or self.unexpected)

    def errors(self) -> str:
        lines = []
        if self.missing:
            lines.append(f"{len(self.missing)} missing key(s) (target <- expected source key):")
            lines += [f"  {t} <- {s}" for t, s in self.missing]
        if self.mismatched:
            lines.append(f"{len(self.mismatched)} wrong-shaped key(s):")
            lines += [
                f"  {s} {list(ss)} -> {t} expects {list(ts)}" for s, t, ss, ts in self.mismatched
            ]
        if self.unexpected:
            lines.append(f"{len(self.unexpected)} unexpected source key(s):")
            lines += [f"  {s}" for s in self.unexpected]
        return "\n".join(lines)

    def format(self) -> str:
        lines = [
            f"checkpoint family: {self.family}; model: {self.model_name}",
            f"loaded: {len(self.loaded)} tensors ({len(self.resized)} resized)",
        ]
        if self.block_remap and any(k != v for k, v in self.block_remap.items()):
            pairs = ", ".join(f"{v}->{k}" for k, v in sorted(self.block_remap.items()) if k != v)
            lines.append(f"MViT blocks remapped (source->target): {pairs}")
        for s, t, old, new in self.resized:
            lines.append(f"  resized {s} {list(old)} -> {t} {list(new)}")
        if self.not_loaded:
            lines.append(
                f"not loaded (kept at initialisation, no counterpart in a {self.family} "
                f"checkpoint): {len(self.not_loaded)}"
            )
            lines += [f"  {t}" for t in self.not_loaded]
        if self.skipped:
            by_reason: dict[str, list[str]] = {}
            for s, reason in self.skipped:
                by_reason.setdefault(reason, []).append(s)
            lines.append(f"skipped source keys: {len(self.skipped)}")
            for reason, keys in by_reason.items():
                lines.append(f"  {reason} ({len(keys)}): {', '.join(keys)}")
        errors = self.errors()
        lines.append(errors if errors else "no missing, wrong-shaped or unexpected keys")
        return "\n".join(lines)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        path = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flatten(v, path))
        else:
            out[path] = v
    return out


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, v in flat.items():
        node = out
        parts = path.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return out


def transform(value: np.ndarray, kind: str) -> np.ndarray:
    """PyTorch layout -> Flax layout."""
    if kind == "linear":
        if value.ndim != 2:
            raise ValueError(f"a Linear weight must be 2-D, got shape {value.shape}")
        return value.T
    if kind == "conv":
        if value.ndim < 3:
            raise ValueError(f"a convolution weight must be at least 3-D, got shape {value.shape}")
        return np.transpose(value, tuple(range(2, value.ndim)) + (1, 0))
    return value


def _fit(value: np.ndarray, shape: tuple, kind: str) -> tuple[np.ndarray | None, bool]:
    """`value` in the target `shape`, or None; the flag says whether it was resized."""
    if value.shape == tuple(shape):
        return value, False
    squeezed = tuple(d for d in value.shape if d != 1)
    if value.size == int(np.prod(shape)) and squeezed == tuple(d for d in shape if d != 1):
        return value.reshape(shape), False  # e.g. PySlowFast's cls_token [1, 1, C] -> [C]
    if kind == "rel_pos" and value.ndim == 2 and len(shape) == 2 and value.shape[1] == shape[1]:
        # The table was sized for another input: stretch it as torchvision does at run time.
        m = linear_resize_matrix(value.shape[0], shape[0])
        return (m @ value.astype(np.float64)).astype(value.dtype), True
    return None, False


def _resolver(
    family: str, names: dict[str, str], target: dict[str, Any]
) -> tuple[families.Resolver, dict[int, int], list[int]]:
    remap: dict[int, int] = {}
    unused: list[int] = []
    if family == "torchvision_mobilenet_v2":
        return families.mobilenet_resolver, remap, unused
    if family == "flax":
        return families.flax_resolver, remap, unused
    remap, unused = families.mvit_block_remap(list(names), list(target))
    resolve = families.ifdd_resolver(remap) if family == "ifdd" else families.mvit_resolver(remap)
    return resolve, remap, unused


# long: one pass that resolves, checks and reports every key; the report names each misfit
def load_into(
    variables: Mapping[str, Any],
    source: str | Mapping[str, Any],
    model_name: str,
    *,
    strict: bool = True,
) -> tuple[dict[str, Any], ConversionReport]:
    """Fills `variables` (the {"params", "batch_stats"} tree of an initialised `model_name`)
    from `source` (a checkpoint path, see sources.py, or an already-read state dict).

    Returns the new variables (same structure and dtypes) and the report. Raises ConversionError
    when `strict` and a key is missing, wrong-shaped or unexpected.
    """
    state: StateDict = (
        read_state_dict(source) if isinstance(source, str) else unwrap(source, "state dict")
    )
    family = families.detect_family(list(state))
    allowed = families.MODEL_FAMILIES.get(model_name)
    if allowed is None:
        raise ConversionError(
            f"no converter for model {model_name!r}; supported: {sorted(families.MODEL_FAMILIES)}"
        )
    if family not in allowed:
        raise ConversionError(
            f"a {family} checkpoint cannot initialise {model_name!r} "
            f"(accepted: {', '.join(allowed)})"
        )
    names = families.canonical_names(family, list(state))  # canonical -> original key
    target = _flatten(unfreeze(meta.unbox(variables)))
    report = ConversionReport(family=family, model_name=model_name)
    resolve, remap, unused_blocks = _resolver(family, names, target)
    report.block_remap = dict(remap)

    # The paper flavor's trunk ends at stage 2 (384 wide): a checkpoint's final LayerNorm of the
    # 768-wide stage 3 has no counterpart there, so the target's norm stays at its initialisation.
    src_norm = names.get("norm.weight")
    tgt_norm = target.get("params/trunk/norm/scale")
    drop_final_norm = family != "flax" and (
        src_norm is not None
        and tgt_norm is not None
        and state[src_norm].shape != tuple(np.shape(tgt_norm))
    )

    used = set()
    new_flat: dict[str, Any] = {}
    for path, leaf in target.items():
        shape = tuple(np.shape(leaf))
        found = resolve(path, len(shape))
        if found is not None and drop_final_norm and path.startswith("params/trunk/norm/"):
            found = None
        if found is None:
            report.not_loaded.append(path)
            new_flat[path] = leaf
            continue
        original = names.get(found.key)
        if original is None:
            report.missing.append((path, found.key))
            new_flat[path] = leaf
            continue
        used.add(original)
        try:
            value = transform(state[original], found.kind)
            fitted, resized = _fit(value, shape, found.kind)
        except ValueError:  # e.g. a 1-D tensor where a Linear weight belongs
            fitted, resized = None, False
        if fitted is None:
            report.mismatched.append((original, path, tuple(state[original].shape), shape))
            new_flat[path] = leaf
            continue
        if resized:
            report.resized.append((original, path, value.shape, shape))
        report.loaded.append((original, path))
        new_flat[path] = jnp.asarray(fitted, dtype=leaf.dtype if hasattr(leaf, "dtype") else None)

    for canonical, original in names.items():
        if original in used:
            continue
        reason = families.skip_reason(family, canonical, unused_blocks, model_name)
        if reason is None:
            report.unexpected.append(original)
        else:
            report.skipped.append((original, reason))

    if strict and not report.ok:
        raise ConversionError(
            f"checkpoint does not fit {model_name!r} ({family}):\n{report.errors()}"
        )
    return _unflatten(new_flat), report


def abstract_leaves_to_zeros(tree: Any) -> Any:
    """Concrete zeros for `jax.eval_shape` leaves (useful to check a mapping without an init)."""
    return jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), tree)
