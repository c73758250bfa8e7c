"""The ISSM and LADM of a config, shared by every IFDD network (models/ifdd_2dcnn.py,
models/ifdd_3dvit.py).

Each builder reads its fields from `config.model` (their defaults and meaning are in
ifdd_jax/config_lib.py, `base_config`); the fields whose default depends on the trunk are read
through `config_lib.model_setting`. Keyword `overrides` replace single module fields (an ablation
constructor fixing the ISSM variant, a test shrinking a size).
"""

from __future__ import annotations

import ml_collections

from ifdd_jax.config_lib import model_setting
from ifdd_jax.models.issm import ISSM
from ifdd_jax.models.ladm import LADM


def issm(config: ml_collections.ConfigDict, trunk: str, **overrides) -> ISSM:
    """ISSM for a network on `trunk` ("mobilenet_v2" or "mvit": it decides D_c's default)."""
    m = config.model
    kwargs = dict(
        variant=m.issm,
        flavor=config.flavor,
        init_index=m.issm_init,
        index_range=m.issm_range,
        offset_input=m.get("issm_offset_input", "vec_a"),
        similarity_dim=m.similarity_dim,
        channel_compression=model_setting(config, "channel_compression", trunk),
    )
    kwargs.update(overrides)
    return ISSM(**kwargs)


# What a saved run's config without the field (written before it existed) was trained with:
# ladm_mlp and ladm_norm came in with the paper flavor's reading of Eq. 7 and of the appendix's
# LayerNorm; before that the paper flavor had GELU(Linear) and no norm, the reference the same
# modules as now.
_LEGACY_LADM = dict(
    paper=dict(ladm_mlp="linear_gelu", ladm_norm="none"),
    reference=dict(ladm_mlp="linear", ladm_norm="input"),
)


def ladm(config: ml_collections.ConfigDict, **overrides) -> LADM:
    m = config.model
    legacy = _LEGACY_LADM.get(config.flavor, {})
    kwargs = dict(
        variant=m.ladm,
        flavor=config.flavor,
        num_heads=m.ladm_heads,
        drop_path=m.drop_path,
        # None (a field left unset) takes the flavor's default; an absent field, the old modules.
        mlp=m.get("ladm_mlp", legacy.get("ladm_mlp")),
        norm=m.get("ladm_norm", legacy.get("ladm_norm")),
    )
    kwargs.update(overrides)
    return LADM(**kwargs)
