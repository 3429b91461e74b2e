"""A batch sharded over two local CPU processes (JAX's distributed runtime) solves exactly as one process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from . import _multiprocess_worker as worker

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(coordinator, processes, rank, devices, out):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, str(Path(worker.__file__)), coordinator, str(processes), str(rank),
                             str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_processes_match_one_process(tmp_path):
    if not worker.DATA.exists():
        pytest.skip("shared data not available")
    coordinator = f"127.0.0.1:{_free_port()}"
    # two processes of one CPU device each, and the reference: one process of two devices
    # (the same per-device slices of the batch, so the same arithmetic); all with a timeout
    procs = [_start(coordinator, 2, i, 1, tmp_path / f"out{i}.npz") for i in range(2)]
    procs.append(_start("unused:1", 1, 0, 2, tmp_path / "single.npz"))
    try:
        logs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    one = np.load(tmp_path / "single.npz")
    assert int(one["process_count"]) == 1 and int(one["global_devices"]) == 2
    assert one["poses"].shape == (worker.BATCH, 9, 7) and np.all(one["converged"])
    for i in range(2):
        got = np.load(tmp_path / f"out{i}.npz")
        assert int(got["process_count"]) == 2 and int(got["global_devices"]) == 2
        assert int(got["local_devices"]) == 1
        # every process holds the full batch, bit-identical to the single-process run
        np.testing.assert_array_equal(got["poses"], one["poses"])
        np.testing.assert_array_equal(got["cost"], one["cost"])
        np.testing.assert_array_equal(got["iterations"], one["iterations"])
