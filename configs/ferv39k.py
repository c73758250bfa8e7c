"""FERV39k with the paper's settings: 16 frames at 224², 7 classes (DFEW's class order),
one official train/test split.

Usage: --config=configs/ferv39k.py:model=ifdd_2dcnn,flavor=paper
"""

from ifdd_jax import config_lib


def get_config(arg=None):
    args = config_lib.parse_arg(arg, **config_lib.MODEL_ARGS)
    config = config_lib.base_config("ferv39k")
    config_lib.finalize_dataset(config, num_frames=16, image_size=224, num_classes=7)
    config_lib.apply_model_args(config, args)
    return config
