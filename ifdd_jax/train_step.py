"""The jitted train step, in a module of its own: it needs no TensorFlow (the input pipeline,
which train.py also drives, does), so benches on machines without TF time the real step
(bench/vs_released.py) and train.py, tests and bench/train_throughput.py share it.

One step runs over a 1-D device mesh ("data"): the global batch is split across the devices,
parameters and optimizer state are replicated, the state is donated.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from ifdd_jax import device_augment, sharding
from ifdd_jax.metrics import TrainMetrics
from ifdd_jax.models.losses import ifdd_loss
from ifdd_jax.train_state import TrainState, compute_dtype

TRAIN_KEYS = ("clips", "label", "target")
# With config.data.augment_on_device the host sends decoded uint8 clips and labels; the step
# augments, mixes and builds the targets (ifdd_jax/device_augment.py).
DEVICE_AUGMENT_KEYS = ("clips", "label")


def augments_on_device(config: ml_collections.ConfigDict) -> bool:
    """Whether the train step augments (config.data.augment_on_device; absent in old configs)."""
    return bool(config.data.get("augment_on_device", False))


def train_keys(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The keys of the host's train batch that the step reads."""
    return DEVICE_AUGMENT_KEYS if augments_on_device(config) else TRAIN_KEYS


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def train_step(
    state: TrainState,
    batch: dict,
    *,
    model,
    tx: optax.GradientTransformation,
    config: ml_collections.ConfigDict,
) -> tuple[TrainState, TrainMetrics]:
    """One optimisation step on a global batch {clips [B, T, H, W, 3], label [B], target [B, K]},
    or with on-device augmentation {clips uint8 [B, T, S0, S0, 3], label [B]}: the step draws
    the augmentation and mixing from its own key (device_augment.step_key) first."""
    dtype = compute_dtype(config)
    run_rng = jax.random.wrap_key_data(state.rng)
    dropout_rng = jax.random.fold_in(run_rng, state.step)
    if augments_on_device(config):
        clips, target = device_augment.augment_batch(
            device_augment.step_key(run_rng, state.step),
            batch["clips"],
            batch["label"],
            device_augment.options_from_config(config),
        )
    else:
        clips, target = batch["clips"], batch["target"]

    def loss_fn(params):
        cast = jax.tree.map(lambda p: p.astype(dtype), params) if dtype != jnp.float32 else params
        outputs, updates = model.apply(
            {"params": cast, "batch_stats": state.batch_stats},
            clips.astype(dtype),
            train=True,
            rngs={"dropout": dropout_rng},
            mutable=["batch_stats"],
        )
        outputs = jax.tree.map(lambda x: x.astype(jnp.float32), outputs)
        loss, terms = ifdd_loss(
            outputs,
            target,
            lift=config.loss.lift,
            lift_weight=config.loss.lift_weight,
            lift_reduction=config.loss.lift_reduction,
            flavor=config.flavor,
        )
        return loss, (outputs["logits"], updates, terms)

    (loss, (logits, updates, terms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params
    )
    param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, param_updates)
    batch_stats = jax.tree.map(lambda x: x.astype(jnp.float32), updates.get("batch_stats", {}))

    # A non-finite step is never applied; its step number is kept so the host can stop the run.
    # One lax.cond picks the whole new or old state: a jnp.where per leaf gives the same values,
    # but XLA then compiles the selects into every optimizer-update fusion, which more than
    # doubled the compile time (IFDD-3DViT's train step on CPU: 96 s, against 39 s this way).
    finite = jnp.isfinite(loss) & _all_finite(grads)
    params, batch_stats, opt_state = jax.lax.cond(
        finite,
        lambda: (params, batch_stats, opt_state),
        lambda: (state.params, state.batch_stats, state.opt_state),
    )
    new_state = state.replace(
        step=state.step + 1,
        params=params,
        batch_stats=batch_stats,
        opt_state=opt_state,
        nonfinite_step=jnp.where(
            (state.nonfinite_step < 0) & ~finite, state.step, state.nonfinite_step
        ),
    )
    accuracy = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(target, -1))
    metrics = TrainMetrics.single_from_model_output(
        loss=loss,
        classification_loss=terms["classification"],
        lifting_loss=terms["lifting"],
        accuracy=accuracy,
    )
    return new_state, metrics


def make_train_step(model, tx, config, mesh) -> Callable:
    repl, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
    return jax.jit(
        functools.partial(train_step, model=model, tx=tx, config=config),
        in_shardings=(repl, data),
        out_shardings=(repl, repl),
        donate_argnums=0,
    )
