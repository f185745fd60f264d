"""Data parallelism: one `jax.sharding.Mesh` over the devices, the batch split along it, the
training state replicated on every device.

The train step is the same function for 1 and N devices: its inputs carry shardings and XLA's
partitioner (GSPMD) splits the step along the batch, inserting the all-reduce of the gradients and
of BatchNorm's batch statistics. So the global batch, the learning rate and the results do not
depend on the device count (up to the order of float summation), and a checkpoint, which orbax
writes as global arrays, resumes on any number of devices.

Several hosts: every process runs the same command after `jax.distributed.initialize`
(`python -m cooptim.train --distributed`); the mesh then spans every process's devices, each
process feeds the rows of the global batch that its own devices hold (`local_rows`), and only
process 0 writes the run folder's files (orbax coordinates the checkpoints itself).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """The mesh a run trains on, and how host arrays and the state are placed on it."""

    mesh: Mesh

    @classmethod
    def over(cls, devices=None) -> "DataParallel":
        """A 1-D mesh over `devices` (default: every device JAX sees, on every process)."""
        devices = jax.devices() if devices is None else list(devices)
        return cls(Mesh(np.asarray(devices), (AXIS,)))

    @property
    def size(self) -> int:
        return self.mesh.size

    @property
    def is_writer(self) -> bool:
        """Whether this process writes the run folder's files (process 0 only)."""
        return jax.process_index() == 0

    def check_batch(self, batch_size: int, key: str = "data.batch_size") -> str | None:
        """The reason `batch_size` cannot be split over the mesh, or None when it can."""
        if batch_size % self.size:
            return (f"{key}={batch_size} cannot be split over {self.size} devices: use a multiple of "
                    f"{self.size} (the global batch is the same whatever the device count)")
        return None

    def local_rows(self, batch_size: int) -> slice:
        """The rows of a global batch of `batch_size` that this process's devices hold."""
        mine = [i for i, d in enumerate(self.mesh.devices.flat) if d.process_index == jax.process_index()]
        if mine != list(range(mine[0], mine[-1] + 1)):
            raise ValueError("this process's devices are not contiguous along the mesh")
        per_device = batch_size // self.size
        return slice(mine[0] * per_device, (mine[-1] + 1) * per_device)

    def shard(self, local: np.ndarray, global_rows: int) -> jax.Array:
        """This process's rows of a batch (`local_rows`) as one global array split along the mesh."""
        sharding = NamedSharding(self.mesh, PartitionSpec(AXIS))
        return jax.make_array_from_process_local_data(sharding, local, (global_rows, *local.shape[1:]))

    def replicated(self, array: np.ndarray) -> jax.Array:
        """A host array every process holds whole, as one array replicated on every device."""
        return jax.make_array_from_process_local_data(NamedSharding(self.mesh, PartitionSpec()), array)

    def replicate(self, module: nnx.Module) -> None:
        """Places every variable of `module` (the training state) on every device of the mesh."""
        state = nnx.state(module)
        nnx.update(module, jax.device_put(state, NamedSharding(self.mesh, PartitionSpec())))

    def localize(self, module: nnx.Module) -> None:
        """Moves every (replicated) variable of `module` to one device of this process, for the
        single-device code that follows training (the report, the search, the export)."""
        device = jax.local_devices()[0]
        state = nnx.state(module)
        nnx.update(module, jax.tree.map(lambda x: jax.device_put(_one_replica(x), device), state))


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """Joins this process to a multi-process run (`jax.distributed.initialize`), before any other
    JAX call. With no arguments JAX reads them from the cluster's environment (Slurm, Open MPI,
    Kubernetes JobSets, Cloud TPU); otherwise every process gives the same `coordinator`
    (host:port of process 0) and `num_processes`, and its own `process_id`."""
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)


def _one_replica(x):
    """A replicated array's data as this process holds it (a global array spanning other
    processes cannot be read whole)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return x.addressable_data(0)
    return x


def to_host(tree):
    """Replicated results of a step (metrics, losses) as NumPy values on this process."""
    return jax.tree.map(lambda x: np.asarray(_one_replica(x)), tree)
