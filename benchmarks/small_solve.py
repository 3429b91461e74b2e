"""Where a small solve's time goes: tinyGrid3D (9 poses) against GTSAM, split into parts.

``benchmarks/posegraph.py`` times ``jaxgraph.solve`` against GTSAM's LM ``optimize()``; on
tinyGrid3D ours is several times slower. This script splits our time, all in one process on
the warm executable cache (as the CLI and a library user with
``jaxgraph.enable_compilation_cache`` run it):

- ``gtsam_seconds``: GTSAM's ``optimize()`` (median; the optimizer is built outside the
  timing, as in posegraph.py);
- ``compiled_seconds`` / ``solve_seconds``: the compiled program called directly
  (``compile_solve``) and ``jaxgraph.solve``, timed alternately (medians), whose difference is
  Python's share;
- ``compiled_one_iteration_seconds``: the compiled program with ``max_iterations=1`` (two
  loop trips: the initial linearisation and one trial), so that
  ``per_trip_seconds = (compiled - compiled_one_iteration) / (trips - 2)``;
- ``python_alone_us`` / ``python_after_solve_us``: jaxgraph's argument preparation
  (validation, dtype, padding, the executable-cache lookup) timed on its own, and right after
  a solve returned (XLA's worker threads still spin then, sharing the two cores).

Usage: python benchmarks/small_solve.py [--file tinyGrid3D] [--runs 400]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from posegraph import DATA, machine_info, run_gtsam  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--file", default="tinyGrid3D", help="stem of a file in ../shared/data/posegraph (default tinyGrid3D)")
    ap.add_argument("--runs", type=int, default=400, help="timed runs of each part (default 400)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "small_solve_cpu.json"),
                    help="output JSON (default benchmarks/results/small_solve_cpu.json)")
    args = ap.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import jaxgraph
    from jaxgraph.solver import api
    from jaxgraph.solver.backward import solve_compiled

    path = DATA / f"{args.file}.g2o"
    load_start = os.getloadavg()
    gtsam = run_gtsam(path, repeats=args.runs)
    jaxgraph.enable_compilation_cache(tempfile.mkdtemp(prefix="jaxgraph-small-solve-"))
    problem, values = jaxgraph.io.read_g2o(path, dtype=jnp.float64)
    compiled, cargs = api.compile_solve(problem, values)
    one, oargs = api.compile_solve(problem, values, max_iterations=1)
    _, info = jax.block_until_ready(compiled(*cargs))
    _, info1 = jax.block_until_ready(one(*oargs))

    def prepare():
        return solve_compiled._cached(api._sized(api._arguments(problem, values, None, {})))

    parts = {
        "compiled": lambda: jax.block_until_ready(compiled(*cargs)),
        "solve": lambda: jax.block_until_ready(jaxgraph.solve(problem, values)),
        "compiled_one_iteration": lambda: jax.block_until_ready(one(*oargs)),
        "python_after_solve": prepare,
    }
    for fn in parts.values():  # warm-up
        fn()
    times = {k: [] for k in parts}
    for _ in range(args.runs):  # alternately, so that the machine's drift touches all alike
        for name, fn in parts.items():
            if name == "python_after_solve":
                parts["compiled"]()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    alone = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        prepare()
        alone.append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    trips, trips1 = int(info.iterations) + 1, int(info1.iterations) + 1
    row = {
        "file": path.name,
        "gtsam_seconds": gtsam["solve_seconds"],
        "gtsam_iterations": gtsam["iterations"],
        "iterations": int(info.iterations),
        "trips": trips,
        "solve_seconds": med["solve"],
        "compiled_seconds": med["compiled"],
        "compiled_one_iteration_seconds": med["compiled_one_iteration"],
        "per_trip_seconds": (med["compiled"] - med["compiled_one_iteration"]) / (trips - trips1),
        "python_alone_us": statistics.median(alone) * 1e6,
        "python_after_solve_us": med["python_after_solve"] * 1e6,
        "solve_over_gtsam": med["solve"] / gtsam["solve_seconds"],
        "compiled_over_gtsam": med["compiled"] / gtsam["solve_seconds"],
        "runs": args.runs,
    }
    out = {"benchmark": "small_solve", "machine": machine_info(), "load_average_at_start": load_start,
           "results": [row]}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    for k, v in row.items():
        print(f"{k:34s} {v}")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
