"""Batched and differentiated solving: problems per second vs GTSAM, gradient cost vs forward.

For each graph and batch size B: B copies of the file's problem whose initial values are
perturbed by Exp(noise), noise ~ N(0, sigma^2) per tangent entry (seeded). Ours solves all B
in one ``jax.jit(jax.vmap(jaxgraph.solve))`` call; GTSAM (LM, default parameters, prior on
pose 0 at the file's value, as in benchmarks/posegraph.py) solves the same B problems one
after another. Both report problems per second of steady-state wall time in this one run;
the costs are compared problem by problem.

Gradient cost (intel): seconds of ``jax.grad`` of a scalar of the solved poses with respect
to the edge measurements, backward="implicit" and backward="unroll" (``tolerance=0``, a fixed
iteration count), over the forward solve's seconds.

    python benchmarks/batched.py [--batches 1,8,64] [--small-batch 512] [--sigma 0.05]
"""

from __future__ import annotations

import os

# One BLAS thread: small factorisations otherwise stall on a busy 2-core machine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "posegraph"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxgraph  # noqa: E402
from _machine import machine_info  # noqa: E402


def perturbed(problem, values, count, sigma, seed):
    (poses,) = values.values()
    tangent_dim = 3 if poses.shape[1] == 3 else 6
    key = jax.random.PRNGKey(seed)
    copies = [
        problem.retract(values, sigma * jax.random.normal(jax.random.fold_in(key, k), (poses.shape[0], tangent_dim), poses.dtype))
        for k in range(count)
    ]
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *copies)


def median_time(fn, repeats):
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def gtsam_sequential(path, batch_values):
    """Solve each copy with GTSAM's LM; returns (seconds in optimize(), final costs)."""
    import gtsam

    three = batch_values.shape[-1] == 7
    graph, initial = gtsam.readG2o(str(path), three)
    if three:
        graph.add(gtsam.PriorFactorPose3(0, initial.atPose3(0), gtsam.noiseModel.Isotropic.Sigma(6, 1e-6)))
    else:
        graph.add(gtsam.PriorFactorPose2(0, initial.atPose2(0), gtsam.noiseModel.Isotropic.Sigma(3, 1e-6)))
    seconds, costs = 0.0, []
    for params in np.asarray(batch_values):
        values = gtsam.Values()
        for k, p in enumerate(params):
            if three:
                values.insert(k, gtsam.Pose3(gtsam.Rot3.Quaternion(*p[:4]), gtsam.Point3(*p[4:])))
            else:
                values.insert(k, gtsam.Pose2(*p))
        optimizer = gtsam.LevenbergMarquardtOptimizer(graph, values, gtsam.LevenbergMarquardtParams())
        start = time.perf_counter()
        result = optimizer.optimize()
        seconds += time.perf_counter() - start
        costs.append(graph.error(result))
    return seconds, np.asarray(costs)


def throughput(name, batch, sigma, repeats, with_gtsam=True):
    path = DATA / f"{name}.g2o"
    problem, values = jaxgraph.io.read_g2o(path)
    batch_values = perturbed(problem, values, batch, sigma, seed=batch)
    solve_batch = jax.jit(jax.vmap(lambda v: jaxgraph.solve(problem, v)))
    start = time.perf_counter()
    out, info = jax.block_until_ready(solve_batch(batch_values))
    first = time.perf_counter() - start
    seconds = median_time(lambda: solve_batch(batch_values), repeats)
    row = {
        "graph": name,
        "batch": batch,
        "ours_seconds": seconds,
        "ours_compile_seconds": max(first - seconds, 0.0),
        "ours_problems_per_second": batch / seconds,
        "ours_cost_min": float(jnp.min(info.cost)),
        "ours_cost_max": float(jnp.max(info.cost)),
        "ours_all_converged": bool(jnp.all(info.converged)),
    }
    if with_gtsam:
        g_seconds, g_costs = gtsam_sequential(path, batch_values[next(iter(batch_values))])
        row.update(
            gtsam_seconds=g_seconds,
            gtsam_problems_per_second=batch / g_seconds,
            ratio_ours_over_gtsam_throughput=(batch / seconds) / (batch / g_seconds),
            max_relative_cost_difference=float(np.max(np.abs(np.asarray(info.cost) - g_costs) / g_costs)),
        )
    print(json.dumps(row), flush=True)
    return row


def gradient_cost(name, repeats, unroll_iterations):
    path = DATA / f"{name}.g2o"
    problem, values = jaxgraph.io.read_g2o(path)
    edges = problem.group("edges")

    def objective(measurement, backward, **kw):
        p = problem.replace_group("edges", edges.replace(measurement=measurement))
        solved, _ = jaxgraph.solve(p, values, backward=backward, **kw)
        return jnp.sum(solved["poses"][:, :2] ** 2)

    forward = jax.jit(lambda m: objective(m, "implicit"))
    implicit = jax.jit(jax.grad(lambda m: objective(m, "implicit")))
    unroll = jax.jit(jax.grad(lambda m: objective(m, "unroll", tolerance=0.0, max_iterations=unroll_iterations)))
    forward_unroll = jax.jit(lambda m: objective(m, "unroll", tolerance=0.0, max_iterations=unroll_iterations))
    m = edges.measurement
    for f in (forward, implicit, unroll, forward_unroll):
        jax.block_until_ready(f(m))
    t_forward = median_time(lambda: forward(m), repeats)
    t_implicit = median_time(lambda: implicit(m), repeats)
    t_unroll = median_time(lambda: unroll(m), repeats)
    t_forward_unroll = median_time(lambda: forward_unroll(m), repeats)
    row = {
        "graph": name,
        "forward_seconds": t_forward,
        "implicit_grad_seconds": t_implicit,
        "implicit_over_forward": t_implicit / t_forward,
        "unroll_iterations": unroll_iterations,
        "forward_fixed_iterations_seconds": t_forward_unroll,
        "unroll_grad_seconds": t_unroll,
        "unroll_over_forward_fixed_iterations": t_unroll / t_forward_unroll,
    }
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graph", default="intel")
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--small-graph", default="smallGrid3D")
    parser.add_argument("--small-batch", type=int, default=512)
    parser.add_argument("--sigma", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = [throughput(args.graph, int(b), args.sigma, args.repeats) for b in args.batches.split(",")]
    if args.small_batch:
        rows += [throughput(args.small_graph, b, args.sigma, args.repeats) for b in (1, 64, args.small_batch)]
    gradients = gradient_cost(args.graph, args.repeats, unroll_iterations=10)
    result = {
        "benchmark": "batched",
        "sigma": args.sigma,
        "dtype": "float64",
        "statistic": "median wall seconds of a compiled batched call (ours); summed optimize() seconds (GTSAM)",
        "machine": machine_info(),
        "throughput": rows,
        "gradient_cost": gradients,
    }
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"batched_{jax.default_backend()}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
