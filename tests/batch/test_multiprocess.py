"""A batch sharded over two local CPU processes (JAX's distributed runtime) solves exactly as one process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxgraph
from jaxgraph import distributed

from . import _multiprocess_worker as worker

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
    if not worker.DATA.exists():
        pytest.skip("shared data not available")
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    coordinator = f"127.0.0.1:{_free_port()}"
    procs = [subprocess.Popen([sys.executable, str(Path(worker.__file__)), coordinator, "2", str(i),
                               str(tmp_path / f"out{i}.npz")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        logs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    # the same program in this process: 4 local devices (tests/conftest.py), no coordinator
    assert jax.device_count() == 4
    problem, batch = worker.batch_problem()
    solve_all = distributed.sharded_vmap(lambda v: jaxgraph.solve(problem, v))
    res, info = solve_all(distributed.shard_batch(batch))
    one = distributed.gather((res, info.cost, info.converged), batch_size=worker.BATCH)
    assert np.all(one[2])
    for i in range(2):
        got = np.load(tmp_path / f"out{i}.npz")
        assert int(got["process_count"]) == 2 and int(got["global_devices"]) == 4
        assert int(got["local_devices"]) == 2
        # every process holds the full batch, bit-identical to the single-process run
        # (per-problem equality with unsharded vmap is tests/batch/test_batched.py's job)
        np.testing.assert_array_equal(got["poses"], one[0]["poses"])
        np.testing.assert_array_equal(got["cost"], one[1])
