"""Chordal initialisation benchmark: LM from chordal vs LM from the file's values, vs GTSAM.

For every file in ``../shared/data/posegraph/`` (float64, prior on pose 0 at its file value
with sigma 1e-6, as ``read_g2o`` and GTSAM's benchmark convention):

* ``jaxgraph.initialize.chordal`` then ``jaxgraph.solve`` (LM, GTSAM's default rules);
* ``jaxgraph.solve`` from the file's values;
* GTSAM's initialiser (``InitializePose3.initialize`` for 3D, ``lago.initialize`` for 2D)
  then GTSAM's LM, where the initialiser works (its error message is recorded otherwise).

Costs are ``problem.cost`` (GTSAM's ``graph.error``, equal to it to ~1e-12 in float64).
Times: ``chordal_seconds`` is the median of 3 compiled calls; LM times are one compiled
call after a first (compiling) one; ``*_compile_seconds`` = first call minus compiled call.

Usage: python benchmarks/initialize.py [--files torus3D,intel] [--skip-gtsam]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "posegraph"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


from _machine import timed as _timed  # noqa: E402  (benchmarks/ is on sys.path above)


def run_ours(path, lm_kwargs):
    import jaxgraph
    from jaxgraph.initialize import chordal

    problem, values = jaxgraph.io.read_g2o(path)
    init, first = _timed(chordal, problem, values)
    times = [_timed(chordal, problem, values)[1] for _ in range(3)]
    out = {
        "file_initial_cost": float(problem.cost(values)),
        "chordal_initial_cost": float(problem.cost(init)),
        "chordal_seconds": statistics.median(times),
        "chordal_compile_seconds": max(first - statistics.median(times), 0.0),
    }
    for name, start in (("chordal", init), ("file", values)):
        (_, info), t1 = _timed(jaxgraph.solve, problem, start, **lm_kwargs)
        (_, info), t2 = _timed(jaxgraph.solve, problem, start, **lm_kwargs)
        out[f"lm_from_{name}"] = {
            "cost": float(info.cost),
            "iterations": int(info.iterations),
            "status": int(info.status),
            "seconds": t2,
            "compile_seconds": max(t1 - t2, 0.0),
        }
        print(f"  ours LM from {name}: cost {float(info.cost):.6f} ({int(info.iterations)} trials, {t2:.2f} s)", flush=True)
    c, f = out["lm_from_chordal"]["cost"], out["lm_from_file"]["cost"]
    out["chordal_minus_file_relative"] = (c - f) / f
    return out


def run_gtsam(path):
    import gtsam
    from posegraph import gtsam_graph, is3d

    graph, initial = gtsam_graph(path)
    try:
        t0 = time.perf_counter()
        if is3d(path):
            init = gtsam.InitializePose3.initialize(graph)
        else:
            init = gtsam.lago.initialize(graph)
        t_init = time.perf_counter() - t0
    except Exception as exc:  # GTSAM's initialisers throw on several real graphs
        return {"initializer_error": f"{type(exc).__name__}: {exc}"}
    opt = gtsam.LevenbergMarquardtOptimizer(graph, init, gtsam.LevenbergMarquardtParams())
    t0 = time.perf_counter()
    result = opt.optimize()
    t_lm = time.perf_counter() - t0
    print(f"  GTSAM init+LM: cost {graph.error(result):.6f}", flush=True)
    return {
        "initializer_seconds": t_init,
        "initial_cost": graph.error(init),
        "lm_cost": graph.error(result),
        "lm_iterations": int(opt.iterations()),
        "lm_seconds": t_lm,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", default=None, help="comma-separated stems (default: every file)")
    ap.add_argument("--skip-gtsam", action="store_true", help="do not run GTSAM")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "initialize_cpu.json"))
    args = ap.parse_args()

    import jax

    jax.config.update("jax_enable_x64", True)
    from _machine import machine_info

    files = sorted(DATA.glob("*.g2o"))
    if args.files:
        keep = set(args.files.split(","))
        files = [f for f in files if f.stem in keep]
    lm_kwargs = dict(method="lm", max_iterations=300, tolerance=1e-5)
    results = {}
    load_before = os.getloadavg()
    for path in files:
        print(path.stem, flush=True)
        entry = {"ours": run_ours(path, lm_kwargs)}
        if not args.skip_gtsam:
            entry["gtsam"] = run_gtsam(path)
        results[path.stem] = entry
    report = {
        "machine": machine_info(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "note": "2-core machine shared with other jobs; times are noisy",
        "lm": lm_kwargs,
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=1)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
