"""Benchmark of jaxgraph.linear on the block structures of the shared pose graphs.

For every ``../shared/data/posegraph/*.g2o`` only the ``EDGE_*`` lines' ids are
read (the pattern); the values are random SPD blocks H = J^T J from per-edge
Jacobians J_i = -I + 0.3 N(0,1), J_j = I + 0.3 N(0,1) plus an identity prior on
block 0.  In one run it measures, per graph:

* ``cholesky`` (sparse multifrontal, float64 and float32), ``pcg`` (block Jacobi),
  ``dense`` (n*d <= 3000 only): analyze seconds, compile seconds, steady-state
  factor+solve seconds (median of repeats, inside one jit), relative residual;
* scipy references on the same matrix: ``scipy.sparse.linalg.splu`` (COLAMD) and,
  for small problems, ``scipy.linalg.cho_factor`` on the dense matrix.

Usage: ``python benchmarks/linear.py [--graphs intel,sphere2500] [--repeats 7]``.
Writes ``benchmarks/results/linear_cpu.json``.
"""

from __future__ import annotations

import os

# LAPACK (potrf/trsm) runs on fronts of at most a few hundred rows: a single
# BLAS thread is fastest there, and OpenBLAS worker threads on a busy 2-core
# machine stall for tens of milliseconds per call.  Must precede numpy/jax.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from jaxgraph import linear  # noqa: E402

DATA = ROOT / ".." / "shared" / "data" / "posegraph"


def read_pattern(path):
    """(n, d, rows, cols) from the EDGE lines of a g2o file (ids only)."""
    ij, d = [], 3
    with open(path) as fh:
        for line in fh:
            if line.startswith("EDGE"):
                t = line.split()
                ij.append((int(t[1]), int(t[2])))
                if t[0].startswith("EDGE_SE3"):
                    d = 6
    ij = np.asarray(ij, dtype=np.int64)
    return int(ij.max()) + 1, d, ij[:, 0], ij[:, 1]


def random_system(n, d, rows, cols, seed=0):
    rng = np.random.default_rng(seed)
    M = rows.size
    Ji = -np.eye(d) + 0.3 * rng.normal(size=(M, d, d))
    Jj = np.eye(d) + 0.3 * rng.normal(size=(M, d, d))
    diag = np.zeros((n, d, d))
    np.add.at(diag, rows, np.einsum("kai,kaj->kij", Ji, Ji))
    np.add.at(diag, cols, np.einsum("kai,kaj->kij", Jj, Jj))
    diag[0] += np.eye(d)
    offd = np.einsum("kai,kaj->kij", Ji, Jj)
    return diag, offd, rng.normal(size=(n, d))


def scipy_csc(n, d, rows, cols, diag, offd):
    import scipy.sparse as sp

    b = np.arange(d)
    ii = np.broadcast_to(b[:, None], (d, d))
    jj = np.broadcast_to(b[None, :], (d, d))
    I = np.concatenate([(rows[:, None, None] * d + ii), (cols[:, None, None] * d + ii),
                        (np.arange(n)[:, None, None] * d + ii)])
    J = np.concatenate([(cols[:, None, None] * d + jj), (rows[:, None, None] * d + jj),
                        (np.arange(n)[:, None, None] * d + jj)])
    V = np.concatenate([offd, np.swapaxes(offd, 1, 2), 0.5 * (diag + np.swapaxes(diag, 1, 2))])
    return sp.csc_matrix((V.ravel(), (I.ravel(), J.ravel())), shape=(n * d, n * d))


def timed(fn, repeats):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), float(np.min(ts))


def relres(structure, diag, offd, x, rhs):
    r = np.asarray(linear.matvec(structure, diag, offd, np.asarray(x, np.float64))) - rhs
    return float(np.linalg.norm(r) / np.linalg.norm(rhs))


def bench_ours(n, d, rows, cols, diag, offd, rhs, method, dtype, repeats, **kw):
    t0 = time.perf_counter()
    s = linear.analyze(n, d, rows, cols, method=method, **kw)
    t_an = time.perf_counter() - t0
    D, O, b = (jnp.asarray(a, dtype) for a in (diag, offd, rhs))
    f = jax.jit(lambda D, O, b: linear.solve_with_info(s, D, O, b))
    t0 = time.perf_counter()
    x, info = jax.block_until_ready(f(D, O, b))
    t_c = time.perf_counter() - t0
    med, best = timed(lambda: f(D, O, b), repeats)
    out = dict(method=method, dtype=str(jnp.dtype(dtype)), analyze_seconds=t_an,
               compile_seconds=t_c, solve_seconds_median=med, solve_seconds_min=best,
               relative_residual=relres(s, diag, offd, x, rhs),
               clamped=bool(info.clamped), iterations=int(info.iterations))
    if method == "cholesky":
        out["symbolic"] = {k: v for k, v in s.stats.items()}
        out["ordering"] = s.ordering
    return out


