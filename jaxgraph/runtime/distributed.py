"""Batches of problems over every device of a multi-process JAX run.

One process per host (or per GPU) calls :func:`initialize`; then every process runs the
same program::

    import jaxgraph
    from jaxgraph import distributed

    run = distributed.initialize()                  # SLURM / MPI autodetect, or pass
                                                    # coordinator, num_processes, process_id
    problem, values = jaxgraph.io.read_g2o("intel.g2o")
    batch = ...                                     # the same [B, ...] values on every process
    solve_all = distributed.sharded_vmap(lambda v: jaxgraph.solve(problem, v))
    out, info = solve_all(distributed.shard_batch(batch))   # global arrays, sharded over devices
    out, info = distributed.gather((out, info), batch_size=B)  # numpy, full batch, every process

The batch axis is split over all devices of all processes (``jax.devices()``, axis
``"batch"``); each device solves its slice with ``vmap`` inside ``shard_map``, so there is
no communication during the solve (every device runs its own loop and stops when its own
problems have converged) and each problem's result equals its single-process solve.
Communication happens only in :func:`gather` (an all-gather; on CPU through JAX's gloo
collectives).  Launching on a cluster: docs/batching.md; ``jaxgraph solve --batch``'s
``--distributed``/``--coordinator`` flags are read by ``jaxgraph.cli.cluster``, which calls
:func:`initialize`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .compile_cache import entry_point

__all__ = ["RunInfo", "initialize", "batch_mesh", "shard_batch", "sharded_vmap", "gather", "parse_coordinator"]

AXIS = "batch"


@dataclass(frozen=True)
class RunInfo:
    """Where this process stands in the run."""

    process_index: int
    process_count: int
    local_devices: int
    global_devices: int
    platform: str


def parse_coordinator(address: str) -> str:
    """Validate ``HOST:PORT`` (e.g. ``10.0.0.1:1234`` or ``127.0.0.1:29500``); returns it unchanged."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"coordinator address must be HOST:PORT with a port in 1..65535, got {address!r}")
    return address


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_device_ids=None,
               timeout_seconds: int = 300) -> RunInfo:
    """Join a multi-process JAX run (call once per process, before any other JAX work).

    Args:
      coordinator: ``HOST:PORT`` of process 0's coordination service; ``None`` (with the
        other two ``None``) lets JAX detect the cluster (SLURM, Open MPI, ...).
      num_processes: processes in the run.
      process_id: this process, ``0 <= process_id < num_processes``.
      local_device_ids: devices of this host that this process uses (e.g. one GPU per
        process: ``[int(os.environ["SLURM_LOCALID"])]``); default all.
      timeout_seconds: how long to wait for the other processes.
    Returns:
      :class:`RunInfo`. A single process (``num_processes=1``) is valid and skips the
      coordination service.
    """
    given = [x is not None for x in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError("give all of coordinator, num_processes and process_id, or none of them "
                         "(cluster autodetection)")
    if all(given):
        parse_coordinator(coordinator)
        if int(num_processes) < 1:
            raise ValueError(f"num_processes must be >= 1, got {num_processes}")
        if not 0 <= int(process_id) < int(num_processes):
            raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}")
    if "jax_cpu_collectives_implementation" in jax.config.values:
        # cross-process collectives on CPU (used by gather); a no-op for GPU/TPU devices
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if not (all(given) and int(num_processes) == 1):
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, local_device_ids=local_device_ids,
                                   initialization_timeout=int(timeout_seconds))
    return RunInfo(process_index=jax.process_index(), process_count=jax.process_count(),
                   local_devices=jax.local_device_count(), global_devices=jax.device_count(),
                   platform=jax.devices()[0].platform)


def batch_mesh(devices=None) -> Mesh:
    """1-D mesh (axis ``"batch"``) over all devices of all processes (or ``devices``)."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (AXIS,))


def _padded_size(batch: int, mesh: Mesh) -> int:
    k = mesh.devices.size
    return -(-batch // k) * k


def shard_batch(tree, mesh: Mesh | None = None):
    """Global arrays from a batch that every process holds in full (leading axis ``B``).

    The batch is padded to a multiple of the device count by repeating its last problem
    (drop the padding with ``gather(..., batch_size=B)``); each process only transfers
    the rows of its own devices.
    """
    mesh = batch_mesh() if mesh is None else mesh
    sharding = NamedSharding(mesh, PartitionSpec(AXIS))
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        raise ValueError("shard_batch: empty batch")
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"shard_batch: every leaf needs the same leading batch axis, got sizes {sorted(map(str, sizes))}")
    batch = sizes.pop()
    size = _padded_size(batch, mesh)

    def one(x):
        x = np.asarray(x)
        if size != batch:
            x = np.concatenate([x, np.repeat(x[-1:], size - batch, axis=0)])
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree_util.tree_map(one, tree)


def sharded_vmap(fn: Callable, mesh: Mesh | None = None) -> Callable:
    """``jit(shard_map(vmap(fn)))``: every device maps ``fn`` over its slice of the batch.

    Inputs and outputs are pytrees of arrays whose leading axis is the (global) batch,
    sharded over ``mesh`` (default :func:`batch_mesh`); no cross-device communication.
    """
    mesh = batch_mesh() if mesh is None else mesh
    spec = PartitionSpec(AXIS)
    return entry_point(jax.shard_map(jax.vmap(fn), mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False))


def gather(tree, batch_size: int | None = None):
    """The full batch as numpy arrays on every process (first ``batch_size`` rows)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        tree = multihost_utils.process_allgather(tree, tiled=True)
    out = jax.tree_util.tree_map(np.asarray, tree)
    if batch_size is not None:
        out = jax.tree_util.tree_map(lambda x: x[:batch_size], out)
    return out
