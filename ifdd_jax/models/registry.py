"""Model registry: a model name (config.model_name) -> the constructor that builds it from the
config. The constructors live beside their networks (models/ifdd_2dcnn.py, models/ifdd_3dvit.py)
and read the config fields that base_config (ifdd_jax/config_lib.py) defines and documents;
the named ablations of the paper's tables are config overrides (config_lib.ABLATIONS).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import ml_collections

from ifdd_jax.models.ifdd_2dcnn import (
    baseline_mobilenet_v2,
    ifdd_2dcnn,
    ifdd_2dcnn_issm_only,
    ifdd_2dcnn_ladm_only,
)
from ifdd_jax.models.ifdd_3dvit import baseline_mvit, ifdd_3dvit
from ifdd_jax.models.layers import check_flavor

ModelFn = Callable[[ml_collections.ConfigDict], nn.Module]

MODELS: dict[str, ModelFn] = {
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
