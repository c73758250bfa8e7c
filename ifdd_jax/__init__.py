"""ifdd_jax: IFDD (Implicit Facial Dynamics Disentanglement) for dynamic facial expression
recognition, in JAX/Flax."""

__version__ = "0.1.0"
