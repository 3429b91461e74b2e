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

import socket
import time
from dataclasses import dataclass
from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .compile_cache import entry_point

__all__ = ["RunInfo", "initialize", "batch_mesh", "shard_batch", "sharded_vmap", "gather", "parse_coordinator",
           "wait_for_coordinator"]

AXIS = "batch"


@dataclass(frozen=True)
class RunInfo:
    """Where this process stands in the run.

    Attributes:
      process_index: this process, ``0 <= process_index < process_count``.
      process_count: processes in the run (1 for a plain single-process run).
      local_devices: devices this process drives.
      global_devices: devices of all processes together (the length of the batch mesh).
      platform: the devices' platform, e.g. ``"cpu"`` or ``"gpu"``.
    """

    process_index: int
    process_count: int
    local_devices: int
    global_devices: int
    platform: str


def parse_coordinator(address: str) -> str:
    """Validate ``HOST:PORT`` (e.g. ``10.0.0.1:1234`` or ``127.0.0.1:29500``); returns it
    unchanged, or raises ``ValueError`` (no port, or a port outside 1..65535)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"coordinator address must be HOST:PORT with a port in 1..65535, got {address!r}")
    return address


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = parse_coordinator(address).rpartition(":")
    return host.strip("[]"), int(port)  # "[::1]:1234" names an IPv6 host


# an HTTP/2 client's connection preface and an empty SETTINGS frame (RFC 9113, 3.4 and 6.5)
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _speaks_http2(conn: socket.socket) -> bool:
    """Whether the peer answers an HTTP/2 preface with a SETTINGS frame, as JAX's gRPC
    coordinator does. A port that merely accepts (a proxy, another service) would let JAX's
    client wait out its whole deadline."""
    conn.sendall(_H2_PREFACE)
    head = b""
    while len(head) < 9:  # a frame header: length (3 bytes), type (1), flags (1), stream (4)
        try:
            chunk = conn.recv(9 - len(head))
        except socket.timeout:
            return False
        if not chunk:
            return False
        head += chunk
    return head[3] == 4


def wait_for_coordinator(address: str, timeout_seconds: float = 300.0, *, retry_seconds: float = 0.5) -> None:
    """Wait until a coordinator answers at ``address`` (``HOST:PORT``).

    JAX's client joins a run by a gRPC call whose deadline, when nobody listens, ends the
    whole process with a C++ abort and a message about "another task" dying (or, with the
    default timeout, after five minutes of silence). Probing first (a TCP connection that
    must answer an HTTP/2 greeting, as gRPC servers do) turns an unreachable or mistyped
    coordinator into a Python error that names the address. The
    processes of a cluster job start in any order, so a refused or timed-out connection is
    retried (every ``retry_seconds``) until ``timeout_seconds`` have passed.

    Args:
      address: process 0's coordinator, ``HOST:PORT``.
      timeout_seconds: the longest wait, in seconds (the call returns or raises within about
        this time plus one name lookup).
      retry_seconds: pause between attempts, in seconds.
    Raises:
      ValueError: a malformed address.
      RuntimeError: nothing accepted a connection in time; the message names the address,
        the time waited and the last socket error.
    """
    host, port = _host_port(address)
    start = time.monotonic()
    deadline = start + float(timeout_seconds)
    last = None
    while True:
        left = deadline - time.monotonic()
        try:
            # each attempt is bounded too: a silently dropped SYN (firewall, wrong subnet)
            # would otherwise block for the kernel's connect timeout of minutes
            with socket.create_connection((host, port), timeout=max(0.1, min(5.0, left))) as conn:
                if _speaks_http2(conn):
                    return
                last = "a connection was accepted but no HTTP/2 greeting came back (not a JAX coordinator?)"
        except OSError as exc:
            last = exc
        if time.monotonic() + retry_seconds > deadline:
            break
        time.sleep(retry_seconds)
    raise RuntimeError(
        f"cannot reach the JAX coordinator at {address} (waited {time.monotonic() - start:.0f} s; last "
        f"attempt: {last}). Start process 0 first (it listens on that port) and check the host, the "
        f"port and the firewall")


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
      timeout_seconds: how long to wait, in seconds. A process other than 0 first waits up
        to this long for the coordinator's port to accept connections
        (:func:`wait_for_coordinator`) and raises ``RuntimeError`` naming the address if it
        does not; then JAX waits up to this long again for every process to join (JAX ends
        a process whose run does not assemble in time with an abort, not an exception).
        Process 0 runs the coordinator itself and only has JAX's wait.
    Returns:
      :class:`RunInfo`. A single process (``num_processes=1``) is valid and skips the
      coordination service.
    Raises:
      ValueError: arguments that do not go together, a malformed address or process id.
      RuntimeError: a process other than 0 could not reach the coordinator in time.
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
    if all(given) and int(process_id) != 0:
        # process 0 binds the port; every other process connects to it, and JAX's connect
        # has no clean failure of its own (see wait_for_coordinator); probed before any
        # global JAX setting changes, so a failure leaves this process as it was
        wait_for_coordinator(coordinator, timeout_seconds)
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
    """1-D mesh (axis ``"batch"``) over all devices of all processes (or ``devices``, a
    sequence of ``jax.Device``); its size is the number of devices."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (AXIS,))


def _padded_size(batch: int, mesh: Mesh) -> int:
    k = mesh.devices.size
    return -(-batch // k) * k


def shard_batch(tree, mesh: Mesh | None = None):
    """Global arrays from a batch that every process holds in full (leading axis ``B``).

    The batch is padded to a multiple of the device count by repeating its last problem
    (drop the padding with ``gather(..., batch_size=B)``); each process only transfers
    the rows of its own devices.

    Args:
      tree: a pytree of arrays ``[B, ...]`` (numpy or JAX, any dtype, kept), the same on
        every process.
      mesh: default :func:`batch_mesh`.
    Returns:
      The same pytree of global ``jax.Array`` ``[B', ...]``, ``B'`` the batch rounded up to
      a multiple of the device count, sharded over the mesh's ``"batch"`` axis.
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

    Inputs and outputs are pytrees of arrays whose leading axis is the (global) batch
    ``[B', ...]`` (from :func:`shard_batch`), sharded over ``mesh`` (default
    :func:`batch_mesh`); ``fn`` sees one problem (``[...]``, the batch axis removed). No
    cross-device communication.
    """
    mesh = batch_mesh() if mesh is None else mesh
    spec = PartitionSpec(AXIS)
    return entry_point(jax.shard_map(jax.vmap(fn), mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False))


def gather(tree, batch_size: int | None = None):
    """The full batch as numpy arrays on every process.

    Args:
      tree: a pytree of global arrays ``[B', ...]`` (e.g. :func:`sharded_vmap`'s output).
      batch_size: keep the first ``batch_size`` rows (drops :func:`shard_batch`'s padding);
        default all.
    Returns:
      The pytree as ``numpy.ndarray`` ``[batch_size, ...]``, dtypes kept.
    """
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        tree = multihost_utils.process_allgather(tree, tiled=True)
    out = jax.tree_util.tree_map(np.asarray, tree)
    if batch_size is not None:
        out = jax.tree_util.tree_map(lambda x: x[:batch_size], out)
    return out
