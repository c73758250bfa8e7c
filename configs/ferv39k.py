"""FERV39k with the paper's settings: 16 frames at 224², 7 classes (DFEW's class order),
one official train/test split.

Usage: --config=configs/ferv39k.py:model=ifdd_2dcnn,flavor=paper
"""

from ifdd_jax import config_lib


def get_config(arg=None):
    args = config_lib.parse_arg(arg, **config_lib.MODEL_ARGS)
    config = config_lib.base_config()
    config.dataset = "ferv39k"
    config.num_classes = 7
    config.input.num_frames = 16
    config.input.image_size = 224
    config_lib.apply_model_args(config, args)
    return config
