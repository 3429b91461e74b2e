"""Steady solve times (and compile times) of two revisions of jaxgraph, alternated on the same machine.

The machine is shared and its speed drifts by tens of percent within an hour (the pose-graph
benchmark's GTSAM times moved 0.21-0.37 ms on one file across one session), so a re-run of
``benchmarks/posegraph.py`` minutes or hours after the last one cannot tell a code change from
the machine. This script checks out ``--base`` (default: the last commit before a change) in
a temporary git worktree and times ``solve`` of each file with the base and with the working
tree, alternating fresh processes (``rounds`` times), so both see the same machine state.

Each worker process reads the file (float64, GTSAM's benchmark prior on pose 0), compiles once
with ``jaxgraph.solver.api.compile_solve`` (no persistent cache: that time is the cold compile,
tracing and lowering included) and reports the median of ``--repeats`` steady calls, the final
cost and the compile seconds. ``--files`` takes stems in ``../shared/data/posegraph`` or paths
relative to ``../shared/data`` (``landmarks/known_landmark_localization_20.g2o`` is read as
benchmarks/beyond_poses.py reads it).

Usage: python benchmarks/compare_revisions.py --base ac10c22 [--files intel,sphere2500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "posegraph"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

WORKER = """
import statistics, sys, time
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import jaxgraph
from jaxgraph.solver.api import compile_solve
options = {"trackxyz": "bearing_range", "landmark_prior": 1e-6} if "known_landmark" in sys.argv[1] else {}
problem, values = jaxgraph.io.read_g2o(sys.argv[1], dtype=np.float64, **options)
t0 = time.perf_counter()
compiled, args = compile_solve(problem, values)
compile_seconds = time.perf_counter() - t0
jax.block_until_ready(compiled(*args))
times = []
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t0)
print(statistics.median(times), float(out[1].cost), compile_seconds)
"""


def _time(tree: Path, path: Path, repeats: int) -> tuple[float, float, float]:
    env = dict(os.environ, PYTHONPATH=str(tree))  # the tree's jaxgraph before the installed one
    out = subprocess.run([sys.executable, "-c", WORKER, str(path), str(repeats)], env=env, cwd=tempfile.gettempdir(),
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1]), float(out[2])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="git revision to compare the working tree with")
    ap.add_argument("--files", default="intel,manhattan,smallGrid3D,sphere2500,city10000",
                    help="comma-separated stems in ../shared/data/posegraph (default: the five quick ones)")
    ap.add_argument("--rounds", type=int, default=3, help="alternations per file (default 3)")
    ap.add_argument("--repeats", type=int, default=7, help="timed calls per process (default 7)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compare_revisions_cpu.json"))
    args = ap.parse_args()
    base_tree = Path(tempfile.mkdtemp(prefix="jaxgraph-base-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_tree), args.base], check=True,
                   capture_output=True)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    start = os.getloadavg()
    results = []
    try:
        for stem in args.files.split(","):
            path = DATA / f"{stem}.g2o" if "/" not in stem else DATA.parent / stem
            base, work = [], []
            for _ in range(args.rounds):
                base.append(_time(base_tree, path, args.repeats))
                work.append(_time(ROOT, path, args.repeats))
            entry = {"file": path.name, "base_seconds": [r[0] for r in base], "working_tree_seconds": [r[0] for r in work],
                     "base_cost": base[0][1], "working_tree_cost": work[0][1],
                     "ratio_of_medians": statistics.median(r[0] for r in work) / statistics.median(r[0] for r in base),
                     "base_compile_seconds": [r[2] for r in base], "working_tree_compile_seconds": [r[2] for r in work],
                     "compile_ratio_of_medians": statistics.median(r[2] for r in work) / statistics.median(r[2] for r in base)}
            results.append(entry)
            print(f"{path.name:22s} base {statistics.median(entry['base_seconds']):.4f} s  working tree "
                  f"{statistics.median(entry['working_tree_seconds']):.4f} s  ratio {entry['ratio_of_medians']:.3f}  "
                  f"cost {entry['base_cost']:.6f} / {entry['working_tree_cost']:.6f}  compile "
                  f"{statistics.median(entry['base_compile_seconds']):.2f} / "
                  f"{statistics.median(entry['working_tree_compile_seconds']):.2f} s", flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)], capture_output=True)
    ratios = [r["ratio_of_medians"] for r in results]
    report = {"benchmark": "compare_revisions", "base": args.base, "working_tree_head": head,
              "settings": {"rounds": args.rounds, "repeats": args.repeats, "dtype": "float64", "linear_solver": "auto"},
              "machine": machine_info(), "load_average_at_start": start, "load_average_at_end": os.getloadavg(),
              "results": results,
              "geometric_mean_ratio": statistics.geometric_mean(ratios) if ratios else None,
              "compile_geometric_mean_ratio": statistics.geometric_mean(r["compile_ratio_of_medians"] for r in results)
              if results else None}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"geometric mean ratio (working tree / base): {report['geometric_mean_ratio']:.3f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
