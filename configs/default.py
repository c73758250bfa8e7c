"""The README's main job: a small IFDD-2DCNN on the embedded synthetic diluted-dynamics dataset.

No download: the synthetic set (DFEW's exact layout, 5 folds) is generated in `<workdir>/data` on
the first run (seconds) and reused afterwards. Sized to finish in under 10 minutes on 2 CPU cores:
1200 class-balanced clips of 8 frames at 48 px whose expression rises and falls over the clip
among head motion, talking and blinks; IFDD-2DCNN at half width (MobileNetV2's α = 0.5); no mixup
or colour jitter, so that it learns in a few hundred steps. Everything else (ISSM, LADM, lifting
loss, schedule) is the paper flavor.

The diluted setting that IFDD is about (a brief event among irrelevant motion) is one override
away, `--config.data.synthetic.event_frames=3`; on 2 CPU cores it needs several times more steps
(raise num_epochs) before it rises above chance.

Usage: python -m ifdd_jax.main --config=configs/default.py --workdir=runs/default
"""

from ifdd_jax import config_lib


def get_config(arg=None):
    args = config_lib.parse_arg(arg, fold=1, **config_lib.MODEL_ARGS)
    config = config_lib.base_config("synthetic")
    config.fold = args.fold
    config_lib.finalize_dataset(config, num_frames=8, image_size=48, num_classes=7)
    s = config.data.synthetic
    s.num_clips, s.num_frames, s.size, s.event_frames, s.imbalance = 1200, 8, 48, 8, "none"
    config.data.mix.enabled = False
    a = config.data.augment
    a.brightness = a.contrast = a.saturation = a.hue = 0.0
    a.crop_scale_min = 0.8
    config_lib.apply_model_args(config, args)

    config.batch_size = 16
    config.eval_batch_size = 16
    config.num_epochs = 12
    config.optim.lr = 2e-3
    config.optim.warmup_epochs = 1.0
    config.model.width_multiplier = 0.5
    config.model.head_dropout = 0.2
    config.log_every_steps = 24
    config.eval_every_epochs = 3
    config.checkpoint_every_steps = 200
    return config
