"""Key maps from PyTorch checkpoint families onto our Flax parameter paths.

A family is recognised from its key set and answers, for every leaf of the target variables
(`params/...` or `batch_stats/...`), which source key fills it and how (`Source`); leaves it does
not cover stay at their initialisation and are reported as "not loaded". Source keys the family
knows but the target cannot use are "skipped" with a reason; any other leftover key is
"unexpected".

Families:
  * `torchvision_mvit`: torchvision `mvit_v2_s` (`conv_proj`, `pos_encoding.class_token`,
    `blocks.i.attn.pool_q.pool`, ...). Also the backbone of the released IFDD code, which copies it.
  * `slowfast_mvit`: PySlowFast MViTv2 (`patch_embed.proj`, `cls_token`, `attn.proj`,
    `attn.pool_q` + `attn.norm_q`, `mlp.fc1`, `blocks.i.proj`, `head.projection`), renamed to the
    torchvision names first.
  * `ifdd`: the authors' full IFDD-3DViT state dict (`embed.conv_proj`, `backbone.backbone.*`,
    `backbone.PANLayer.0`, `backbone.CatConv`, `backbone.WaveLifts.*`, `head.head.1`).
  * `torchvision_mobilenet_v2`: torchvision `mobilenet_v2` (`features.i...`, `classifier.1`).
  * `flax`: a converter output (keys are already our paths).

MViT block remapping: when the target has fewer blocks than the source, blocks are matched stage by
stage, each target stage taking the first blocks of the same source stage. For MViTv2-S (16 blocks,
[1, 2, 11, 2]) onto the released 10-block backbone ([1, 2, 5, 2]) that is blocks 0-7 -> 0-7,
14 -> 8, 15 -> 9, the rule of the released `load_pretrain`; blocks 8-13 are skipped by name.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence

from ifdd_jax.models.mobilenet_v2 import MOBILENET_V2_GROUPS


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a target leaf comes from: a source key and the layout change.

    kind: "linear" (PyTorch (out, in) -> (in, out)), "conv" ((O, I, *k) -> (*k, I, O)), "copy", or
    "rel_pos" (copied, or linearly resized along its rows when the table length differs).
    """

    key: str
    kind: str = "copy"


Resolver = Callable[[str], Source | None]

BN_SKIP_REASON = "BatchNorm step counter (Flax keeps no counter)"


def leaf_source(module: str, leaf: str, ndim: int) -> Source | None:
    """The standard leaves of Dense/Conv/LayerNorm/BatchNorm modules."""
    if leaf == "kernel":
        return Source(f"{module}.weight", "linear" if ndim == 2 else "conv")
    if leaf == "scale":
        return Source(f"{module}.weight")
    if leaf == "bias":
        return Source(f"{module}.bias")
    if leaf == "mean":
        return Source(f"{module}.running_mean")
    if leaf == "var":
        return Source(f"{module}.running_var")
    return None


# ---------------------------------------------------------------------------------------------
# Detection and renaming.


def detect_family(keys: Sequence[str]) -> str:
    keyset = set(keys)
    if any(k.startswith("params/") for k in keyset):
        return "flax"
    released = "embed.conv_proj.weight" in keyset
    if released or any(k.startswith("backbone.backbone.") for k in keyset):
        return "ifdd"
    if "conv_proj.weight" in keyset and "pos_encoding.class_token" in keyset:
        return "torchvision_mvit"
    if "patch_embed.proj.weight" in keyset and "cls_token" in keyset:
        return "slowfast_mvit"
    if "features.0.0.weight" in keyset:
        return "torchvision_mobilenet_v2"
    sample = ", ".join(sorted(keyset)[:8])
    raise ValueError(
        "cannot recognise the checkpoint: expected torchvision mvit_v2_s / mobilenet_v2, "
        "PySlowFast MViTv2, the authors' IFDD state dict or a converter output; "
        f"keys start {sample}"
    )


