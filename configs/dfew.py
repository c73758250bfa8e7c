"""DFEW with the paper's settings: 16 frames at 224², 7 classes, 5-fold cross validation.

Usage: --config=configs/dfew.py:model=ifdd_2dcnn,flavor=paper,fold=1 (see ifdd_jax/config_lib.py
for every argument), then --config.x=y for any single field.
"""

from ifdd_jax import config_lib


def get_config(arg=None):
    args = config_lib.parse_arg(arg, fold=1, **config_lib.MODEL_ARGS)
    config = config_lib.base_config("dfew")
    config.fold = args.fold
    config_lib.finalize_dataset(config, num_frames=16, image_size=224, num_classes=7)
    config_lib.apply_model_args(config, args)
    return config
