"""Device mesh and shardings for data-parallel training with `jax.jit`.

One mesh axis, "data": the batch is split across all devices of all processes, parameters and
optimizer state are replicated. Under `jax.jit` a global batch is one array, so BatchNorm
statistics are computed over the whole global batch (synchronised BN): the loss and the updates
are the same on 1 and on 8 devices, unlike PyTorch DDP, whose BN sees each GPU's share only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over `devices` (all devices of all processes by default).

    The axis type is set to Auto on purpose: since JAX 0.9 `make_mesh` defaults to Explicit axes.
    """
    devices = list(devices) if devices is not None else jax.devices()
    return jax.make_mesh(
        (len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
    )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the data axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch size") -> None:
    devices = mesh.devices.size
    if batch_size % devices:
        raise ValueError(
            f"the global {what} {batch_size} must be a multiple of the number of devices "
            f"({devices}); change config.batch_size / config.eval_batch_size"
        )


def global_batch(
    mesh: Mesh, local: Mapping[str, np.ndarray], keys: Sequence[str]
) -> dict[str, jax.Array]:
    """Assembles one global array per key from each process's local share of the batch
    (`[B_local, ...]` -> `[B_global, ...]` split over the data axis)."""
    sharding = data_sharded(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(local[k])) for k in keys}
