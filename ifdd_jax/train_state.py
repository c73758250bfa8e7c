"""The model's state and the ways to get one: fresh, restored for inference, or from converted
weights.

`TrainState` is what the train step updates and a checkpoint's "state" item holds (parameters,
BatchNorm statistics, optimizer state, step, RNG). Training builds it with `create_state`;
evaluation, prediction and the analysis tools only need the model's variables and restore them
with `restore_variables`, which reads the parameters and batch statistics of a checkpoint and
neither builds nor reads an optimizer state. `load_initial_weights` fills a fresh state with
converted weights (`config.init_from`, ifdd_jax.convert).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from ifdd_jax import checkpointing, convert, sharding
from ifdd_jax.models import build_model


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 []
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array  # uint32 key data of the run's base key
    nonfinite_step: jax.Array  # int32 []: the first step with a non-finite loss/gradient, or -1

    def variables(self) -> dict:
        return {"params": self.params, "batch_stats": self.batch_stats}


def compute_dtype(config: ml_collections.ConfigDict) -> jnp.dtype:
    names = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
    if config.compute_dtype not in names:
        raise ValueError(
            f"compute_dtype must be one of {sorted(names)}, got {config.compute_dtype!r}"
        )
    return names[config.compute_dtype]


def init_variables(model, config: ml_collections.ConfigDict, rngs: dict) -> dict:
    """{"params", "batch_stats"} of `model` initialised on one zero clip of the config's size
    (traceable: run it under jit or eval_shape)."""
    size = config.data.image_size
    clips = jnp.zeros((1, config.data.num_frames, size, size, 3), jnp.float32)
    variables = model.init(rngs, clips, train=False)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def init_state(
    model, tx: optax.GradientTransformation, config: ml_collections.ConfigDict, rng: jax.Array
) -> TrainState:
    """Initial TrainState (traceable: run it under jit or eval_shape)."""
    init_rng, dropout_rng, run_rng = jax.random.split(rng, 3)
    variables = init_variables(model, config, {"params": init_rng, "dropout": dropout_rng})
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables["batch_stats"],
        opt_state=tx.init(params),
        rng=jax.random.key_data(run_rng),
        nonfinite_step=jnp.full((), -1, jnp.int32),
    )


def create_state(model, tx, config, mesh) -> TrainState:
    """The initial state, built directly replicated on the mesh."""
    rng = jax.random.key(config.seed)
    return jax.jit(
        functools.partial(init_state, model, tx, config), out_shardings=sharding.replicated(mesh)
    )(rng)


def restore_variables(
    model, config: ml_collections.ConfigDict, path: str, mesh
) -> tuple[dict, int, str]:
    """(variables, step, checkpoint folder) of the checkpoint at `path` (a run's workdir: its best
    checkpoint, else its latest; a checkpoint folder; or one step folder), replicated on `mesh`.

    Only {"params", "batch_stats"} are read: their shapes come from `model.init` under
    `jax.eval_shape`, and no optimizer state is built. The checkpoint's meta item is checked
    against `config` first (CheckpointMismatchError naming what differs).
    """
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    abstract = jax.eval_shape(functools.partial(init_variables, model, config), rngs)
    manager, step = checkpointing.find_checkpoint(path)
    try:
        variables = checkpointing.restore_variables(
            manager, step, abstract, sharding.replicated(mesh), config
        )
    finally:
        directory = str(manager.directory)
        manager.close()
    return variables, int(step), directory


def _run_state_dict(run_dir: str, mesh) -> dict[str, np.ndarray] | None:
    """A training run (a folder holding config.json) as a flat state dict {"params/a/b": array}
    of its best (else latest) checkpoint; None when `run_dir` is not a run's folder."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        run_config = ml_collections.ConfigDict(json.load(f))
    variables, _, _ = restore_variables(build_model(run_config), run_config, run_dir, mesh)
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
    return {"/".join(keys): np.asarray(leaf) for keys, leaf in flat.items()}


def load_initial_weights(state: TrainState, config: ml_collections.ConfigDict, mesh) -> TrainState:
    """Replaces the initial params/batch_stats with converted weights from `config.init_from` (a
    converted checkpoint, a file ifdd_jax.convert reads, or another training run's folder).

    Fine-tuning into another class count: the classification head (the `logits` layer) does not
    fit and keeps its initialisation, and the log says so; any other misfit is an error."""
    source = config.init_from
    if os.path.isdir(source):
        source = _run_state_dict(source, mesh) or source
    variables, report = convert.load_into(
        {"params": state.params, "batch_stats": state.batch_stats},
        source,
        config.model_name,
        strict=False,
    )
    head = [m for m in report.mismatched if "/logits/" in m[1]]
    rest = dataclasses.replace(report, mismatched=[m for m in report.mismatched if m not in head])
    if not rest.ok:
        raise convert.ConversionError(
            f"{config.init_from} does not fit {config.model_name!r}:\n{rest.errors()}"
        )
    logging.info("Initialised from %s: %s", config.init_from, report)
    for source_key, _, found, wanted in head:
        logging.warning(
            "Classification head re-initialised: %s is %s in %s, %s here (%d classes).",
            source_key,
            found,
            config.init_from,
            wanted,
            config.num_classes,
        )
    variables = jax.device_put(variables, sharding.replicated(mesh))
    return state.replace(params=variables["params"], batch_stats=variables["batch_stats"])
