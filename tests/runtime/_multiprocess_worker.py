"""One process of a multi-process batched solve (run by test_multiprocess.py).

Usage: python _multiprocess_worker.py COORDINATOR NUM_PROCESSES PROCESS_ID OUT.npz
(``NUM_PROCESSES`` 1 runs alone, without the coordination service; COORDINATOR is then unused).
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "posegraph" / "tinyGrid3D.g2o"
BATCH = 5  # odd: exercises the padding to a multiple of the device count


def batch_problem():
    """tinyGrid3D and 6 copies of its values moved by Exp(N(0, 0.05^2)) (same on every process)."""
    import jax.numpy as jnp

    import jaxgraph

    problem, values = jaxgraph.io.read_g2o(DATA, dtype=jnp.float64)
    keys = jax.random.split(jax.random.PRNGKey(7), BATCH)
    noise = jax.vmap(lambda k: 0.05 * jax.random.normal(k, (9, 6), jnp.float64))(keys)
    return problem, jax.vmap(lambda d: problem.retract(values, d))(noise)


def main(coordinator, num_processes, process_id, out):
    from jaxgraph import distributed

    run = distributed.initialize(coordinator, int(num_processes), int(process_id), timeout_seconds=120)
    import numpy as np

    import jaxgraph

    problem, batch = batch_problem()
    solve_all = distributed.sharded_vmap(lambda v: jaxgraph.solve(problem, v))
    res, info = solve_all(distributed.shard_batch(batch))
    res, cost, iters, conv = distributed.gather((res, info.cost, info.iterations, info.converged), batch_size=BATCH)
    np.savez(out, poses=res["poses"], cost=cost, iterations=iters, converged=conv, process_count=run.process_count,
             global_devices=run.global_devices, local_devices=run.local_devices)


if __name__ == "__main__":
    main(*sys.argv[1:5])
