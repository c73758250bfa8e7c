"""Your own videos: `--config.data_dir` is a CSV (`path,label[,split]`, paths relative to the CSV)
or a folder per class (`root/<label>/<clip>`); clips are videos or folders of frames
(data_pipeline/custom.py). Class names come from the data (sorted) or `--config.data.classes=a,b,c`,
and the class count follows them. Prepared once into TFRecords like the benchmarks (under
`--config.data.tfds_data_dir`, default ~/tensorflow_datasets), validated on a held-out 4:1 split
of the training clips, tested on the CSV's test rows or a stratified, seeded `data.test_fraction`.

Usage: python -m ifdd_jax.main --config=configs/custom.py --workdir=runs/mine \\
  --config.data_dir=/path/to/clips.csv [--config.init_from=runs/default]
"""

from ifdd_jax import config_lib


def get_config(arg=None):
    args = config_lib.parse_arg(arg, **config_lib.MODEL_ARGS)
    config = config_lib.base_config("custom")
    # num_classes 0: taken from the data when the run starts (input_pipeline.resolve_classes).
    config_lib.finalize_dataset(config, num_frames=16, image_size=112, num_classes=0)
    config.num_epochs = 30
    config.optim.warmup_epochs = 2.0
    config_lib.apply_model_args(config, args)
    return config
