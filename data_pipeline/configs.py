"""Data configs: `get_data_config(name)` for "dfew", "ferv39k", "mafw", "synthetic", "custom".

Every field is typed (optional ones are placeholders), so `--config.data.<field>=<value>`
overrides work with a locked config. Defaults follow docs/reference-ifdd.md §5–§6 and
docs/datasets.md.

Augmentation follows the flavor (`FLAVOR_DATA_DEFAULTS`): the paper trains with "random horizontal
flip and random crop" only; the released recipe adds colour jitter (brightness, contrast,
saturation and hue 0.4), mixup/cutmix (batch mode, α 0.8 / 1.0, switch 0.5) and label smoothing
0.1. Those fields are placeholders (None) until `resolve_flavor_defaults(cfg, flavor)` fills the
ones the user left unset, so an explicit override always wins. Both flavors share the crop ranges
(scale 0.5–1, aspect 3/4–4/3, the released RandomResizedCrop's; the paper does not give its crop)
and the flip probability 0.5. How the box is drawn in those ranges (`augment.crop_sampler`) is the
flavor's: "torchvision" for the reference flavor (the distribution of the released code's
RandomResizedCrop), "tf" (tf.image.sample_distorted_bounding_box) for the paper flavor, which only
says "random crop" and keeps the sampler it has always used.

`augment_on_device` (default False) moves all of it after decoding into the jitted train step
(ifdd_jax/device_augment.py): the pipeline then yields uint8 clips at `stored_size` and labels.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from data_pipeline import datasets


def _common(name: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = name
    # Root of the official layout (manual_dir). For "synthetic": where generated trees are kept
    # (default ~/.cache/ifdd_jax).
    c.data_dir = config_dict.placeholder(str)
    # Where prepared TFRecords go; None = TFDS's default (~/tensorflow_datasets), or
    # <synthetic tree>/tfds for the synthetic set.
    c.tfds_data_dir = config_dict.placeholder(str)
    c.source = "tfds"  # "tfds": prepare once, read TFRecords; "files": read the tree
    c.fold = 1  # 1..5 (DFEW, MAFW, synthetic); ignored for FERV39k
    c.frame_version = "16f"  # DFEW: "16f" (clip_224x224_16f), "all" (clip_224x224), "video"
    c.prefer = "frames"  # MAFW: "frames" (data/frames) or "video" (data/clips)
    c.max_stored_frames = 0  # > 0: keep that many frames spread over long clips when preparing
    c.num_frames = 16  # T
    c.image_size = 224  # H = W
    c.num_eval_views = 1  # V temporal views per clip at evaluation (logits averaged)
    c.short_clip_policy = "stretch"  # clips with fewer than T frames: "stretch" | "loop" | "skip"
    # "segments" | "strided_window" (data_pipeline/sampling.py); None: the flavor's, see
    # resolve_flavor_defaults (the released strided window for reference MAFW, else segments).
    c.temporal_sampling = config_dict.placeholder(str)
    c.window_stride = 2  # "strided_window": frames between samples (the released MAFW's)
    c.val_protocol = (
        "holdout"  # "holdout": stratified split of the training fold; "test": val = test
    )
    c.val_fraction = 0.2  # 4:1 train/val as in the paper
    c.split_seed = 0
    c.on_bad_clip = "skip"  # "skip": counted and reported; "error": stop at the first bad clip
    c.validate_frames = True  # decode every JPEG / probe every video once when preparing
    c.normalization = "unit"  # "unit": [0, 1] as the authors; "imagenet": mean/std
    # Placeholders below take the flavor's value in resolve_flavor_defaults.
    c.augment = ml_collections.ConfigDict(
        dict(
            enabled=True,
            flip_prob=0.5,
            crop_scale_min=0.5,
            crop_scale_max=1.0,
            crop_ratio_min=3 / 4,
            crop_ratio_max=4 / 3,
            crop_sampler=config_dict.placeholder(str),  # "torchvision" | "tf"
            brightness=config_dict.placeholder(float),
            contrast=config_dict.placeholder(float),
            saturation=config_dict.placeholder(float),
            hue=config_dict.placeholder(float),
        )
    )
    c.mix = ml_collections.ConfigDict(
        dict(
            enabled=config_dict.placeholder(bool),
            mixup_alpha=0.8,
            cutmix_alpha=1.0,
            prob=1.0,
            switch_prob=0.5,
            label_smoothing=config_dict.placeholder(float),
        )
    )
    # True: the host only reads and decodes (uint8 clips at stored_size, labels); flip, random
    # resized crop, colour jitter, normalisation and mixup/cutmix run inside the jitted train step
    # (ifdd_jax/device_augment.py, same distributions). Evaluation is the same either way.
    c.augment_on_device = False
    # S0 of the stored clips with augment_on_device; 0 = image_size. Frames of another size are
    # resized once on the host (short side S0, centre crop, as evaluation does).
    c.stored_size = 0
    c.shuffle_buffer = 1024
    c.num_parallel_calls = -1  # tf.data threads; -1 = TF's default pool
    c.prefetch = 2
    return c


# (section, field) -> value per flavor, for the fields left as placeholders in _common.
FLAVOR_DATA_DEFAULTS = {
    "paper": {
        ("augment", "crop_sampler"): "tf",
        ("augment", "brightness"): 0.0,
        ("augment", "contrast"): 0.0,
        ("augment", "saturation"): 0.0,
        ("augment", "hue"): 0.0,
        ("mix", "enabled"): False,
        ("mix", "label_smoothing"): 0.0,
    },
    "reference": {
        ("augment", "crop_sampler"): "torchvision",
        ("augment", "brightness"): 0.4,
        ("augment", "contrast"): 0.4,
        ("augment", "saturation"): 0.4,
        ("augment", "hue"): 0.4,
        ("mix", "enabled"): True,
        ("mix", "label_smoothing"): 0.1,
    },
}


def resolve_flavor_defaults(cfg: ml_collections.ConfigDict, flavor: str) -> dict:
    """Fills the flavor-dependent fields of a data config that are still unset (None), in place.

    Returns {"augment.brightness": value, ...} of the fields it filled; fields the user set are
    kept as they are.
    """
    if flavor not in FLAVOR_DATA_DEFAULTS:
        raise ValueError(f"flavor must be one of {sorted(FLAVOR_DATA_DEFAULTS)}, got {flavor!r}")
    filled = {}
    for (section, field), value in FLAVOR_DATA_DEFAULTS[flavor].items():
        if cfg[section][field] is None:
            cfg[section][field] = value
            filled[f"{section}.{field}"] = value
    if cfg.get("temporal_sampling") is None:  # per dataset: only MAFW's released loader differs
        released_window = flavor == "reference" and cfg.name == "mafw"
        cfg.temporal_sampling = "strided_window" if released_window else "segments"
        filled["temporal_sampling"] = cfg.temporal_sampling
    return filled


def check_resolved(cfg: ml_collections.ConfigDict) -> None:
    """Raises a ValueError naming the flavor-dependent fields that are still unset."""
    unset = [
        f"data.{section}.{field}"
        for section, field in FLAVOR_DATA_DEFAULTS["paper"]
        if cfg[section][field] is None
    ]
    if unset:
        raise ValueError(
            f"data config fields {', '.join(unset)} are unset: they take the flavor's value "
            "through "
            "data_pipeline.configs.resolve_flavor_defaults(cfg, flavor) (the main job does this), "
            "or set them explicitly"
        )


def get_data_config(name: str, flavor: str | None = None) -> ml_collections.ConfigDict:
    """Data config with defaults for one dataset; with `flavor`, its augmentation resolved too."""
    spec = datasets.get(name)  # a ValueError naming the known datasets
    c = _common(name)
    # The dataset's default clip size (the paper samples 32 frames for MAFW).
    c.num_frames, c.image_size = spec.num_frames, spec.image_size
    if not spec.has_folds:
        c.fold = 0  # one official split (FERV39k) or the data's own (custom); typed for overrides
    if name == "custom":
        # Your own videos (data_pipeline/custom.py): data_dir is a CSV or a folder per class.
        c.classes = config_dict.placeholder(str)  # "a,b,c": names and order; None: sorted labels
        c.test_fraction = 0.2  # of each class, for clips without a split
    elif name == "synthetic":
        c.synthetic = ml_collections.ConfigDict(
            dict(
                num_clips=300,
                num_frames=16,
                size=64,
                seed=0,
                event_frames=3,
                imbalance="dfew",
                label_noise=0.0,
            )
        )
    if flavor is not None:
        resolve_flavor_defaults(c, flavor)
    return c