_SLOWFAST_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^patch_embed\.proj\.", "conv_proj."),
    (r"^cls_token$", "pos_encoding.class_token"),
    (r"^(blocks\.\d+\.attn)\.proj\.", r"\1.project.0."),
    (r"^(blocks\.\d+\.attn)\.pool_([qkv])\.weight$", r"\1.pool_\2.pool.weight"),
    (r"^(blocks\.\d+\.attn)\.norm_([qkv])\.", r"\1.pool_\2.norm_act.0."),
    (r"^(blocks\.\d+)\.mlp\.fc1\.", r"\1.mlp.0."),
    (r"^(blocks\.\d+)\.mlp\.fc2\.", r"\1.mlp.3."),
    (r"^(blocks\.\d+)\.proj\.", r"\1.project."),
    (r"^head\.projection\.", "head.1."),
)


def canonical_names(family: str, keys: Sequence[str]) -> dict[str, str]:
    """`{canonical name: original key}`: PySlowFast keys get torchvision's names and the authors'
    backbone keys lose their `backbone.backbone.` / `embed.` prefixes."""
    out: dict[str, str] = {}
    for key in keys:
        name = key
        if family == "slowfast_mvit":
            for pattern, repl in _SLOWFAST_RENAMES:
                name = re.sub(pattern, repl, name)
        elif family == "ifdd":
            if name.startswith("backbone.backbone."):
                name = name[len("backbone.backbone.") :]
            elif name.startswith("embed."):
                name = name[len("embed.") :]
        out[name] = key
    return out


# ---------------------------------------------------------------------------------------------
# MViT.


def _block_ids(names: Sequence[str], pattern: str) -> list[int]:
    ids = {int(m.group(1)) for n in names if (m := re.match(pattern, n))}
    return sorted(ids)


def _stages(num_blocks: int, widening: Sequence[int]) -> list[list[int]]:
    """Blocks grouped by stage; a stage opens at every block that widens (has a projection)."""
    stages: list[list[int]] = [[]]
    for i in range(num_blocks):
        if i in widening and i > 0:
            stages.append([])
        stages[-1].append(i)
    return stages


def mvit_block_remap(
    source_names: Sequence[str], target_paths: Sequence[str]
) -> tuple[dict[int, int], list[int]]:
    """Target block -> source block, matched stage by stage (see the module docstring), and the
    source blocks left unused."""
    src_blocks = _block_ids(source_names, r"^blocks\.(\d+)\.")
    tgt_blocks = _block_ids(target_paths, r"^params/trunk/blocks_(\d+)/")
    src_wide = _block_ids(source_names, r"^blocks\.(\d+)\.project\.weight$")
    tgt_wide = _block_ids(target_paths, r"^params/trunk/blocks_(\d+)/project/kernel$")
    if src_blocks != list(range(len(src_blocks))):
        raise ValueError(f"source MViT blocks are not numbered 0..n-1: {src_blocks}")
    src_stages = _stages(len(src_blocks), src_wide)
    tgt_stages = _stages(len(tgt_blocks), tgt_wide)
    if len(tgt_stages) > len(src_stages):
        raise ValueError(
            f"the target MViT has {len(tgt_stages)} stages but the checkpoint only "
            f"{len(src_stages)} (blocks {len(src_blocks)})"
        )
    remap: dict[int, int] = {}
    for tgt_stage, src_stage in zip(tgt_stages, src_stages):
        if len(tgt_stage) > len(src_stage):
            raise ValueError(
                f"target MViT stage with blocks {tgt_stage} is deeper than the checkpoint's stage "
                f"with blocks {src_stage}"
            )
        remap.update(zip(tgt_stage, src_stage))
    unused = sorted(set(src_blocks) - set(remap.values()))
    return remap, unused


_MVIT_BLOCK_MODULES = {
    "norm1": "norm1",
    "norm2": "norm2",
    "project": "project",
    "mlp_fc1": "mlp.0",
    "mlp_fc2": "mlp.3",
    "attn/qkv": "attn.qkv",
    "attn/project": "attn.project.0",
}


