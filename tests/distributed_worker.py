"""Worker for test_distributed.py: trains a few steps of a tiny IFDD-2DCNN as one of N
`jax.distributed` processes on 127.0.0.1 (each feeding its share of the global batch), and writes
the losses and a parameter checksum to a JSON file. `train_few_steps` is also called in-process
by the test for the single-process reference.

    python tests/distributed_worker.py OUT.json PORT NUM_PROCESSES PROCESS_ID
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

if __name__ == "__main__":
    jax.config.update("jax_num_cpu_devices", 1)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{sys.argv[2]}",
        num_processes=int(sys.argv[3]),
        process_id=int(sys.argv[4]),
        initialization_timeout=120,
    )

import numpy as np  # noqa: E402

from ifdd_jax import sharding, train_state  # noqa: E402
from ifdd_jax import train_step as step_lib  # noqa: E402
from ifdd_jax.config_lib import load_config_file  # noqa: E402
from ifdd_jax.models import build_model  # noqa: E402
from ifdd_jax.optim import make_optimizer  # noqa: E402

GLOBAL_BATCH, STEPS = 4, 3


def train_few_steps(devices=None) -> dict:
    """Losses and a parameter checksum after STEPS steps on a mesh over `devices` (default: all
    devices of all processes)."""
    config = load_config_file("configs/default.py")
    config.data.num_frames, config.data.image_size = 4, 32
    model = build_model(config)
    tx, _ = make_optimizer(config, steps_per_epoch=10, total_steps=100)
    mesh = sharding.make_mesh(devices)
    state = train_state.create_state(model, tx, config, mesh)
    step = step_lib.make_train_step(model, tx, config, mesh)
    share = GLOBAL_BATCH // jax.process_count()
    lo = jax.process_index() * share
    losses = []
    for i in range(STEPS):
        rng = np.random.default_rng(i)
        labels = rng.integers(0, 7, GLOBAL_BATCH).astype(np.int32)
        full = dict(
            clips=rng.random((GLOBAL_BATCH, 4, 32, 32, 3), dtype=np.float32),
            label=labels,
            target=np.eye(7, dtype=np.float32)[labels],
        )
        local = {k: v[lo : lo + share] for k, v in full.items()}
        state, metrics = step(state, sharding.global_batch(mesh, local, step_lib.TRAIN_KEYS))
        losses.append(float(metrics.loss.compute()))
    leaves = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state.params))]
    return dict(
        losses=losses,
        devices=mesh.devices.size,
        checksum=float(sum(np.abs(x).sum() for x in leaves)),
        first=leaves[0].ravel()[:16].tolist(),
    )


if __name__ == "__main__":
    result = train_few_steps()
    if jax.process_index() == 0:
        with open(sys.argv[1], "w") as f:
            json.dump(result, f)
