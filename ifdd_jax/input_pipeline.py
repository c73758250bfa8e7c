"""The data of a run: `config.data` resolved for the run (`data_config`) and the datasets built
from it for this process (`build_data`), used by training, evaluation and the analysis tools."""

from __future__ import annotations

import os

import jax
import ml_collections
from jax.experimental import multihost_utils

from data_pipeline import custom
from ifdd_jax import recipe


def data_config(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
    """config.data with `config.data_dir` applied; the synthetic set lives in `workdir/data`
    unless a data_dir is given."""
    cfg = ml_collections.ConfigDict(config.data.to_dict())
    if config.get("data_dir"):
        cfg.data_dir = config.data_dir
    if cfg.name == "synthetic" and not cfg.data_dir:
        cfg.data_dir = os.path.join(workdir, "data")
    if cfg.name != "synthetic":
        if not cfg.data_dir:
            raise ValueError(
                f"no data directory for {cfg.name}: pass --config.data_dir=/path/to/{cfg.name} "
                f"(the folder holding the official {cfg.name} layout)"
            )
        is_csv = cfg.name == "custom" and os.path.isfile(cfg.data_dir)
        if not os.path.isdir(cfg.data_dir) and not is_csv:
            raise FileNotFoundError(f"data_dir {cfg.data_dir} does not exist or is not a folder")
    return cfg


def resolve_classes(config: ml_collections.ConfigDict, workdir: str) -> bool:
    """A custom dataset's classes into the config, in place: `data.classes` (names, in label
    order) and `num_classes`, from the data unless given, so that the model, config.json and
    predictions agree; returns True for a custom dataset. The benchmarks' classes are fixed."""
    if config.data.name != "custom":
        return False
    names = custom.class_names(data_config(config, workdir).data_dir, config.data.classes)
    config.data.classes = ",".join(names)
    config.num_classes = len(names)
    return True


def build_data(config: ml_collections.ConfigDict, workdir: str):
    """The run's datasets for this process (data_pipeline.pipeline.build_datasets), with the
    flavor's augmentation defaults resolved into `config` first."""
    # deferred: imports TensorFlow, which inference and the model code never need
    from data_pipeline.pipeline import build_datasets

    recipe.resolve(config)
    resolve_classes(config, workdir)
    data = build_datasets(
        data_config(config, workdir),
        global_batch_size=config.batch_size,
        eval_batch_size=config.eval_batch_size,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        # Host 0 prepares the data (synthetic tree, TFRecords) before the other hosts read it.
        barrier=lambda: multihost_utils.sync_global_devices("ifdd_jax: data prepared"),
    )
    if data.meta["num_classes"] != config.num_classes:
        raise ValueError(
            f"the {config.data.name} data has {data.meta['num_classes']} classes but "
            f"config.num_classes is {config.num_classes}"
        )
    return data
