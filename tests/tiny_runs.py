"""The tiny configs shared by the trainer, predict and analysis tests: the default job shrunk to
8 frames at 32 px, and a 6-step run on 60 synthetic clips."""

from ifdd_jax.config_lib import load_config_file


def tiny_config(**overrides):
    """configs/default.py at 8 frames × 32 px; `overrides` set top-level fields."""
    config = load_config_file("configs/default.py")
    config.data.num_frames, config.data.image_size = 8, 32
    for k, v in overrides.items():
        config[k] = v
    return config


def tiny_run_config(data_dir: str, **overrides):
    """A 6-step run on 60 class-balanced synthetic clips kept in `data_dir`, validated only at the
    end, checkpointed every 2 steps; `overrides` set top-level fields."""
    config = tiny_config()
    s = config.data.synthetic
    s.num_clips, s.num_frames, s.size, s.event_frames, s.imbalance = 60, 8, 32, 2, "none"
    config.data_dir = data_dir
    config.batch_size = config.eval_batch_size = 8
    config.num_epochs = 1
    config.num_train_steps = 6
    config.eval_every_epochs = 100  # validate only at the end
    config.checkpoint_every_steps = 2
    config.log_every_steps = 2
    config.optim.warmup_epochs = 0
    for k, v in overrides.items():
        config[k] = v
    return config
