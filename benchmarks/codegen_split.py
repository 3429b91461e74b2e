"""Compile time and run time of the solve against XLA:CPU's number of LLVM code-generation parts.

``jaxgraph.runtime.compile_cache.COMPILER_OPTIONS`` sets ``xla_cpu_parallel_codegen_split_count``
to the number of cores (at least 2) instead of XLA's default of 32. This script measures that
choice against the default, side by side: for each problem and each split count, a fresh
process (no persistent cache) lowers the solve, compiles it with jaxgraph's options except the
split count, then times the compiled solve. Split counts alternate, ``--rounds`` times, and the
medians are reported with the load average before and after.

Usage: python benchmarks/codegen_split.py [--problems kl,intel,smallGrid3D,dubrovnik]
       [--splits 2,32] [--rounds 3] [--out benchmarks/results/codegen_split_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
sys.path.insert(0, str(ROOT))
PROBLEMS = {
    "kl": "landmarks/known_landmark_localization_20.g2o",
    "intel": "posegraph/intel.g2o",
    "smallGrid3D": "posegraph/smallGrid3D.g2o",
    "sphere2500": "posegraph/sphere2500.g2o",
    "dubrovnik": "bundle_adjustment/dubrovnik-3-7-pre.txt",
}


def _load(name):
    import jax.numpy as jnp

    import jaxgraph

    path = str(DATA / PROBLEMS[name])
    if name == "kl":  # as benchmarks/beyond_poses.py reads it (GTSAM's set-up)
        return jaxgraph.io.read_g2o(path, dtype=jnp.float64, trackxyz="bearing_range", landmark_prior=1e-6)
    if name == "dubrovnik":
        return jaxgraph.io.read_bal(path, dtype=jnp.float64)
    return jaxgraph.io.read_g2o(path, dtype=jnp.float64)


def worker(name: str, split: int, repeats: int) -> dict:
    """One fresh process: trace + lower + XLA compile of the solve with ``split`` parts, then
    the median of ``repeats`` timed solves."""
    import jax

    jax.config.update("jax_enable_x64", True)
    from jaxgraph.runtime.compile_cache import COMPILER_OPTIONS
    from jaxgraph.solver import api

    problem, values = _load(name)
    args = api._sized(api._arguments(problem, values, None, {"max_iterations": 400}))
    options = dict(COMPILER_OPTIONS, xla_cpu_parallel_codegen_split_count=split)
    t0 = time.perf_counter()
    lowered = jax.jit(api.solve_compiled.nested, compiler_options=options).lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        runs.append(time.perf_counter() - t)
    return {"problem": name, "split": split, "trace_lower_seconds": t1 - t0, "xla_seconds": t2 - t1,
            "solve_seconds": statistics.median(runs), "cost": float(out[1].cost), "status": int(out[1].status)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="kl,intel,smallGrid3D,dubrovnik",
                    help=f"comma-separated, from {','.join(PROBLEMS)}")
    ap.add_argument("--splits", default="2,32", help="split counts to compare (default 2,32; XLA's default is 32)")
    ap.add_argument("--rounds", type=int, default=3, help="alternations per problem (default 3)")
    ap.add_argument("--repeats", type=int, default=10, help="timed solves per process (default 10)")
    ap.add_argument("--out", default="", help="output JSON (default: print only)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        name, split = args.worker.split(":")
        print(json.dumps(worker(name, int(split), args.repeats)))
        return
    from _machine import machine_info

    rows, summary = [], {}
    load_before = os.getloadavg()
    for name in args.problems.split(","):
        for r in range(args.rounds):
            for split in (int(s) for s in args.splits.split(",")):
                env = dict(os.environ, JAX_ENABLE_COMPILATION_CACHE="false")
                res = subprocess.run([sys.executable, __file__, "--worker", f"{name}:{split}",
                                      "--repeats", str(args.repeats)], capture_output=True, text=True, env=env)
                if res.returncode:
                    raise RuntimeError(f"{name} split {split}: {res.stderr[-2000:]}")
                row = json.loads(res.stdout.strip().splitlines()[-1])
                row.update(round=r, load=os.getloadavg()[0])
                rows.append(row)
                print(json.dumps(row), flush=True)
        for split in (int(s) for s in args.splits.split(",")):
            mine = [x for x in rows if x["problem"] == name and x["split"] == split]
            summary[f"{name}:{split}"] = {k: statistics.median(x[k] for x in mine)
                                          for k in ("trace_lower_seconds", "xla_seconds", "solve_seconds")}
    result = {"benchmark": "codegen_split", "machine": machine_info(), "load_before": load_before,
              "load_after": os.getloadavg(), "rows": rows, "summary": summary}
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
