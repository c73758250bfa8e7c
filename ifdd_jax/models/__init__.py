"""IFDD models: trunks, pyramid, ISSM, LADM, the full networks, their losses and the registry."""

from ifdd_jax.models.registry import MODELS, build_model, register

__all__ = ["MODELS", "build_model", "register"]
