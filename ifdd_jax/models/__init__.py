"""IFDD models: trunks, pyramid, ISSM, LADM, the full networks, their losses and the registry."""

from ifdd_jax.models.registry import ABLATIONS, MODELS, build_model, register

__all__ = ["ABLATIONS", "MODELS", "build_model", "register"]
