"""What the Colab notebooks (`colab/*.ipynb`) share: the tiny mode CI runs them in, the repository
root, the accelerator in use, and showing the figures.

`IFDD_NOTEBOOK_TINY=1` makes every notebook run at toy size on a CPU (a few steps on 8-frame
32-px clips), so that CI executes them top to bottom in minutes; without it they run at the size
they describe.
"""

from __future__ import annotations

import os

import jax

TINY_ENV = "IFDD_NOTEBOOK_TINY"


def is_tiny() -> bool:
    return os.environ.get(TINY_ENV, "0").strip().lower() in ("1", "true", "yes")


def _is_root(folder: str) -> bool:
    return os.path.isdir(os.path.join(folder, "configs")) and os.path.isdir(
        os.path.join(folder, "ifdd_jax")
    )


def repo_root(start: str | None = None) -> str:
    """The clone holding `configs/` and `ifdd_jax/`: searched upwards from `start` (default: the
    working directory), else the clone this package was installed from (pip install -e)."""
    starts = [
        os.path.abspath(start or os.getcwd()),
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    ]
    for folder in starts:
        while True:
            if _is_root(folder):
                return folder
            parent = os.path.dirname(folder)
            if parent == folder:
                break
            folder = parent
    raise FileNotFoundError(
        f"{starts[0]}: not inside an ifdd_jax clone (no configs/ and ifdd_jax/ above it) and the "
        f"installed package is not a clone; run the notebook's setup cell or cd into the clone"
    )


def accelerator() -> str:
    """'gpu', 'tpu' or 'cpu': the backend JAX uses (it picks a GPU/TPU runtime by itself)."""
    backend = jax.default_backend()
    devices = jax.devices()
    print(
        f"JAX {jax.__version__}: {len(devices)} {backend.upper()} device(s): "
        f"{', '.join(sorted({d.device_kind for d in devices}))}"
    )
    if backend == "cpu":
        print("No GPU/TPU runtime: running on CPU (Runtime > Change runtime type for a GPU).")
    return backend


def shrink(config, *, steps: int = 6, clips: int = 60):
    """The tiny size CI runs at: 8 frames of 32 px, `clips` synthetic clips, `steps` steps,
    validation only at the end. Changes `config` in place and returns it."""
    config.data.num_frames, config.data.image_size = 8, 32
    if config.data.name == "synthetic":
        s = config.data.synthetic
        s.num_clips, s.num_frames, s.size, s.event_frames, s.imbalance = clips, 8, 32, 2, "none"
    config.batch_size = config.eval_batch_size = 8
    config.num_epochs = 1
    config.num_train_steps = steps
    config.eval_every_epochs = 100
    config.checkpoint_every_steps = steps
    config.log_every_steps = 2
    config.optim.warmup_epochs = 0
    return config


def show(path: str, width: int = 900) -> None:
    """Displays a PNG in the notebook (and names it, so a log shows what was written)."""
    print(path)
    try:
        from IPython.display import Image, display  # deferred: IPython exists only in a kernel

        display(Image(filename=path, width=width))
    except ImportError:  # plain Python: the file is written, nothing to display
        pass
