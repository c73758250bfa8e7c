"""The tiny configs shared by the trainer, predict and analysis tests: the default job shrunk to
8 frames at 32 px, and a 6-step run on 60 synthetic clips, trained once per session by `tiny_run`
(the `run_dir` fixture of tests/conftest.py)."""

import fcntl
import os
import shutil

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


def shared_run_config(data_dir: str, **overrides):
    """The shared 6-step run, checkpointed only at its end."""
    return tiny_run_config(data_dir, **{"checkpoint_every_steps": 6, **overrides})


def tiny_run(tmp_path_factory, name: str = "tiny_run", **overrides) -> str:
    """A workdir trained for 6 steps (config.json, checkpoints, events), made once per session:
    under pytest-xdist in the folder all workers share, behind a file lock, so whichever worker
    comes second waits for the first and finds it on disk."""
    from ifdd_jax import train

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by the workers of this run
    workdir = str(base / name)
    with open(str(base / f"{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if os.path.isfile(os.path.join(workdir, "results.json")):
            return workdir
        shutil.rmtree(workdir, ignore_errors=True)
        config = shared_run_config(str(base / "tiny_synthetic"), **overrides)
        train.write_config(config, workdir)
        train.train_and_evaluate(config, workdir)
    return workdir
