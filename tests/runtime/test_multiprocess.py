"""A batch sharded over two local CPU processes (JAX's distributed runtime) solves exactly as one process."""

from __future__ import annotations

import json
import os
import re
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


def _one_process_two_devices():
    """The reference, here in the test's process: two of its CPU devices (tests/conftest.py
    forces four) as the batch mesh, so each device gets the slice it gets in the two-process
    run (the same arithmetic: the same program for a two-device mesh)."""
    import jax

    import jaxgraph
    from jaxgraph import distributed

    mesh = distributed.batch_mesh(jax.devices()[:2])
    problem, batch = worker.batch_problem()
    solve_all = distributed.sharded_vmap(lambda v: jaxgraph.solve(problem, v), mesh)
    res, info = solve_all(distributed.shard_batch(batch, mesh))
    res, cost, iters, conv = distributed.gather((res, info.cost, info.iterations, info.converged), batch_size=worker.BATCH)
    return {"poses": res["poses"], "cost": cost, "iterations": iters, "converged": conv}


def test_two_processes_match_one_process(tmp_path):
    if not worker.DATA.exists():
        pytest.skip("shared data not available")
    coordinator = f"127.0.0.1:{_free_port()}"
    # two processes of one CPU device each, with a timeout; the reference (one process of two
    # devices) is computed here meanwhile
    procs = [_start(coordinator, 2, i, 1, tmp_path / f"out{i}.npz") for i in range(2)]
    try:
        one = _one_process_two_devices()
        logs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    assert one["poses"].shape == (worker.BATCH, 9, 7) and np.all(one["converged"])
    for i in range(2):
        got = np.load(tmp_path / f"out{i}.npz")
        assert int(got["process_count"]) == 2 and int(got["global_devices"]) == 2
        assert int(got["local_devices"]) == 1
        # every process holds the full batch, bit-identical to the single-process run
        np.testing.assert_array_equal(got["poses"], one["poses"])
        np.testing.assert_array_equal(got["cost"], one["cost"])
        np.testing.assert_array_equal(got["iterations"], one["iterations"])


@pytest.mark.parametrize("flags, message", [
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "0"], "need --batch"),
    (["--batch", "2", "--coordinator", "127.0.0.1:1"], "go together"),
    (["--batch", "2", "--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "HOST:PORT"),
    (["--batch", "2", "--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"], r"\[0, 2\)"),
    (["--batch", "2", "--distributed", "auto", "--process-id", "0"], "drop --coordinator"),
])
def test_cli_distributed_flag_errors(flags, message, capsys):
    from jaxgraph.cli import main

    assert main(["solve", str(worker.DATA), *flags]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err


@pytest.mark.slow
def test_cli_two_processes_match_one_process(tmp_path):
    """``jaxgraph solve --batch`` as two processes of a run: the same report as one process."""
    if not worker.DATA.exists():
        pytest.skip("shared data not available")
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    base = [sys.executable, "-m", "jaxgraph.cli", "solve", str(worker.DATA), "--batch", "4", "--noise", "0.05",
            "--no-compile-cache"]
    coordinator = f"127.0.0.1:{_free_port()}"
    procs = [subprocess.Popen(base + ["--report", str(tmp_path / f"r{i}.json"), "--coordinator", coordinator,
                                      "--num-processes", "2", "--process-id", str(i)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    env2 = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    single = subprocess.run(base + ["--report", str(tmp_path / "single.json")], env=env2, capture_output=True,
                            text=True, timeout=600)
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert single.returncode == 0, single.stderr[-3000:]
    assert all(p.returncode == 0 for p in procs), logs
    two = json.loads((tmp_path / "r0.json").read_text())
    one = json.loads((tmp_path / "single.json").read_text())
    assert not (tmp_path / "r1.json").exists()  # process 0 alone writes
    assert two["processes"] == 2 and two["devices"] == 2
    assert two["final_cost"]["per_problem"] == pytest.approx(one["final_cost"]["per_problem"], rel=1e-12)
    assert two["iterations"] == one["iterations"]
