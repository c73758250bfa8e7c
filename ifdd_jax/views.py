"""A clip's evaluation views through the model: each clip is V temporal windows
(`config.data.num_eval_views`), and its prediction averages the logits of its views. Used by
evaluation, prediction and the analysis tools, so all three read a clip the same way."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def apply_views(apply: Callable[[jax.Array], dict], clips: jax.Array) -> dict:
    """Runs `apply` (clips [N, T, H, W, 3] -> {name: [N, ...]}) on every view of clips
    [B, V, T, H, W, 3] at once; returns {name: [B, V, ...]}."""
    b, v = clips.shape[:2]
    outputs = apply(clips.reshape((b * v,) + clips.shape[2:]))
    return {k: x.reshape((b, v) + x.shape[1:]) for k, x in outputs.items()}


def view_logits(model, variables: dict, clips: jax.Array, dtype=jnp.float32) -> jax.Array:
    """Clip-level logits [B, K] (float32) of clips [B, V, T, H, W, 3]: the mean over the views of
    each view's logits, the model run in eval mode in `dtype` (parameters cast when not float32)."""
    if dtype != jnp.float32:
        variables = jax.tree.map(lambda p: p.astype(dtype), variables)
    outputs = apply_views(
        lambda x: {"logits": model.apply(variables, x.astype(dtype), train=False)["logits"]},
        clips,
    )
    return outputs["logits"].astype(jnp.float32).mean(axis=1)
