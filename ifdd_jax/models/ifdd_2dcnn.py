"""IFDD-2DCNN (MobileNetV2 trunk), its "ISSM only" / "LADM only" ablations and the vanilla
MobileNetV2 baseline: constructors for the model registry.

IFDD-2DCNN: the trunk gives three per-frame pyramid levels (see mobilenet_v2.py for the widths
and strides the paper leaves open), the pyramid fuses them into X at T/2 × H/16 × W/16 × C_S
(C_S = config.model.features, 64 by default), then ISSM, LADM and a Dropout -> Linear head. The
baseline runs MobileNetV2 groups 1-6 per frame, averages over time and space and classifies with
an MLP 160 -> 1280 -> classes.
"""

from __future__ import annotations

import flax.linen as nn
import ml_collections

from ifdd_jax.config_lib import model_setting
from ifdd_jax.models import builders
from ifdd_jax.models.ifdd import IFDD, Baseline
from ifdd_jax.models.mobilenet_v2 import IFDD2DTrunk, MobileNetV2FrameTrunk
from ifdd_jax.models.pyramid import PyramidAggregation

TRUNK = "mobilenet_v2"  # the trunk family of config_lib.TRUNK_DEFAULTS
BASELINE_HIDDEN = 1280  # the baseline MLP's hidden width (MobileNetV2's last 1×1 conv)


def ifdd_2dcnn(
    config: ml_collections.ConfigDict, *, issm: str | None = None, ladm: str | None = None
) -> nn.Module:
    """IFDD-2DCNN; `issm` / `ladm` fix the ISSM or LADM variant (the ablation constructors)."""
    issm_kw = {} if issm is None else dict(variant=issm)
    ladm_kw = {} if ladm is None else dict(variant=ladm)
    return IFDD(
        trunk=IFDD2DTrunk(
            width_multiplier=config.model.width_multiplier,
            temporal_stride=config.model.get("stem_temporal_stride", 2),
        ),
        pyramid=PyramidAggregation(
            features=model_setting(config, "features", TRUNK),
            pass_through_last=config.flavor == "reference",
        ),
        issm=builders.issm(config, TRUNK, **issm_kw),
        ladm=builders.ladm(config, **ladm_kw),
        num_classes=config.num_classes,
        head_dropout=config.model.head_dropout,
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
        trunk=MobileNetV2FrameTrunk(width_multiplier=config.model.width_multiplier),
        num_classes=config.num_classes,
        head_hidden=BASELINE_HIDDEN,
        head_dropout=config.model.head_dropout,
    )
