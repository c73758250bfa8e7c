"""MAFW with the paper's settings: 32 frames at 224², 11 classes, 5-fold cross validation.

Usage: --config=configs/mafw.py:model=ifdd_2dcnn,flavor=paper,fold=1
"""

from ifdd_jax import config_lib


def get_config(arg=None):
    args = config_lib.parse_arg(arg, fold=1, **config_lib.MODEL_ARGS)
    config = config_lib.base_config("mafw")
    config.fold = args.fold
    config_lib.finalize_dataset(config, num_frames=32, image_size=224, num_classes=11)
    config_lib.apply_model_args(config, args)
    return config