def bench_scipy(n, d, rows, cols, diag, offd, rhs, repeats):
    import scipy.linalg as sla
    import scipy.sparse.linalg as spla

    H = scipy_csc(n, d, rows, cols, diag, offd)
    res = []
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        lu = spla.splu(H, permc_spec="COLAMD")
        x = lu.solve(rhs.ravel())
        ts.append(time.perf_counter() - t0)
    res.append(dict(method="scipy_splu_colamd", solve_seconds_median=float(np.median(ts)),
                    solve_seconds_min=float(np.min(ts)),
                    relative_residual=float(np.linalg.norm(H @ x - rhs.ravel()) / np.linalg.norm(rhs)),
                    nnz_LU=int(lu.L.nnz + lu.U.nnz)))
    if n * d <= 3000:
        Hd = H.toarray()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            x = sla.cho_solve(sla.cho_factor(Hd, lower=True), rhs.ravel())
            ts.append(time.perf_counter() - t0)
        res.append(dict(method="scipy_dense_cho", solve_seconds_median=float(np.median(ts)),
                        solve_seconds_min=float(np.min(ts)),
                        relative_residual=float(np.linalg.norm(Hd @ x - rhs.ravel()) / np.linalg.norm(rhs))))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graphs", default="", help="comma-separated names (default: all files)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "linear_cpu.json"))
    ap.add_argument("--no-pcg", action="store_true")
    ap.add_argument("--crossover", action="store_true",
                    help="also time dense vs sparse Cholesky on w x w grids (method='auto' threshold)")
    args = ap.parse_args()
    files = sorted(DATA.glob("*.g2o"))
    if args.graphs:
        want = set(args.graphs.split(","))
        files = [f for f in files if f.stem in want]
    results = []
    for path in files:
        n, d, rows, cols = read_pattern(path)
        diag, offd, rhs = random_system(n, d, rows, cols)
        entry = dict(graph=path.stem, num_blocks=n, block_dim=d, num_offdiag=int(rows.size), runs=[])
        runs = entry["runs"]
        runs.append(bench_ours(n, d, rows, cols, diag, offd, rhs, "cholesky", jnp.float64, args.repeats))
        runs.append(bench_ours(n, d, rows, cols, diag, offd, rhs, "cholesky", jnp.float32, args.repeats))
        if not args.no_pcg:
            runs.append(bench_ours(n, d, rows, cols, diag, offd, rhs, "pcg", jnp.float64, args.repeats,
                                   pcg_max_iterations=1000))
        if n * d <= 3000:
            runs.append(bench_ours(n, d, rows, cols, diag, offd, rhs, "dense", jnp.float64, args.repeats))
        runs.extend(bench_scipy(n, d, rows, cols, diag, offd, rhs, args.repeats))
        ref = next(r for r in runs if r["method"] == "scipy_splu_colamd")["solve_seconds_median"]
        for r in runs:
            r["time_over_scipy_splu"] = r["solve_seconds_median"] / ref
        results.append(entry)
        for r in runs:
            print(f"{path.stem:>20s} {r['method']:>18s} {r.get('dtype', 'float64'):>8s} "
                  f"solve {r['solve_seconds_median'] * 1e3:9.2f} ms  "
                  f"compile {r.get('compile_seconds', 0.0):6.2f} s  "
                  f"analyze {r.get('analyze_seconds', 0.0):5.2f} s  "
                  f"res {r['relative_residual']:.1e}  x{r['time_over_scipy_splu']:.2f} splu", flush=True)
    crossover = []
    if args.crossover:
        for w, d in [(4, 3), (6, 3), (8, 3), (10, 3), (14, 3), (6, 6), (8, 6)]:
            g = np.arange(w * w).reshape(w, w)
            rows = np.concatenate([g[:, :-1].ravel(), g[:-1, :].ravel()])
            cols = np.concatenate([g[:, 1:].ravel(), g[1:, :].ravel()])
            n = w * w
            diag, offd, rhs = random_system(n, d, rows, cols)
            row = dict(grid=w, block_dim=d, unknowns=n * d)
            for method in ("dense", "cholesky"):
                r = bench_ours(n, d, rows, cols, diag, offd, rhs, method, jnp.float64, args.repeats)
                row[method] = dict(solve_seconds_median=r["solve_seconds_median"],
                                   compile_seconds=r["compile_seconds"])
            crossover.append(row)
            print(f"grid {w}x{w} d={d} unknowns {n * d:5d}: dense "
                  f"{row['dense']['solve_seconds_median'] * 1e3:8.3f} ms, cholesky "
                  f"{row['cholesky']['solve_seconds_median'] * 1e3:8.3f} ms", flush=True)
    machine = dict(platform=platform.platform(), processor=platform.processor(),
                   cpu_count=os.cpu_count(), python=platform.python_version(),
                   jax=jax.__version__, device=str(jax.devices()[0]),
                   openblas_num_threads=os.environ.get("OPENBLAS_NUM_THREADS"),
                   load_average=list(os.getloadavg()),
                   time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(dict(machine=machine, results=results, dense_vs_cholesky=crossover), fh,
                  indent=1, default=float)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
