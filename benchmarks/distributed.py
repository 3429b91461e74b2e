"""A batch solved by 2 processes (JAX distributed runtime, local CPU) vs 1 process.

Every configuration solves the same ``--batch`` perturbed copies of a g2o graph (values
moved by ``Exp(N(0, sigma^2))``, same seed) with ``jaxgraph.distributed`` (``shard_map`` of
``vmap(jaxgraph.solve)`` over all devices, then an all-gather), float64:

* ``2x1``: two processes of one CPU device each, coordinator on 127.0.0.1;
* ``1x1``: one process, one device.

(One device per process: with several forced host devices in one process, the batched
LAPACK kernels of devices running at the same time wait on each other in XLA:CPU's shared
thread pool; on this 2-core machine intel's sparse Cholesky deadlocked that way with two
processes of two devices each.)

Reported: the largest difference of any pose parameter and of any final cost between the
configurations (0.0 = bit-identical), iterations, and the compiled solve's wall time.

Usage: python benchmarks/distributed.py [--graph intel] [--batch 8]
Writes benchmarks/results/distributed_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "posegraph"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def worker(coordinator, num_processes, process_id, graph, batch, sigma, out):
    import jax

    jax.config.update("jax_enable_x64", True)
    from jaxgraph import distributed

    run = distributed.initialize(coordinator, int(num_processes), int(process_id))
    import jax.numpy as jnp
    import numpy as np

    import jaxgraph

    batch, sigma = int(batch), float(sigma)
    problem, values = jaxgraph.io.read_g2o(DATA / f"{graph}.g2o", dtype=jnp.float64)
    n, d = problem.structure.num_blocks, problem.structure.block_dim
    keys = jax.random.split(jax.random.PRNGKey(0), batch)
    copies = jax.vmap(lambda k: problem.retract(values, sigma * jax.random.normal(k, (n, d), jnp.float64)))(keys)
    solve_all = distributed.sharded_vmap(lambda v: jaxgraph.solve(problem, v))
    sharded = distributed.shard_batch(copies)
    times = []
    for _ in range(2):  # first call compiles
        t0 = time.perf_counter()
        res, info = jax.block_until_ready(solve_all(sharded))
        times.append(time.perf_counter() - t0)
    res, cost, iters = distributed.gather((res, info.cost, info.iterations), batch_size=batch)
    if run.process_index == 0:
        np.savez(out, poses=res["poses"], cost=cost, iterations=iters, first=times[0], second=times[1],
                 global_devices=run.global_devices, process_count=run.process_count)


def launch(processes, devices, args, out):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        coordinator = f"127.0.0.1:{s.getsockname()[1]}"
    env = dict(os.environ, JAX_PLATFORMS="cpu", OPENBLAS_NUM_THREADS="1",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", coordinator, str(processes), str(i),
                               args.graph, str(args.batch), str(args.sigma), str(out)], env=env)
             for i in range(processes)]
    for p in procs:
        if p.wait(timeout=3000) != 0:
            raise SystemExit(f"worker failed with exit code {p.returncode}")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(*sys.argv[2:9])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graph", default="intel", help="graph name in ../shared/data/posegraph")
    ap.add_argument("--batch", type=int, default=8, help="problems in the batch")
    ap.add_argument("--sigma", type=float, default=0.01, help="perturbation std. dev.")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "distributed_cpu.json"),
                    help="output JSON")
    args = ap.parse_args()
    import tempfile

    import numpy as np

    from _machine import machine_info

    load0 = os.getloadavg()
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (p, dv) in {"2x1": (2, 1), "1x1": (1, 1)}.items():
            launch(p, dv, args, Path(tmp) / f"{name}.npz")
            res[name] = dict(np.load(Path(tmp) / f"{name}.npz"))
            print(name, "done", flush=True)
    ref = res["1x1"]
    configs = {}
    for name, r in res.items():
        configs[name] = {
            "process_count": int(r["process_count"]),
            "global_devices": int(r["global_devices"]),
            "max_abs_pose_difference_vs_1x1": float(np.max(np.abs(r["poses"] - ref["poses"]))),
            "max_abs_cost_difference_vs_1x1": float(np.max(np.abs(r["cost"] - ref["cost"]))),
            "bit_identical_to_1x1": bool(np.array_equal(r["poses"], ref["poses"]) and np.array_equal(r["cost"], ref["cost"])),
            "final_costs": r["cost"].tolist(),
            "iterations": r["iterations"].tolist(),
            "first_call_seconds": float(r["first"]),
            "solve_seconds": float(r["second"]),
        }
    info = machine_info()
    info["load_average_1_5_15min_start"] = load0
    info["load_average_1_5_15min_end"] = os.getloadavg()
    out = {"machine": info, "graph": args.graph, "batch": args.batch, "sigma": args.sigma, "configs": configs}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(configs, indent=1))


if __name__ == "__main__":
    main()
