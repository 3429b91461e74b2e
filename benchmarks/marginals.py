"""Marginal covariances of every pose: jaxgraph (selected inversion) vs GTSAM's ``Marginals``.

Both at the same point, GTSAM's Levenberg-Marquardt optimum of the graph with a prior on
pose 0 (isotropic sigma 1e-6, as ``jaxgraph.io.read_g2o`` adds), float64.  GTSAM's time is
``Marginals(graph, values)`` (linearise + sparse Cholesky) plus ``marginalCovariance`` for
every pose; ours is a compiled ``jaxgraph.marginals(problem, values)`` call (linearise,
supernodal Cholesky, selected inversion, all poses), median of ``--repeats`` calls; the
first call's extra time is reported as compile time.  Errors: per pose
``||S_ours - S_gtsam||_F / ||S_gtsam||_F`` (GTSAM's Pose3 covariance reordered to our
translation-first tangent).

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/marginals.py [--files intel,smallGrid3D,sphere2500]
Writes benchmarks/results/marginals_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "posegraph"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_info  # noqa: E402


def gtsam_case(path, three):
    import gtsam
    import numpy as np

    graph, initial = gtsam.readG2o(str(path), three)
    if three:
        graph.add(gtsam.PriorFactorPose3(0, initial.atPose3(0), gtsam.noiseModel.Isotropic.Sigma(6, 1e-6)))
    else:
        graph.add(gtsam.PriorFactorPose2(0, initial.atPose2(0), gtsam.noiseModel.Isotropic.Sigma(3, 1e-6)))
    result = gtsam.LevenbergMarquardtOptimizer(graph, initial, gtsam.LevenbergMarquardtParams()).optimize()
    keys = sorted(result.keys())
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        marg = gtsam.Marginals(graph, result)
        covs = np.stack([marg.marginalCovariance(k) for k in keys])
        times.append(time.perf_counter() - t0)
    if three:
        rows = []
        for k in keys:
            p = result.atPose3(k)
            q, t = p.rotation().toQuaternion(), p.translation()
            rows.append([q.w(), q.x(), q.y(), q.z(), t[0], t[1], t[2]])
        perm = np.r_[3:6, 0:3]
        covs = covs[:, perm][:, :, perm]
    else:
        rows = [[result.atPose2(k).x(), result.atPose2(k).y(), result.atPose2(k).theta()] for k in keys]
    return np.array(rows), covs, min(times)


def run(name, repeats):
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxgraph

    path = DATA / f"{name}.g2o"
    problem, _ = jaxgraph.io.read_g2o(path, dtype=jnp.float64)
    three = problem.variables[0].kind == "SE3"
    rows, ref, t_gtsam = gtsam_case(path, three)
    values = {"poses": jnp.asarray(rows)}
    t0 = time.perf_counter()
    covs = jax.block_until_ready(jaxgraph.marginals(problem, values))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        covs = jax.block_until_ready(jaxgraph.marginals(problem, values))
        times.append(time.perf_counter() - t0)
    got = np.asarray(covs["poses"])
    rel = np.linalg.norm(got - ref, axis=(1, 2)) / np.linalg.norm(ref, axis=(1, 2))
    steady = statistics.median(times)
    st = problem.structure
    plan = jaxgraph.linear.selected_inverse_plan(st.num_blocks, st.block_dim, st.off_rows, st.off_cols)
    return {
        "poses": int(problem.variables[0].count),
        "kind": problem.variables[0].kind,
        "max_relative_error": float(rel.max()),
        "median_relative_error": float(np.median(rel)),
        "jaxgraph_seconds": steady,
        "jaxgraph_seconds_all_runs": times,
        "jaxgraph_compile_seconds": max(first - steady, 0.0),
        "gtsam_seconds": t_gtsam,
        "supernodal_tiers": plan.structure.stats["tiers"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", default="intel,smallGrid3D,sphere2500", help="comma-separated graph names")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per graph (median reported)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "marginals_cpu.json"),
                    help="output JSON")
    args = ap.parse_args()
    import jax

    jax.config.update("jax_enable_x64", True)
    from importlib.metadata import version

    info = machine_info()
    info["gtsam_version"] = version("gtsam")
    info["openblas_num_threads"] = os.environ.get("OPENBLAS_NUM_THREADS")
    info["load_average_1_5_15min_start"] = os.getloadavg()
    results = {}
    for name in args.files.split(","):
        results[name] = run(name, args.repeats)
        print(name, json.dumps(results[name]), flush=True)
    info["load_average_1_5_15min_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps({"machine": info, "results": results}, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