def mvit_resolver(remap: Mapping[int, int], prefix: str = "params/trunk/") -> Resolver:
    """Target `params/trunk/...` leaves -> torchvision MViT keys."""

    def resolve(path: str, ndim: int = 2) -> Source | None:
        if not path.startswith(prefix):
            return None
        parts = path[len(prefix) :].split("/")
        if parts == ["class_token"]:
            return Source("pos_encoding.class_token")
        if parts[0] in ("conv_proj", "norm") and len(parts) == 2:
            return leaf_source(parts[0], parts[1], ndim)
        m = re.fullmatch(r"blocks_(\d+)", parts[0])
        if not m or int(m.group(1)) not in remap:
            return None
        block = f"blocks.{remap[int(m.group(1))]}"
        module, leaf = "/".join(parts[1:-1]), parts[-1]
        if module == "attn" and leaf.startswith("rel_pos_"):
            return Source(f"{block}.attn.{leaf}", "rel_pos")
        pool = re.fullmatch(r"attn/pool_([qkv])/(pool|norm)", module)
        if pool:
            name = "pool" if pool.group(2) == "pool" else "norm_act.0"
            return leaf_source(f"{block}.attn.pool_{pool.group(1)}.{name}", leaf, ndim)
        if module in _MVIT_BLOCK_MODULES:
            return leaf_source(f"{block}.{_MVIT_BLOCK_MODULES[module]}", leaf, ndim)
        return None

    return resolve


# ---------------------------------------------------------------------------------------------
# The authors' IFDD-3DViT (WaveSF_trans_CLS, MFViT_FPN, headNet).

_WAVE = "backbone.WaveLifts."
_IFDD_MODULES = {
    "pyramid/level0_conv": "backbone.PANLayer.0",
    "pyramid/cat_conv": "backbone.CatConv",
    "issm/dim_project": _WAVE + "adapt_split.dim_project.0",
    "issm/static_offset": _WAVE + "adapt_split.offset_project_approx.0",
    "issm/dynamic_offset": _WAVE + "adapt_split.offset_project_detail.0",
    "ladm/static_norm": _WAVE + "xa_norm",
    "ladm/dynamic_norm": _WAVE + "xd_norm",
    "ladm/updater/q": _WAVE + "q_a",
    "ladm/updater/kv": _WAVE + "kv_d",
    "ladm/updater/project": _WAVE + "project_a.0",
    "ladm/predictor/q": _WAVE + "q_d",
    "ladm/predictor/kv": _WAVE + "kv_a",
    "ladm/predictor/project": _WAVE + "project_d.0",
    "ladm/refiner/norm1": _WAVE + "out_norm1",
    "ladm/refiner/qkv": _WAVE + "qkv",
    "ladm/refiner/proj": _WAVE + "project.0",
    "ladm/refiner/norm2": _WAVE + "out_norm2",
    "ladm/refiner/mlp_fc1": _WAVE + "mlp.0",
    "ladm/refiner/mlp_fc2": _WAVE + "mlp.3",
    "head/logits": "head.head.1",
}
_IFDD_LEAVES = {
    "issm/time_project/layer0_kernel": Source(
        _WAVE + "adapt_split.time_project.0.weight", "linear"
    ),
    "issm/time_project/layer0_bias": Source(_WAVE + "adapt_split.time_project.0.bias"),
    "issm/time_project/layer2_kernel": Source(
        _WAVE + "adapt_split.time_project.2.weight", "linear"
    ),
    "issm/time_project/layer2_bias": Source(_WAVE + "adapt_split.time_project.2.bias"),
    "ladm/positions/spatial_pos": Source(_WAVE + "spatial_pos"),
    "ladm/positions/temporal_pos": Source(_WAVE + "temporal_pos"),
    "ladm/positions/class_pos": Source(_WAVE + "class_pos"),
    "ladm/project_compress": Source(_WAVE + "project_compress.weight", "linear"),
}


def ifdd_resolver(remap: Mapping[int, int]) -> Resolver:
    trunk = mvit_resolver(remap)

    def resolve(path: str, ndim: int = 2) -> Source | None:
        found = trunk(path, ndim)
        if found is not None or path.startswith("params/trunk/"):
            return found
        if not path.startswith("params/"):
            return None
        rest = path[len("params/") :]
        if rest in _IFDD_LEAVES:
            return _IFDD_LEAVES[rest]
        module, _, leaf = rest.rpartition("/")
        if module in _IFDD_MODULES:
            return leaf_source(_IFDD_MODULES[module], leaf, ndim)
        return None

    return resolve


# ---------------------------------------------------------------------------------------------
# MobileNetV2.


def mobilenet_feature_index(group: int, block: int) -> int:
    """torchvision's `features` index of bottleneck `block` of group `group` (1-based groups)."""
    if not 1 <= group <= len(MOBILENET_V2_GROUPS):
        raise ValueError(f"MobileNetV2 has groups 1-{len(MOBILENET_V2_GROUPS)}, got {group}")
    return 1 + sum(n for _, _, n, _ in MOBILENET_V2_GROUPS[: group - 1]) + block


