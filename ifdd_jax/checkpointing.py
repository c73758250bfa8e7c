"""Orbax checkpoints of a training run: the latest few, and the best by a validation metric.

The best checkpoint is chosen by `best_metric` ("uar" or "war", the flavor's choice in
ifdd_jax/recipe.py) with "≥": Orbax sorts the checkpoints stably by the metric in step order and
keeps the last, so a later evaluation that ties the best replaces it, as the released trainer's
`if acc >= best_acc` does.

Each checkpoint step holds three items:
  state  the TrainState (params, batch_stats, optimizer state, step, RNG key data); inference
         reads its params and batch_stats only (`restore_variables`)
  data   the train iterator's position (JSON), so a resumed run reads the same batches
  meta   what the state was built for (model, flavor, classes, input, model section), checked
         against the config before anything is restored
Restoring places every array on the current mesh (replicated), so a run saved on 8 devices
resumes on 1. Saves are asynchronous; `close()` waits for them.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

LATEST_DIR = "checkpoints"
BEST_DIR = "checkpoints_best"


def val_metrics(report: dict) -> dict:
    """The metrics stored with a checkpoint offered to the best manager."""
    return {"val_uar": float(report["uar"]), "val_war": float(report["war"])}


class CheckpointMismatchError(ValueError):
    """The checkpoint was made for another model, class count or input."""


def checkpoint_meta(config: ml_collections.ConfigDict) -> dict:
    """The fields a checkpoint must agree with to be restored into `config`'s model."""
    return dict(
        model_name=config.model_name,
        flavor=config.flavor,
        num_classes=int(config.num_classes),
        num_frames=int(config.data.num_frames),
        image_size=int(config.data.image_size),
        model=config.model.to_dict(),
    )


def check_meta(saved: dict, expected: dict, where: str) -> None:
    """Raises CheckpointMismatchError naming every field that differs."""
    diffs = []
    for key, value in expected.items():
        if key == "model":
            saved_model = saved.get("model", {})
            for k, v in value.items():
                if k in saved_model and saved_model[k] != v:
                    diffs.append(f"model.{k}: checkpoint {saved_model[k]!r}, config {v!r}")
        elif saved.get(key) != value:
            diffs.append(f"{key}: checkpoint {saved.get(key)!r}, config {value!r}")
    if diffs:
        raise CheckpointMismatchError(
            f"checkpoint {where} does not fit the config: " + "; ".join(diffs)
        )


def _manager(
    directory: str, *, max_to_keep: int, best_metric: str | None = None
) -> ocp.CheckpointManager:
    key = f"val_{best_metric}"
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        enable_async_checkpointing=True,
        best_fn=(lambda metrics: metrics[key]) if best_metric else None,
        best_mode="max",
        create=True,
    )
    return ocp.CheckpointManager(
        os.path.abspath(directory), item_names=("state", "data", "meta"), options=options
    )


def _abstract_on(state: Any, sharding: jax.sharding.Sharding) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)


def restore_from(
    manager: ocp.CheckpointManager,
    step: int,
    abstract_state: Any,
    sharding: jax.sharding.Sharding,
    config: ml_collections.ConfigDict,
) -> tuple[Any, dict]:
    """Restores (state, data state) of `step` onto `sharding` after checking the meta item."""
    where = f"{manager.directory}/{step}"
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    check_meta(meta, checkpoint_meta(config), where)
    try:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract_on(abstract_state, sharding)),
                data=ocp.args.JsonRestore(),
            ),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointMismatchError(f"checkpoint {where} cannot be restored: {e}") from e
    return restored["state"], restored["data"]


def restore_variables(
    manager: ocp.CheckpointManager,
    step: int,
    abstract_variables: dict,
    sharding: jax.sharding.Sharding,
    config: ml_collections.ConfigDict,
) -> dict:
    """Restores only {"params", "batch_stats"} of the state saved at `step` onto `sharding`, after
    checking the meta item: what inference needs, without the optimizer state."""
    where = f"{manager.directory}/{step}"
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    check_meta(meta, checkpoint_meta(config), where)
    # Empty collections (a model without BatchNorm) hold no array to read.
    wanted = {k: v for k, v in abstract_variables.items() if jax.tree.leaves(v)}
    target = _abstract_on(wanted, sharding)
    try:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    target,
                    restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                    partial_restore=True,
                )
            ),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointMismatchError(f"checkpoint {where} cannot be restored: {e}") from e
    return {k: restored["state"][k] if k in wanted else v for k, v in abstract_variables.items()}


class Checkpointer:
    """The run's two managers: `workdir/checkpoints` (latest `keep`) and
    `workdir/checkpoints_best` (the best by validation `best_metric`, "uar" or "war")."""

    def __init__(self, workdir: str, keep: int = 3, best_metric: str = "uar"):
        if best_metric not in ("uar", "war"):
            raise ValueError(f"best_metric must be 'uar' or 'war', got {best_metric!r}")
        self.latest = _manager(os.path.join(workdir, LATEST_DIR), max_to_keep=keep)
        self.best = _manager(
            os.path.join(workdir, BEST_DIR), max_to_keep=1, best_metric=best_metric
        )

    def save(
        self,
        step: int,
        state: Any,
        data_state: dict,
        config: ml_collections.ConfigDict,
        *,
        val_metrics: dict | None = None,
    ) -> None:
        """Saves to the latest manager and, when validation metrics (`val_metrics(report)`) are
        given, offers the step to the best manager (which keeps it only if its metric is at least
        the best so far)."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
            meta=ocp.args.JsonSave(checkpoint_meta(config)),
        )
        self.latest.save(step, args=args, force=True)
        if val_metrics is not None:
            self.best.save(step, args=args, metrics=val_metrics, force=True)

    def restore_latest(self, abstract_state, sharding, config) -> tuple[Any, dict, int] | None:
        step = self.latest.latest_step()
        if step is None:
            return None
        state, data = restore_from(self.latest, step, abstract_state, sharding, config)
        return state, data, step

    def best_step(self) -> int | None:
        return self.best.best_step()

    def restore_best(self, abstract_state, sharding, config) -> tuple[Any, int] | None:
        step = self.best.best_step()
        if step is None:
            return None
        state, _ = restore_from(self.best, step, abstract_state, sharding, config)
        return state, step

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self.latest.close()
        self.best.close()


def find_checkpoint(path: str) -> tuple[ocp.CheckpointManager, int]:
    """A manager and step for `path`: a run's workdir (its best checkpoint, else its latest), a
    checkpoint directory (its latest step) or one step directory `.../<step>`."""
    path = os.path.abspath(path)
    candidates = []
    base = os.path.basename(path.rstrip("/"))
    if base.isdigit():
        candidates.append((os.path.dirname(path), int(base)))
    candidates += [
        (os.path.join(path, BEST_DIR), None),
        (os.path.join(path, LATEST_DIR), None),
        (path, None),
    ]
    for directory, step in candidates:
        if not os.path.isdir(directory):
            continue
        manager = ocp.CheckpointManager(
            directory,
            item_names=("state", "data", "meta"),
            options=ocp.CheckpointManagerOptions(create=False, read_only=True),
        )
        if step is None:
            step = manager.best_step() if directory.endswith(BEST_DIR) else manager.latest_step()
            step = step if step is not None else manager.latest_step()
        if step is not None and step in manager.all_steps():
            return manager, step
        manager.close()
    raise FileNotFoundError(f"no checkpoint found at {path}")
