"""Train and eval throughput of a configured model at its full input size, on synthetic tensors
(no input pipeline), on whatever devices JAX sees.

    python bench/train_throughput.py --config=configs/dfew.py:model=ifdd_2dcnn --batch=2

prints `compile s:`, `train clips/s:`, `eval clips/s:` and `peak MB:` (device memory where the
backend reports it, otherwise the process's peak resident memory). Timings exclude compilation
and use `block_until_ready`. With `--config.data.augment_on_device=true` the train step gets
uint8 clips and labels and its time includes the on-device augmentation and mixing (the flavor's
recipe, `ifdd_jax/device_augment.py`).
"""

from __future__ import annotations

import resource
import sys
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from ifdd_jax import evaluate, recipe, sharding, train_state
from ifdd_jax import train_step as step_lib
from ifdd_jax.models import build_model
from ifdd_jax.optim import make_optimizer

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/dfew.py", "Config file (file.py:args).")
flags.DEFINE_integer("batch", 2, "Global batch size.")
flags.DEFINE_integer("steps", 5, "Timed steps (after one warm-up step).")


def peak_mb() -> float:
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def main(argv) -> None:
    del argv
    config = FLAGS.config
    batch = FLAGS.batch
    mesh = sharding.make_mesh()
    sharding.check_batch_size(batch, mesh)
    config.batch_size = batch
    model = build_model(config)
    tx, _ = make_optimizer(config, steps_per_epoch=100, total_steps=10_000)
    t, s, k = config.data.num_frames, config.data.image_size, config.num_classes
    rng = np.random.default_rng(0)
    labels = rng.integers(0, k, batch).astype(np.int32)
    if step_lib.augments_on_device(config):
        recipe.resolve(config)  # the flavor's jitter and mixing, which the step now applies
        stored = config.data.stored_size or s
        clips = rng.integers(0, 256, (batch, t, stored, stored, 3), dtype=np.uint8)
    else:
        clips = rng.random((batch, t, s, s, 3), dtype=np.float32)
    train_batch = sharding.global_batch(
        mesh,
        dict(clips=clips, label=labels, target=np.eye(k, dtype=np.float32)[labels]),
        step_lib.train_keys(config),
    )
    eval_batch = sharding.global_batch(
        mesh,
        dict(
            clips=rng.random((batch, 1, t, s, s, 3), dtype=np.float32),
            label=labels,
            mask=np.ones(batch, bool),
        ),
        evaluate.EVAL_KEYS,
    )

    start = time.perf_counter()
    state = train_state.create_state(model, tx, config, mesh)
    step = step_lib.make_train_step(model, tx, config, mesh)
    state, _ = step(state, train_batch)
    jax.block_until_ready(state)
    eval_fn = evaluate._compiled_eval_step(model, mesh, train_state.compute_dtype(config))
    jax.block_until_ready(eval_fn(state.variables(), eval_batch))
    compile_s = time.perf_counter() - start

    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        state, _ = step(state, train_batch)
    jax.block_until_ready(state)
    train_rate = FLAGS.steps * batch / (time.perf_counter() - start)

    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        out = eval_fn(state.variables(), eval_batch)
    jax.block_until_ready(out)
    eval_rate = FLAGS.steps * batch / (time.perf_counter() - start)

    print(
        f"model: {config.model_name} ({config.flavor}), input [{batch}, {t}, {s}, {s}, 3], "
        f"{jax.device_count()} x {jax.devices()[0].device_kind}"
        + (", augmented in the step" if step_lib.augments_on_device(config) else "")
    )
    print(f"compile s: {compile_s:.1f}")
    print(f"train clips/s: {train_rate:.3f}")
    print(f"eval clips/s: {eval_rate:.3f}")
    print(f"peak MB: {peak_mb():.0f}")
    sys.stdout.flush()


if __name__ == "__main__":
    app.run(main)