def mobilenet_resolver(path: str, ndim: int = 2) -> Source | None:
    """Target `{params,batch_stats}/trunk/...` leaves -> torchvision mobilenet_v2 keys."""
    m = re.fullmatch(r"(?:params|batch_stats)/trunk/stem/(conv|bn)/(\w+)", path)
    if m:
        return leaf_source("features.0." + ("0" if m.group(1) == "conv" else "1"), m.group(2), ndim)
    m = re.fullmatch(
        r"(?:params|batch_stats)/trunk/groups/group(\d+)_block(\d+)/"
        r"(expand|depthwise|project)/(conv|bn)/(\w+)",
        path,
    )
    if not m:
        return None
    group, block = int(m.group(1)), int(m.group(2))
    part, layer, leaf = m.group(3), m.group(4), m.group(5)
    idx = mobilenet_feature_index(group, block)
    is_bn = layer == "bn"
    if MOBILENET_V2_GROUPS[group - 1][0] == 1:
        # No expansion: conv.0 is the depthwise (conv, BN), conv.1 / conv.2 the projection.
        name = {
            "depthwise": "conv.0." + ("1" if is_bn else "0"),
            "project": "conv." + ("2" if is_bn else "1"),
        }
    else:
        name = {
            "expand": "conv.0." + ("1" if is_bn else "0"),
            "depthwise": "conv.1." + ("1" if is_bn else "0"),
            "project": "conv." + ("3" if is_bn else "2"),
        }
    if part not in name:
        return None
    return leaf_source(f"features.{idx}.{name[part]}", leaf, ndim)


def flax_resolver(path: str, ndim: int = 2) -> Source | None:
    return Source(path)


# ---------------------------------------------------------------------------------------------
# Reasons for known, unusable source keys.


def skip_reason(
    family: str, name: str, unused_blocks: Sequence[int], model_name: str
) -> str | None:
    """Why a source key the target does not take is fine to leave out (None: it is unexpected)."""
    if name.endswith(".num_batches_tracked"):
        return BN_SKIP_REASON
    if family in ("torchvision_mvit", "slowfast_mvit", "ifdd"):
        m = re.match(r"blocks\.(\d+)\.", name)
        if m and int(m.group(1)) in unused_blocks:
            return "MViT block without a counterpart in the shallower target (stage-wise remap)"
        if family != "ifdd" and name.startswith("head."):
            return "classifier of the pretraining task"
        if re.fullmatch(r"norm\.(weight|bias)", name):
            return "final LayerNorm of a wider last stage than the target keeps"
        if name == "pos_encoding.class_token":
            return "class token: the target trunk has none (IFDD-3DViT's paper flavor removes it)"
        if family == "ifdd":
            if re.search(r"adapt_split\.index_(even|odd)$", name):
                return "constant index buffer (ISSM recomputes the initial indices)"
            if name.startswith("head.") and model_name == "baseline_mvit":
                return "IFDD's head reads the LADM feature, not pooled tokens"
            if model_name == "baseline_mvit" and name.startswith("backbone."):
                return "IFDD's pyramid/ISSM/LADM have no counterpart in the baseline"
    if family == "torchvision_mobilenet_v2" and re.match(r"(features\.\d+|classifier)\.", name):
        if name.startswith("features.0.") and model_name.startswith("ifdd_2dcnn"):
            return "torchvision's 2D stem has no counterpart in IFDD-2DCNN's Conv3d stem"
        return "MobileNetV2 layer the target does not use"
    return None


MODEL_FAMILIES = {
    "ifdd_3dvit": ("ifdd", "torchvision_mvit", "slowfast_mvit", "flax"),
    "baseline_mvit": ("ifdd", "torchvision_mvit", "slowfast_mvit", "flax"),
    "ifdd_2dcnn": ("torchvision_mobilenet_v2", "flax"),
    "ifdd_2dcnn_issm_only": ("torchvision_mobilenet_v2", "flax"),
    "ifdd_2dcnn_ladm_only": ("torchvision_mobilenet_v2", "flax"),
    "baseline_mobilenet_v2": ("torchvision_mobilenet_v2", "flax"),
}
