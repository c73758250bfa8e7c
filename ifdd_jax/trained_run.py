"""A trained run, restored for inference: its config, model and variables (`load_trained`).

What `python -m ifdd_jax.predict` and the analysis tools start from. A run is found by its
workdir (its best checkpoint, else its latest) or by a checkpoint folder; its settings come from
the `config.json` that ifdd_jax.main writes next to the checkpoints, or from an explicit config.
Only the parameters and batch statistics are restored (train_state.restore_variables), on one
device.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from data_pipeline.labels import class_names
from ifdd_jax import sharding
from ifdd_jax.config_lib import load_config_file
from ifdd_jax.models import build_model
from ifdd_jax.train_state import restore_variables

CONFIG_FILE = "config.json"


@dataclasses.dataclass
class TrainedModel:
    """A restored model: `apply(clips [N, T, S, S, 3]) -> outputs dict` runs it (eval mode)."""

    config: Any  # ml_collections.ConfigDict
    model: Any  # flax.linen.Module
    variables: dict
    class_names: list[str]
    checkpoint: str
    step: int

    @property
    def num_frames(self) -> int:
        return int(self.config.data.num_frames)

    @property
    def image_size(self) -> int:
        return int(self.config.data.image_size)

    def apply(self, clips: np.ndarray, **kwargs) -> dict:
        return self.model.apply(self.variables, clips, train=False, **kwargs)


def _find_config_file(paths: Sequence[str]) -> str | None:
    """config.json in any of `paths` or up to two folders above them (a checkpoint folder is
    `RUN/checkpoints_best` or `RUN/checkpoints/<step>`)."""
    for path in paths:
        folder = os.path.abspath(path)
        for _ in range(3):
            candidate = os.path.join(folder, CONFIG_FILE)
            if os.path.isfile(candidate):
                return candidate
            folder = os.path.dirname(folder)
    return None


def load_config(
    workdir: str | None = None, checkpoint: str | None = None, config: str | None = None
):
    """The run's config: `config` ("configs/x.py:args" or a config.json), else the config.json
    written next to the checkpoint by ifdd_jax.main."""
    if config:
        if config.endswith(".json"):
            if not os.path.isfile(config):
                raise FileNotFoundError(f"{config}: config file does not exist")
            with open(config) as f:
                return ml_collections.ConfigDict(json.load(f))
        return load_config_file(config)
    found = _find_config_file([p for p in (workdir, checkpoint) if p])
    if found is None:
        where = workdir or checkpoint
        raise FileNotFoundError(
            f"{where}: no {CONFIG_FILE} found with the checkpoint; pass --config "
            f"(e.g. --config=configs/dfew.py:model=ifdd_2dcnn) with the run's settings"
        )
    try:
        with open(found) as f:
            return ml_collections.ConfigDict(json.load(f))
    except json.JSONDecodeError as e:
        raise ValueError(f"{found}: not valid JSON ({e})") from e


def class_names_for(config) -> list[str]:
    if "data" in config and config.data.get("classes"):
        return [name.strip() for name in config.data.classes.split(",")]  # a custom dataset
    names = list(class_names(config.data.name if "data" in config else config.dataset))
    if len(names) != int(config.num_classes):
        return [f"class_{i}" for i in range(int(config.num_classes))]
    return names


def load_trained(
    workdir: str | None = None, checkpoint: str | None = None, config: Any = None
) -> TrainedModel:
    """Restores a run's model: `workdir` (its best checkpoint, else its latest) or `checkpoint`
    (a checkpoint folder or one step folder). `config` is a ConfigDict, a config spec
    ("configs/x.py:args", "path/config.json") or None for the run's own config.json."""
    if not workdir and not checkpoint:
        raise ValueError("give a run's --workdir or a --checkpoint folder")
    if config is None or isinstance(config, str):
        config = load_config(workdir, checkpoint, config)
    model = build_model(config)
    # One device is enough for inference and keeps any batch size valid.
    mesh = sharding.make_mesh(jax.devices()[:1])
    variables, step, directory = restore_variables(model, config, checkpoint or workdir, mesh)
    return TrainedModel(
        config=config,
        model=model,
        variables=variables,
        class_names=class_names_for(config),
        checkpoint=directory,
        step=step,
    )
