"""tf.data clip pipeline and the single entry point `build_datasets`.

Train stream (per host): epochs of the host's clips, each shuffled with a seed derived from
(seed, epoch); every clip's temporal offsets and augmentation come from a stateless key derived
from (seed, epoch, position in epoch), and mixup/cutmix from (seed, epoch, position of the batch's
first clip). The stream is therefore a pure function of the seed, and resuming needs only
(epoch, position): `TrainIterator.get_state()` returns them as a JSON-serialisable dict and
`set_state` rebuilds the stream there (skipping already-read records before any decoding).
Batches cross epoch boundaries, so no clip is dropped at an epoch's end.

Train batch: clips float32 [B, T, H, W, 3], label int32 [B], target float32 [B, K]; with
             `augment_on_device`, clips uint8 [B, T, S0, S0, 3] (decoded, at the stored size
             S0 = `stored_size` or image_size) and label int32 [B] only: flip, crop, jitter,
             normalisation and mixing run in the train step (ifdd_jax/device_augment.py).
Eval batch:  clips float32 [B, V, T, H, W, 3], label int32 [B], mask bool [B] (False on padding),
             clip_id bytes [B], index int32 [B] (position in the split; -1 on padding).
Evaluation covers every clip of the split exactly once across all hosts: the last batch is padded
and every host yields the same number of batches.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf

from data_pipeline import custom, datasets, sampling, sources, tfds_builders
from data_pipeline.augment import (
    AugmentOptions,
    eval_transform,
    normalize,
    stored_clip,
    train_augment,
)
from data_pipeline.configs import check_resolved
from data_pipeline.errors import DataError
from data_pipeline.mixing import MixOptions, mix_batch, smooth_one_hot
from data_pipeline.sources import decode_frames
from data_pipeline.synthetic import SyntheticOptions, ensure_synthetic_dataset

log = logging.getLogger(__name__)
Batch = dict[str, np.ndarray]


@dataclasses.dataclass
class Datasets:
    """What the trainer gets: a resumable train iterator, fresh eval iterators, and metadata."""

    train: TrainIterator
    make_eval_iter: Callable[[str], Iterator[Batch]]
    meta: dict[str, Any]


class TrainIterator:
    """Infinite iterator of train batches with a checkpointable position.

    State: {"epoch": int, "position": int, "seed": int}, the next clip to read. Save it with the
    model (e.g. Orbax JsonSave) and pass it to `set_state` after a restart.
    """

    def __init__(self, make: Callable[[int, int], tf.data.Dataset], seed: int):
        self._make, self._seed = make, seed
        self._epoch, self._position = 0, 0
        self._it: Iterator[Batch] | None = None

    def __iter__(self) -> TrainIterator:
        return self

    def __next__(self) -> Batch:
        if self._it is None:
            self._it = self._make(self._epoch, self._position).as_numpy_iterator()
        batch = next(self._it)
        epochs, positions = batch.pop("_epoch"), batch.pop("_position")
        self._epoch, self._position = int(epochs[-1]), int(positions[-1]) + 1
        return batch

    def get_state(self) -> dict[str, int]:
        return {"epoch": self._epoch, "position": self._position, "seed": self._seed}

    def set_state(self, state: dict[str, int]) -> None:
        if int(state.get("seed", self._seed)) != self._seed:
            raise ValueError(
                f"train iterator state was saved with seed {state['seed']}, "
                f"this pipeline uses seed {self._seed}"
            )
        self._epoch, self._position = int(state["epoch"]), int(state["position"])
        self._it = None


def _augment_options(cfg: ml_collections.ConfigDict) -> AugmentOptions:
    check_resolved(cfg)
    a = cfg.augment
    return AugmentOptions(
        image_size=cfg.image_size,
        flip_prob=a.flip_prob,
        crop_scale=(a.crop_scale_min, a.crop_scale_max),
        crop_ratio=(a.crop_ratio_min, a.crop_ratio_max),
        crop_sampler=a.crop_sampler,
        brightness=a.brightness,
        contrast=a.contrast,
        saturation=a.saturation,
        hue=a.hue,
        enabled=a.enabled,
    )


def _mix_options(cfg: ml_collections.ConfigDict) -> MixOptions:
    m = cfg.mix
    return MixOptions(
        mixup_alpha=m.mixup_alpha,
        cutmix_alpha=m.cutmix_alpha,
        mix_prob=m.prob,
        switch_prob=m.switch_prob,
        label_smoothing=m.label_smoothing,
    )


def _key(seed: int, stream: int, *data: tf.Tensor) -> tf.Tensor:
    """Stateless RNG key (int32 [2]) for (seed, stream, data...)."""
    key = tf.constant([seed % (2**31), stream], tf.int32)
    for d in data:
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(d, tf.int32))
    return tf.cast(key, tf.int32)


def _options(cfg: ml_collections.ConfigDict) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True  # the stream must not depend on thread timing (resumability)
    options.threading.private_threadpool_size = (
        cfg.num_parallel_calls if cfg.num_parallel_calls > 0 else 0
    )
    options.experimental_optimization.map_parallelization = True
    return options


def _resolve_root(cfg: ml_collections.ConfigDict, process_index: int) -> tuple[str, str | None]:
    """(root of the official-layout tree, TFDS data_dir or None for TFDS's default)."""
    if cfg.name == "synthetic":
        s = cfg.synthetic
        opts = SyntheticOptions(
            num_clips=s.num_clips,
            num_frames=s.num_frames,
            size=s.size,
            seed=s.seed,
            event_frames=s.event_frames,
            imbalance=s.imbalance,
            label_noise=s.label_noise,
        )
        base = cfg.data_dir or os.path.join(os.path.expanduser("~"), ".cache", "ifdd_jax")
        root = ensure_synthetic_dataset(base, opts)
        return root, cfg.tfds_data_dir or os.path.join(root, "tfds")
    if not cfg.data_dir:
        raise ValueError(
            f"data_dir is not set: pass --config.data.data_dir=/path/to/{cfg.name} "
            f"(the folder in the official {cfg.name} layout)"
        )
    return cfg.data_dir, cfg.tfds_data_dir


def class_names_of(cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The dataset's class names: the documented order of a benchmark, or a custom dataset's
    (`data.classes`, else its labels sorted)."""
    spec = datasets.get(cfg.name)
    if spec.class_names is None:
        return custom.class_names(cfg.data_dir, cfg.get("classes"))
    return spec.class_names


def _custom_options(cfg: ml_collections.ConfigDict) -> dict:
    """The TFDS builder options of a custom dataset: what it reads and its fingerprint."""
    names = class_names_of(cfg)
    return {
        "source_path": os.path.abspath(cfg.data_dir),
        "class_names": names,
        "test_fraction": cfg.test_fraction,
        "fingerprint": custom.fingerprint(cfg.data_dir, names),
    }


def _split_sources(cfg, process_index, process_count) -> tuple[dict, dict, dict]:
    """Per-split sources, the skip report (JSON form) and excluded counts."""
    root, tfds_dir = _resolve_root(cfg, process_index)
    dataset = datasets.get(cfg.name).tfds_name  # the synthetic set is stored as DFEW
    fold = cfg.fold if datasets.get(cfg.name).has_folds else None
    if cfg.name == "custom":
        # The folder clip paths start from (a CSV's folder, or the class folders' root).
        root = custom.read_rows(cfg.data_dir)[0]
    if cfg.source == "tfds":
        builder = tfds_builders.prepare(
            cfg.name,
            root,
            tfds_dir,
            fold=fold,
            **({"frame_version": cfg.frame_version} if dataset == "dfew" else {}),
            **({"prefer": cfg.prefer} if dataset == "mafw" else {}),
            **(_custom_options(cfg) if dataset == "custom" else {}),
            val_fraction=cfg.val_fraction,
            split_seed=cfg.split_seed,
            max_frames=cfg.max_stored_frames,
            on_bad_clip=cfg.on_bad_clip,
            validate_frames=cfg.validate_frames,
        )
        has_val = "val" in builder.info.splits
        if cfg.val_protocol == "holdout" and not has_val:
            raise DataError(
                root,
                "the held-out validation split is empty (too few clips per class "
                "for val_fraction); use val_protocol='test' or more clips",
            )
        specs = (
            {"train": "train", "val": "val", "test": "test"}
            if cfg.val_protocol == "holdout"
            else {"train": "train+val" if has_val else "train", "val": "test", "test": "test"}
        )
        srcs = sources.tfds_split_sources(
            builder, specs, process_index=process_index, process_count=process_count
        )
        meta = builder.info.metadata or {}
        return srcs, tfds_builders.skipped_from_metadata(builder), dict(meta.get("excluded", {}))
    if cfg.source == "files":
        custom_options = (
            {
                "classes": class_names_of(cfg),
                "test_fraction": cfg.test_fraction,
                "split_seed": cfg.split_seed,
            }
            if dataset == "custom"
            else None
        )
        index = sources.read_index(
            dataset,
            cfg.data_dir if dataset == "custom" else root,
            fold=fold or 0,
            frame_version=cfg.frame_version,
            prefer=cfg.prefer,
            on_bad_clip=cfg.on_bad_clip,
            custom_options=custom_options,
        )
        srcs, report = sources.file_split_sources(
            index,
            val_fraction=cfg.val_fraction,
            split_seed=cfg.split_seed,
            val_protocol=cfg.val_protocol,
            validate=cfg.validate_frames,
            on_bad_clip=cfg.on_bad_clip,
            process_index=process_index,
            process_count=process_count,
        )
        report.log(log, f"reading {cfg.name} from {root}")
        return srcs, report.to_json(), dict(index.excluded)
    raise ValueError(f"source must be 'tfds' or 'files', got {cfg.source!r}")


def _check_config(cfg: ml_collections.ConfigDict) -> None:
    datasets.get(cfg.name)  # a ValueError naming the known datasets
    if cfg.val_protocol not in ("holdout", "test"):
        raise ValueError(f"val_protocol must be 'holdout' or 'test', got {cfg.val_protocol!r}")
    if cfg.short_clip_policy not in sampling.SHORT_CLIP_POLICIES:
        raise ValueError(f"short_clip_policy must be one of {sampling.SHORT_CLIP_POLICIES}")
    if cfg.num_frames < 1 or cfg.image_size < 1 or cfg.num_eval_views < 1:
        raise ValueError("num_frames, image_size and num_eval_views must be positive")


def host0_first(
    prepare: Callable[[], Any],
    process_index: int,
    process_count: int,
    barrier: Callable[[], None] | None,
) -> Any:
    """Runs `prepare` on host 0, then on the other hosts once `barrier` (which every host calls
    exactly once) has let them through.

    Preparation writes files (the synthetic tree, TFRecords): hosts sharing storage must not write
    them at the same time, and afterwards find them ready; hosts with their own disks each prepare
    their copy after host 0. A failure on host 0 still releases the others, which then meet the
    same problem themselves and report it, rather than waiting forever.
    """
    if process_count == 1 or barrier is None:
        return prepare()
    if process_index == 0:
        try:
            return prepare()
        finally:
            barrier()
    barrier()
    return prepare()


# long: the tf.data graph as short closures over the run's settings (train, batch, eval, meta)
def build_datasets(
    data_config: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    eval_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    barrier: Callable[[], None] | None = None,
) -> Datasets:
    """Builds the train iterator, the eval iterator factory and metadata for one host.

    Args:
      data_config: from data_pipeline.configs.get_data_config (possibly overridden).
      global_batch_size / eval_batch_size: over all hosts; each must divide by process_count.
      seed: drives shuffling, temporal sampling, augmentation and mixing.
      process_index / process_count: this host and the number of hosts (jax.process_index() ...).
      barrier: with several hosts, a callable that returns once every host has called it (e.g.
        jax.experimental.multihost_utils.sync_global_devices); host 0 then prepares the data
        before the others touch it (see host0_first). None: every host prepares at once.
    """
    cfg = data_config
    _check_config(cfg)
    for name, b in (("global_batch_size", global_batch_size), ("eval_batch_size", eval_batch_size)):
        if b < process_count or b % process_count:
            raise ValueError(
                f"{name}={b} must be a positive multiple of process_count={process_count}"
            )
    train_b, eval_b = global_batch_size // process_count, eval_batch_size // process_count
    class_names = class_names_of(cfg)
    num_classes = len(class_names)
    t, size, views = cfg.num_frames, cfg.image_size, cfg.num_eval_views
    aug, mix = _augment_options(cfg), _mix_options(cfg)
    policy = cfg.short_clip_policy
    temporal = sampling.options(cfg)  # segments, or the released MAFW strided window
    split_sources, skipped, excluded = host0_first(
        lambda: _split_sources(cfg, process_index, process_count),
        process_index,
        process_count,
        barrier,
    )

    # Clips shorter than T: counted per split; with the "skip" policy they leave the pipeline.
    short, kept_counts = {}, {}
    for name, src in split_sources.items():
        if policy == "skip":
            counts = src.frame_counts()
            short[name] = sum(n < t for n in counts)
            kept_counts[name] = src.total - short[name]
        else:
            kept_counts[name] = src.total
    if kept_counts["train"] == 0 or split_sources["train"].num_examples == 0:
        raise DataError(cfg.data_dir or cfg.name, "the training split of this host has no clips")

    def keep(elem: dict) -> tf.Tensor:
        return elem["num_frames"] >= (t if policy == "skip" else 1)

    on_device = bool(cfg.get("augment_on_device", False))
    stored = int(cfg.get("stored_size", 0) or size)

    def process_train(epoch, position, elem):
        key = _key(seed, 1, epoch, position)
        keys = tf.random.experimental.stateless_split(key, 2)
        idx = sampling.train_indices(elem["num_frames"], t, keys[0], policy, **temporal)
        if on_device:  # decoded uint8 at the stored size; the train step augments
            clip = tf.ensure_shape(
                stored_clip(decode_frames(elem, idx), stored), [t, stored, stored, 3]
            )
            return {"clips": clip, "label": elem["label"], "_epoch": epoch, "_position": position}
        clip = train_augment(decode_frames(elem, idx), aug, keys[1])
        clip = tf.ensure_shape(normalize(clip, cfg.normalization), [t, size, size, 3])
        return {"clips": clip, "label": elem["label"], "_epoch": epoch, "_position": position}

    def process_batch(batch):
        key = _key(seed, 2, batch["_epoch"][0], batch["_position"][0])
        if cfg.mix.enabled:
            clips, target = mix_batch(batch["clips"], batch["label"], num_classes, mix, key)
        else:
            clips, target = (
                batch["clips"],
                smooth_one_hot(batch["label"], num_classes, cfg.mix.label_smoothing),
            )
        return {**batch, "clips": clips, "target": target}

    train_src = split_sources["train"]

    def make_train(start_epoch: int, start_position: int) -> tf.data.Dataset:
        base = train_src.make().filter(keep)
        buffer = max(1, min(cfg.shuffle_buffer, train_src.num_examples))

        def one_epoch(epoch):
            shuffle_seed = tf.cast(seed, tf.int64) * 1_000_003 + epoch
            ds = base.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
            return ds.enumerate().map(lambda i, x: (epoch, i, x))

        ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(one_epoch)
        ds = ds.skip(start_position)  # before decoding: resuming costs only record reads
        ds = ds.map(process_train, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(train_b, drop_remainder=True)
        if not on_device:  # on the device, mixing and the targets are the train step's
            ds = ds.map(process_batch, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(cfg.prefetch).with_options(_options(cfg))

    def process_eval(index, elem):
        # [V, T]; a strided window's start comes from the run's seed and the clip's index.
        idx = sampling.eval_indices(
            elem["num_frames"], t, views, policy, **temporal, seed=_key(seed, 3, index)
        )
        frames = decode_frames(elem, tf.reshape(idx, [-1]))
        shape = tf.shape(frames)
        frames = tf.reshape(frames, tf.concat([[views, t], shape[1:]], 0))
        clip = normalize(eval_transform(frames, size), cfg.normalization)
        return {
            "clips": tf.ensure_shape(clip, [views, t, size, size, 3]),
            "label": elem["label"],
            "mask": tf.constant(True),
            "clip_id": elem["clip_id"],
            "index": tf.cast(index, tf.int32),
        }

    def num_eval_batches(split: str) -> int:
        src = split_sources[split]
        per_host = src.host_counts if policy != "skip" else None
        if per_host is None:
            counts = src.frame_counts()
            per_host, start = [], 0
            for c in src.host_counts:
                per_host.append(sum(n >= t for n in counts[start : start + c]))
                start += c
        return max(1, math.ceil(max(per_host) / eval_b))

    eval_batches = {s: num_eval_batches(s) for s in ("val", "test")}

    def make_eval_iter(split: str) -> Iterator[Batch]:
        if split not in ("val", "test"):
            raise ValueError(f"eval split must be 'val' or 'test', got {split!r}")
        src = split_sources[split]
        ds = src.make().enumerate(start=src.offset).filter(lambda i, x: keep(x))
        ds = ds.map(process_eval, num_parallel_calls=tf.data.AUTOTUNE)
        pad = {
            "clips": tf.zeros([views, t, size, size, 3]),
            "label": tf.constant(0),
            "mask": tf.constant(False),
            "clip_id": tf.constant(""),
            "index": tf.constant(-1),
        }
        n_batches = eval_batches[split]
        ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat())
        ds = ds.take(n_batches * eval_b).batch(eval_b, drop_remainder=True)
        return ds.prefetch(cfg.prefetch).with_options(_options(cfg)).as_numpy_iterator()

    meta = {
        "dataset": cfg.name,
        "source": cfg.source,
        "fold": cfg.fold if datasets.get(cfg.name).has_folds else None,
        "num_classes": num_classes,
        "class_names": list(class_names),
        "num_examples": kept_counts,
        "input_shape": (t, size, size, 3),
        "eval_input_shape": (views, t, size, size, 3),
        "num_eval_views": views,
        "val_protocol": cfg.val_protocol,
        "val_fraction": cfg.val_fraction if cfg.val_protocol == "holdout" else None,
        "split_seed": cfg.split_seed,
        "normalization": cfg.normalization,
        "short_clip_policy": policy,
        "temporal_sampling": temporal,
        "short_clips_skipped": short,
        "skipped": skipped,
        "excluded": excluded,
        "per_host_batch_size": train_b,
        "per_host_eval_batch_size": eval_b,
        "eval_num_batches": eval_batches,
        "target_is_soft": True,
        # On-device augmentation: train batches are {clips uint8 [B, T, S0, S0, 3], label}.
        "augment_on_device": on_device,
        "train_clip_shape": (t, stored, stored, 3) if on_device else (t, size, size, 3),
    }
    return Datasets(TrainIterator(make_train, seed), make_eval_iter, meta)
