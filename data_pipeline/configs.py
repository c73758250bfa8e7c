"""Data configs: `get_data_config(name)` for "dfew", "ferv39k", "mafw" and "synthetic".

Every field is typed (optional ones are placeholders), so `--config.data.<field>=<value>`
overrides work with a locked config. Defaults follow reference-ifdd.md §5–§6 and
datasets-and-anchors.md.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def _common(name: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = name
  # Root of the official layout (manual_dir). For "synthetic": where generated trees are kept
  # (default ~/.cache/ifdd_jax).
  c.data_dir = config_dict.placeholder(str)
  # Where prepared TFRecords go; None = TFDS's default (~/tensorflow_datasets), or
  # <synthetic tree>/tfds for the synthetic set.
  c.tfds_data_dir = config_dict.placeholder(str)
  c.source = "tfds"            # "tfds": prepare once, read TFRecords; "files": read the tree
  c.fold = 1                   # 1..5 (DFEW, MAFW, synthetic); ignored for FERV39k
  c.frame_version = "16f"      # DFEW: "16f" (clip_224x224_16f), "all" (clip_224x224), "video"
  c.prefer = "frames"          # MAFW: "frames" (data/frames) or "video" (data/clips)
  c.max_stored_frames = 0      # > 0: keep that many frames spread over long clips when preparing
  c.num_frames = 16            # T
  c.image_size = 224           # H = W
  c.num_eval_views = 1         # V temporal views per clip at evaluation (logits averaged)
  c.short_clip_policy = "stretch"  # clips with fewer than T frames: "stretch" | "loop" | "skip"
  c.val_protocol = "holdout"   # "holdout": stratified split of the training fold; "test": val = test
  c.val_fraction = 0.2         # 4:1 train/val as in the paper
  c.split_seed = 0
  c.on_bad_clip = "skip"       # "skip": counted and reported; "error": stop at the first bad clip
  c.validate_frames = True     # decode every JPEG / probe every video once when preparing
  c.normalization = "unit"     # "unit": [0, 1] as the authors; "imagenet": mean/std
  c.augment = ml_collections.ConfigDict(dict(
      enabled=True, flip_prob=0.5, crop_scale_min=0.5, crop_scale_max=1.0,
      crop_ratio_min=3 / 4, crop_ratio_max=4 / 3,
      brightness=0.4, contrast=0.4, saturation=0.4, hue=0.4))
  c.mix = ml_collections.ConfigDict(dict(
      enabled=True, mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5,
      label_smoothing=0.1))
  c.shuffle_buffer = 1024
  c.num_parallel_calls = -1    # tf.data threads; -1 = TF's default pool
  c.prefetch = 2
  return c


def get_data_config(name: str) -> ml_collections.ConfigDict:
  """Data config with defaults for one dataset."""
  c = _common(name)
  if name == "dfew":
    pass
  elif name == "ferv39k":
    c.fold = 0  # one official split; kept typed for overrides
  elif name == "mafw":
    c.num_frames = 32  # the paper samples 32 frames for MAFW
  elif name == "synthetic":
    c.image_size = 64
    c.synthetic = ml_collections.ConfigDict(dict(
        num_clips=300, num_frames=16, size=64, seed=0, event_frames=3, imbalance="dfew",
        label_noise=0.0))
  else:
    raise ValueError(f"unknown dataset {name!r}; choose dfew, ferv39k, mafw or synthetic")
  return c
