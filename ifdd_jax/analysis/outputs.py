"""A trained model's outputs over a run's evaluation split, plus the input of the last Linear.

`split_outputs` runs the model (eval mode) on every clip of a split as evaluation reads it
(`input_pipeline.build_data`, the clip's V views through `views.apply_views`) and returns numpy
arrays of the requested outputs, averaged over views where they are features and taken from the
first view where they are positions (ISSM indices). `head_input` captures the vector the
classifier's last Linear reads, so a baseline with an MLP head and IFDD are compared at the same
place.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np

from ifdd_jax import input_pipeline
from ifdd_jax.trained_run import TrainedModel
from ifdd_jax.views import apply_views

HEAD_INPUT = "head_input"  # pseudo-output: the input of the head's last Linear ("logits")
# Outputs that are positions, not features: averaging them over views would mean nothing.
_POSITIONS = ("static_index", "dynamic_index")


def apply_with_head_input(model: nn.Module, variables: dict, clips: jax.Array) -> dict:
    """The model's outputs on clips [N, T, S, S, 3] (eval mode) plus HEAD_INPUT [N, D]: the
    features before the last Linear (after the hidden layer of an MLP head)."""
    captured = {}

    def capture(next_fun, args, kwargs, context):
        module = context.module
        if (
            context.method_name == "__call__"
            and isinstance(module, nn.Dense)
            and module.name == "logits"
        ):
            captured[HEAD_INPUT] = args[0]
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(capture):
        outputs = dict(model.apply(variables, clips, train=False))
    if HEAD_INPUT not in captured:
        raise ValueError(f"{type(model).__name__}: no Dense layer named 'logits' in the head")
    outputs[HEAD_INPUT] = captured[HEAD_INPUT]
    return outputs


@functools.partial(jax.jit, static_argnames=("model", "keys"))
def _outputs(variables: dict, clips: jax.Array, *, model: nn.Module, keys: tuple) -> dict:
    """clips [B, V, T, S, S, 3] -> {key: [B, ...]} (views averaged, or the first view for
    positions)."""
    outputs = apply_views(lambda x: apply_with_head_input(model, variables, x), clips)
    result = {}
    for key in keys:
        if key not in outputs:
            raise ValueError(
                f"{type(model).__name__} has no output {key!r} "
                f"(it returns {', '.join(sorted(outputs))})"
            )
        value = outputs[key]  # [B, V, ...]
        result[key] = value[:, 0] if key in _POSITIONS else value.mean(axis=1)
    return result


def split_outputs(
    trained: TrainedModel,
    workdir: str,
    keys: Sequence[str],
    *,
    split: str = "test",
    max_clips: int | None = None,
) -> dict[str, np.ndarray]:
    """{key: [N, ...]} for the first `max_clips` clips of `split`, plus "label" [N] and
    "clip_id" [N]. `keys` are model outputs or HEAD_INPUT."""
    data = input_pipeline.build_data(trained.config, workdir)
    collected: dict[str, list] = {key: [] for key in (*keys, "label", "clip_id")}
    total = 0
    for batch in data.make_eval_iter(split):
        keep = np.asarray(batch["mask"], bool)
        outputs = jax.device_get(
            _outputs(
                trained.variables, np.asarray(batch["clips"]), model=trained.model, keys=tuple(keys)
            )
        )
        for key in keys:
            collected[key].append(np.asarray(outputs[key])[keep])
        collected["label"].append(np.asarray(batch["label"])[keep])
        ids = batch.get("clip_id", np.array([""] * len(keep)))
        collected["clip_id"].append(
            np.asarray([i.decode() if isinstance(i, bytes) else str(i) for i in ids])[keep]
        )
        total += int(keep.sum())
        if max_clips is not None and total >= max_clips:
            break
    if total == 0:
        raise ValueError(f"{workdir}: the {split} split has no clips")
    result = {key: np.concatenate(parts) for key, parts in collected.items()}
    if max_clips is not None:
        result = {key: value[:max_clips] for key, value in result.items()}
    return result
