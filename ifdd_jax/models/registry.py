"""Model registry: a model name (config.model_name) -> a constructor taking the config.

The constructors read:
  config.model_name, config.flavor ("paper" | "reference"), config.num_classes and the section
  config.model: issm, issm_init, issm_range, ladm, ladm_heads, drop_path, head_dropout, features,
  similarity_dim, channel_compression (see configs/common.py for the defaults and their meaning).

`ABLATIONS` names every ablation of the paper's tables as overrides of config.model / config.loss,
so a table row is `model=ifdd_2dcnn` plus one entry.
"""

from __future__ import annotations

from typing import Callable, Dict

import flax.linen as nn
import ml_collections

from ifdd_jax.models.ifdd import IFDD, Baseline
from ifdd_jax.models.ifdd_3dvit import baseline_mvit, ifdd_3dvit
from ifdd_jax.models.issm import ISSM
from ifdd_jax.models.ladm import LADM
from ifdd_jax.models.layers import check_flavor
from ifdd_jax.models.mobilenet_v2 import IFDD2DTrunk, MobileNetV2FrameTrunk
from ifdd_jax.models.pyramid import PyramidAggregation

ModelFn = Callable[[ml_collections.ConfigDict], nn.Module]

# Paper rows (Tables 1, 9, 10, 11) as overrides. Keys of "model" go to config.model, of "loss" to
# config.loss.
ABLATIONS: Dict[str, dict] = {
    "issm_fixed_even_odd": dict(model=dict(issm="even_odd")),  # = "LADM only"
    "issm_entire": dict(model=dict(issm="entire")),  # ISSM†
    "issm_weighting": dict(model=dict(issm="weighting")),  # ISSM‡
    "issm_init_midpoint": dict(model=dict(issm_init="midpoint")),
    "issm_range_quarter": dict(model=dict(issm_range="T/4")),  # Table 9's ±T/4 (the released L)
    "ladm_predictor_first": dict(model=dict(ladm="predictor_first")),
    "ladm_cnn": dict(model=dict(ladm="cnn")),
    "ladm_no_mutual": dict(model=dict(ladm="no_mutual")),
    "ladm_none": dict(model=dict(ladm="none")),  # = "ISSM only"
    "lift_loss_thwc": dict(loss=dict(lift="thwc")),
    "lift_loss_off": dict(loss=dict(lift="off")),
}


def _get(section: ml_collections.ConfigDict, key: str, default):
    value = section.get(key, None)
    return default if value is None else value


def _issm(config: ml_collections.ConfigDict, **overrides) -> ISSM:
    m = config.model
    kwargs = dict(
        split=_get(m, "issm", "issm"),
        flavor=config.flavor,
        init_index=_get(m, "issm_init", "even_odd"),
        index_range=_get(m, "issm_range", None),
        similarity_dim=_get(m, "similarity_dim", 128),
        channel_compression=_get(m, "channel_compression", 1),
    )
    kwargs.update(overrides)
    return ISSM(**kwargs)


def _ladm(config: ml_collections.ConfigDict, **overrides) -> LADM:
    m = config.model
    kwargs = dict(
        variant=_get(m, "ladm", "lifting"),
        flavor=config.flavor,
        num_heads=_get(m, "ladm_heads", None),
        drop_path=_get(m, "drop_path", 0.2),
    )
    kwargs.update(overrides)
    return LADM(**kwargs)


def ifdd_2dcnn(config: ml_collections.ConfigDict, *, issm=None, ladm=None) -> nn.Module:
    """IFDD-2DCNN (MobileNetV2 trunk, X at T/2 × H/16 × W/16 × 64; see mobilenet_v2.py)."""
    issm_kw = {} if issm is None else dict(split=issm)
    ladm_kw = {} if ladm is None else dict(variant=ladm)
    return IFDD(
        trunk=IFDD2DTrunk(width_multiplier=_get(config.model, "width_multiplier", 1.0)),
        pyramid=PyramidAggregation(
            features=_get(config.model, "features", 64),
            pass_through_last=config.flavor == "reference",
        ),
        issm=_issm(config, **issm_kw),
        ladm=_ladm(config, **ladm_kw),
        num_classes=config.num_classes,
        head_dropout=_get(config.model, "head_dropout", 0.5),
    )


def ifdd_2dcnn_issm_only(config: ml_collections.ConfigDict) -> nn.Module:
    """Table 1/11 "ISSM only": the learned split without lifting (LADM variant "none")."""
    return ifdd_2dcnn(config, ladm="none")


def ifdd_2dcnn_ladm_only(config: ml_collections.ConfigDict) -> nn.Module:
    """Table 1/11 "LADM only": lifting on the fixed even/odd split."""
    return ifdd_2dcnn(config, issm="even_odd")


def baseline_mobilenet_v2(config: ml_collections.ConfigDict) -> nn.Module:
    """MobileNetV2 groups 1-6 per frame + average pooling + MLP 160 -> 1280 -> classes."""
    return Baseline(
        trunk=MobileNetV2FrameTrunk(width_multiplier=_get(config.model, "width_multiplier", 1.0)),
        num_classes=config.num_classes,
        head_hidden=1280,
        head_dropout=_get(config.model, "head_dropout", 0.5),
    )


MODELS: Dict[str, ModelFn] = {
    "ifdd_2dcnn": ifdd_2dcnn,
    "ifdd_2dcnn_issm_only": ifdd_2dcnn_issm_only,
    "ifdd_2dcnn_ladm_only": ifdd_2dcnn_ladm_only,
    "baseline_mobilenet_v2": baseline_mobilenet_v2,
    "ifdd_3dvit": ifdd_3dvit,
    "baseline_mvit": baseline_mvit,
}


def register(name: str, fn: ModelFn) -> None:
    if name in MODELS:
        raise ValueError(f"model {name!r} is already registered")
    MODELS[name] = fn


def build_model(config: ml_collections.ConfigDict) -> nn.Module:
    """The linen module for `config.model_name`, configured by `config`."""
    check_flavor(config.flavor)
    name = config.model_name
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered models: {sorted(MODELS)}")
    return MODELS[name](config)
