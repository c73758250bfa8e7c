"""AdamW with linear warmup and cosine decay, the weight-decay mask and gradient clipping.

Paper vs released recipe (`flavor`), written here once:
* paper: lr 1e-4, 10 warmup epochs rising linearly from 1e-6, then cosine decay (the paper);
  stepping the lr every step rather than every epoch is our choice. Weight decay 1e-3 (the
  paper's and the released value); applying it to weights only is our choice, as is the cosine's
  end lr (lr · end_lr_ratio = 1e-6, the released cosine function's default end): biases
  (including ISSM's per-frame b_T `[T, d_T]`), norm scales and other 1-D parameters,
  positional/relative-position tables and tokens are not decayed.
* reference: the released trainer sets the lr once per epoch. Its base lr is lr/32 · batch
  (5e-5 at batch 16) and its end lr is base · 0.01; epochs e ≥ W (W = 10 warmup epochs of E = 100)
  follow end + (base - end)·(1 + cos(π(e - W)/(E - W)))/2. Warmup epochs e < W use
  1e-6 + e · (target - 1e-6)/W, where the released code computes `target` by calling its cosine
  function at epoch W with *all that function's defaults*: peak 1e-4 (the unscaled lr), end 1e-6
  and a warmup offset of 1 epoch, i.e. target = 1e-6 + (1e-4 - 1e-6)(1 + cos(π(W - 1)/(E - 1)))/2
  = 9.7995e-5. So the lr climbs from 1e-6 to 8.83e-5 at epoch 9 and drops to 5e-5 at epoch 10 (a
  code quirk reproduced here; `reference_warmup_target`, with config.optim.lr standing for the
  hard-coded 1e-4, which is the released lr). One parameter group, every parameter decayed, no
  clipping.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

Schedule = Callable[[jax.Array], jax.Array]


def paper_schedule(
    *, lr: float, warmup_init_lr: float, end_lr: float, warmup_steps: int, total_steps: int
) -> Schedule:
    """Per-step linear warmup from `warmup_init_lr` to `lr`, then cosine decay to `end_lr`."""
    return optax.warmup_cosine_decay_schedule(
        init_value=warmup_init_lr,
        peak_value=lr,
        warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1),
        end_value=end_lr,
    )


# The end value the released cosine function uses when called with its defaults.
RELEASED_COSINE_DEFAULT_END = 1e-6


def reference_warmup_target(*, peak_lr: float, warmup_epochs: int, num_epochs: int) -> float:
    """The released warmup's end value: its cosine at epoch W with the function's defaults (end
    1e-6, offset 1 epoch). 9.7995e-5 for peak 1e-4, W = 10, E = 100."""
    end = RELEASED_COSINE_DEFAULT_END
    offset = 1.0
    progress = (warmup_epochs - offset) / max(num_epochs - offset, 1e-9)
    return end + (peak_lr - end) * (1.0 + math.cos(math.pi * progress)) / 2.0


def reference_lr_at_epoch(
    epoch: jax.Array,
    *,
    base_lr: float,
    warmup_target: float,
    warmup_init_lr: float,
    warmup_epochs: int,
    num_epochs: int,
) -> jax.Array:
    """The released per-epoch lr (see the module docstring). `epoch` may be traced."""
    end_lr = base_lr * 0.01
    epoch = jnp.asarray(epoch, jnp.float32)
    warm = warmup_init_lr + epoch * (warmup_target - warmup_init_lr) / max(warmup_epochs, 1)
    span = max(num_epochs - warmup_epochs, 1)
    cos = (
        end_lr + (base_lr - end_lr) * (1.0 + jnp.cos(math.pi * (epoch - warmup_epochs) / span)) / 2
    )
    return jnp.where(epoch < warmup_epochs, warm, cos)


def reference_schedule(
    *,
    base_lr: float,
    warmup_target: float,
    warmup_init_lr: float,
    warmup_epochs: int,
    num_epochs: int,
    steps_per_epoch: int,
) -> Schedule:
    def schedule(step):
        return reference_lr_at_epoch(
            jnp.asarray(step) // steps_per_epoch,
            base_lr=base_lr,
            warmup_target=warmup_target,
            warmup_init_lr=warmup_init_lr,
            warmup_epochs=warmup_epochs,
            num_epochs=num_epochs,
        )

    return schedule


def decay_mask(params: Any, flavor: str) -> Any:
    """True where weight decay applies. reference: everywhere. paper: weights of rank >= 2 that are
    not positional tables or tokens (biases, norm scales and other 1-D parameters are excluded)."""

    def decays(path, leaf) -> bool:
        if flavor == "reference":
            return True
        name = jax.tree_util.keystr(path).lower()
        # "bias" by name: ISSM's b_T (`descriptor_bias`) is a bias of rank 2.
        if any(word in name for word in ("pos", "token", "bias")):
            return False
        return leaf.ndim >= 2

    return jax.tree_util.tree_map_with_path(decays, params)


def steps_for(config: ml_collections.ConfigDict, num_train_examples: int) -> tuple[int, int]:
    """(steps per epoch, total steps). An epoch is one pass over the train split (at least one
    step); config.num_train_steps > 0 overrides num_epochs."""
    steps_per_epoch = max(1, num_train_examples // config.batch_size)
    total = (
        config.num_train_steps
        if config.num_train_steps > 0
        else config.num_epochs * steps_per_epoch
    )
    return steps_per_epoch, int(total)


def make_schedule(
    config: ml_collections.ConfigDict, *, steps_per_epoch: int, total_steps: int
) -> Schedule:
    o = config.optim
    if config.flavor == "reference":
        num_epochs = max(1, math.ceil(total_steps / steps_per_epoch))
        return reference_schedule(
            base_lr=o.lr * config.batch_size / o.reference_lr_batch,
            warmup_target=reference_warmup_target(
                peak_lr=o.lr, warmup_epochs=o.warmup_epochs, num_epochs=num_epochs
            ),
            warmup_init_lr=o.warmup_init_lr,
            warmup_epochs=o.warmup_epochs,
            num_epochs=num_epochs,
            steps_per_epoch=steps_per_epoch,
        )
    return paper_schedule(
        lr=o.lr,
        warmup_init_lr=o.warmup_init_lr,
        end_lr=o.lr * o.end_lr_ratio,
        warmup_steps=int(round(o.warmup_epochs * steps_per_epoch)),
        total_steps=total_steps,
    )


def make_optimizer(
    config: ml_collections.ConfigDict, *, steps_per_epoch: int, total_steps: int
) -> tuple[optax.GradientTransformation, Schedule]:
    """AdamW (b1, b2, eps, weight decay from config.optim) with the flavor's schedule and mask,
    preceded by global-norm clipping when config.optim.grad_clip > 0."""
    o = config.optim
    schedule = make_schedule(config, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
    adamw = optax.adamw(
        schedule,
        b1=o.b1,
        b2=o.b2,
        eps=o.eps,
        weight_decay=o.weight_decay,
        mask=lambda params: decay_mask(params, config.flavor),
    )
    if o.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(o.grad_clip), adamw), schedule
    return adamw, schedule
