"""How far training moved each part of a model from its initialisation, against how far the
optimizer could have moved it.

Answers "do ISSM's and LADM's small layers get enough learning rate and warmup?" with numbers:
for each parameter group (a module of the model's top two levels, e.g. `issm/static_offset`,
`ladm/predictor`, `trunk`, `head`) the relative change ‖θ − θ₀‖ / ‖θ₀‖ and the mean absolute
change per entry, beside the schedule's budget Σ_s lr_s (the summed learning rate of the steps
taken). AdamW normalises each entry's update to about lr_s per step when its gradient has a
steady sign, so an entry can move by up to about Σ_s lr_s; a mean |Δθ| far below that budget
says the gradient's sign kept changing (noise), not that the learning rate was too small.

θ₀ is rebuilt the way `train_state.create_state` makes it (the run's `config.seed`); runs that
started from converted weights (`config.init_from`) are refused, since θ₀ is then not the seed's.
"""

from __future__ import annotations

import jax
import numpy as np

from ifdd_jax import train_state
from ifdd_jax.optim import make_schedule


def initial_params(model, config) -> dict:
    """The parameters `create_state` initialises for `config.seed` (same key split)."""
    init_rng, dropout_rng, _ = jax.random.split(jax.random.key(config.seed), 3)
    rngs = {"params": init_rng, "dropout": dropout_rng}
    return jax.jit(lambda r: train_state.init_variables(model, config, r))(rngs)["params"]


def _groups(params: dict, depth: int = 2) -> dict[str, list[np.ndarray]]:
    """Leaves grouped by the first `depth` keys of their path (`issm/static_offset`,
    `issm/descriptor_bias`); the trunk, the pyramid and the head are kept whole."""
    grouped: dict[str, list[np.ndarray]] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [str(getattr(k, "key", k)) for k in path]
        keep = 1 if keys[0] in ("trunk", "head", "pyramid") else depth
        name = "/".join(keys[:keep])
        grouped.setdefault(name, []).append(np.asarray(leaf, np.float64))
    return grouped


def lr_budget(config, *, steps: int, steps_per_epoch: int, total_steps: int) -> dict:
    """Σ_s lr_s over the first `steps` steps of the run's schedule, its peak, and the warmup
    length in steps (config.optim.warmup_epochs of `steps_per_epoch`)."""
    schedule = make_schedule(config, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
    lrs = np.asarray(jax.vmap(schedule)(np.arange(steps)), np.float64)
    return dict(
        lr_sum=float(lrs.sum()),
        lr_peak=float(lrs.max(initial=0.0)),
        warmup_steps=int(round(config.optim.warmup_epochs * steps_per_epoch)),
        steps=int(steps),
    )


def movement(initial: dict, trained: dict) -> dict[str, dict]:
    """Per group: relative change (None where θ₀ = 0, e.g. a zero-initialised bias), mean |Δθ|
    per entry, mean |θ₀| and |θ| per entry, entries."""
    start, end = _groups(initial), _groups(trained)
    if start.keys() != end.keys():
        raise ValueError("the trained parameters do not have the initial parameters' structure")
    result = {}
    for name in start:
        a = np.concatenate([x.ravel() for x in start[name]])
        b = np.concatenate([x.ravel() for x in end[name]])
        delta = b - a
        norm0 = np.linalg.norm(a)
        result[name] = dict(
            relative_change=float(np.linalg.norm(delta) / norm0) if norm0 > 0 else None,
            mean_abs_change=float(np.mean(np.abs(delta))),
            mean_abs_initial=float(np.mean(np.abs(a))),
            mean_abs_trained=float(np.mean(np.abs(b))),
            entries=int(a.size),
        )
    return result
