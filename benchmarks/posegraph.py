"""Pose-graph benchmark: jaxgraph vs GTSAM (vs jaxls) on every file in ../shared/data/posegraph/.

Same set-up for every solver: the file's initial values (odometry composition for files
without vertices), a prior on pose 0 at its initial value with isotropic sigma 1e-6,
Levenberg-Marquardt. GTSAM runs with its default ``LevenbergMarquardtParams`` (100 outer
iterations, relative/absolute tolerance 1e-5, lambda 1e-5 x10 up to 1e5). jaxgraph runs
with the same rules (``max_iterations`` counts linear solves, accepted or rejected, so it is
set higher). Every final cost is evaluated by GTSAM on the original graph: our output is
written with ``jaxgraph.io.write_g2o`` and read back by ``gtsam.readG2o``.

Times (ours run in fresh subprocesses, so nothing is cached in memory):
``solve_seconds`` = steady-state wall time of a compiled solve (median of ``--repeats``
after up to 3 untimed warm-up calls within 1 s, for GTSAM as for ours; more runs, up to
400, until they add up to 0.25 s, for sub-millisecond solves;
fewer when the runs exceed 60 s in total; ``timed_runs`` records how many);
``compile_seconds`` = cold compile: wall time of ``jaxgraph.solver.api.compile_solve`` (trace,
lower, XLA compile and storing the executable; what ``jaxgraph solve`` reports) in a new
process whose persistent compilation cache (``jaxgraph.enable_compilation_cache`` on a new
temporary folder) is empty; ``first_call_minus_steady_seconds`` = the first ``solve`` call
after it minus a steady one (first-run costs left outside the compile);
``compile_split`` = JAX's own trace / lower / XLA-compile durations of that compile;
``new_graph_same_process_compile_seconds`` = the same for a *rewired* graph (one loop
closure moved: a different pattern of the same size class) in that process;
``new_graph_new_process_compile_seconds`` = ``compile_solve`` of the rewired graph in a
second new process on the now-warm caches (jaxgraph's executable cache: no tracing);
``float32_solve_seconds`` / ``float64_alternating_solve_seconds`` = steady times of float32
and float64 solves run alternately (``float32_over_float64`` their ratio, the summary's
``max_float32_over_float64`` its maximum).
``contention_one_busy_process``: steady times with and without one competing
``python -c 'while True: pass'``.  The load average is recorded per file and overall: the
machine is shared, so times are only comparable within one run.
jaxls (``pip install almond-jaxls``, ``--jaxls``) runs in a subprocess per file with a time
cap; it uses its default conjugate-gradient linear solver.

Usage: python benchmarks/posegraph.py [--files intel,sphere2500] [--jaxls]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "posegraph"
sys.path.insert(0, str(ROOT))


def is3d(path) -> bool:
    with open(path) as fh:
        for line in fh:
            if line.strip():
                return "SE3" in line.split()[0]
    return False


def gtsam_graph(path):
    import gtsam

    three = is3d(path)
    graph, initial = gtsam.readG2o(str(path), three)
    if three:
        prior = gtsam.PriorFactorPose3(0, initial.atPose3(0), gtsam.noiseModel.Isotropic.Sigma(6, 1e-6))
    else:
        prior = gtsam.PriorFactorPose2(0, initial.atPose2(0), gtsam.noiseModel.Isotropic.Sigma(3, 1e-6))
    graph.add(prior)
    return graph, initial


def run_gtsam(path, repeats):
    import gtsam

    graph, initial = gtsam_graph(path)
    times, result = [], None
    _warm_up(lambda: gtsam.LevenbergMarquardtOptimizer(graph, initial, gtsam.LevenbergMarquardtParams()).optimize())
    while len(times) < _runs_wanted(times, repeats):
        opt = gtsam.LevenbergMarquardtOptimizer(graph, initial, gtsam.LevenbergMarquardtParams())
        t0 = time.perf_counter()
        result = opt.optimize()
        times.append(time.perf_counter() - t0)
    return {
        "initial_cost": graph.error(initial),
        "final_cost": graph.error(result),
        "iterations": int(opt.iterations()),
        "solve_seconds": statistics.median(times),
    }


def gtsam_cost_of_g2o(path_original, path_solution):
    import gtsam

    graph, _ = gtsam_graph(path_original)
    _, values = gtsam.readG2o(str(path_solution), is3d(path_original))
    return graph.error(values)


def rewired(problem):
    """The same graph with one loop-closure edge moved to another pose: a *different*
    sparsity pattern with the same counts, i.e. a new graph of the same size class."""
    from jaxgraph import Problem

    groups = list(problem.factors)
    k = next(i for i, g in enumerate(groups) if g.name == "edges")
    g = groups[k]
    idx = np.array(g.indices.array)
    loops = np.nonzero(np.abs(idx[:, 0] - idx[:, 1]) > 1)[0]
    e = int(loops[-1]) if loops.size else idx.shape[0] - 1
    n = problem.variables[0].count
    idx[e, 1] = (idx[e, 1] + n // 2) % n
    if idx[e, 1] == idx[e, 0]:
        idx[e, 1] = (idx[e, 1] + 1) % n
    groups[k] = g.replace(indices=idx)
    return Problem(problem.variables, groups, anchor=False)


class _CompileClock:
    """Sums JAX's own tracing / lowering / XLA-compile durations (jax.monitoring events)."""

    EVENTS = {
        "/jax/core/compile/jaxpr_trace_duration": "trace",
        "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
        "/jax/core/compile/backend_compile_duration": "xla_compile",
    }

    def __init__(self):
        import jax

        self.totals = dict.fromkeys(self.EVENTS.values(), 0.0)
        jax.monitoring.register_event_duration_secs_listener(self._on)

    def _on(self, event, duration, **_):
        if event in self.EVENTS:
            self.totals[self.EVENTS[event]] += duration

    def take(self):
        out = dict(self.totals)
        self.totals = dict.fromkeys(self.EVENTS.values(), 0.0)
        return out


def _warm_up(fn, calls=3, budget_seconds=1.0):
    """Untimed calls before timing (both solvers): the first calls after loading run 1.5-2x
    slower (caches, allocator), which a median of 5 on a sub-millisecond solve still shows."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
        if time.perf_counter() - t0 > budget_seconds:
            break


def _runs_wanted(times, repeats, min_seconds=0.25, most=400):
    """``repeats`` timed runs, more for sub-millisecond solves (both solvers): until they add
    up to ``min_seconds`` (at most ``most`` runs), so a median of a 0.3-1 ms solve is not
    decided by a few runs on a noisy shared machine."""
    if len(times) < repeats:
        return repeats
    return len(times) + 1 if sum(times) < min_seconds and len(times) < most else len(times)


def _timed(fn, repeats, budget_seconds):
    _warm_up(fn)
    times = []
    while len(times) < _runs_wanted(times, repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        if sum(times) > budget_seconds:  # cap the wall time of very slow configurations
            break
    return out, statistics.median(times), len(times)


def _timed_pair(fn_a, fn_b, repeats, budget_seconds):
    """Medians of ``fn_a`` and ``fn_b`` run alternately (a b a b ...), so that the machine's
    speed drifting between two timing phases does not decide their ratio."""
    _warm_up(fn_a)
    _warm_up(fn_b)
    ta, tb = [], []
    while len(ta) < _runs_wanted([a + b for a, b in zip(ta, tb)], repeats):
        for fn, times in ((fn_a, ta), (fn_b, tb)):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        if sum(ta) + sum(tb) > budget_seconds:
            break
    return out, statistics.median(ta), statistics.median(tb), len(ta)


def ours_worker(path, repeats, linear_solver, max_iterations, phase, budget_seconds=60.0):
    """Runs in a fresh subprocess (empty in-memory caches); prints one JSON line.

    phase "cold": first solve of the file (persistent cache dir empty), steady time,
    float32 steady time, then a rewired graph of the same size class in the same process.
    phase "warm": a new process on the now-warm persistent cache solves the rewired graph.
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import jaxgraph
    from jaxgraph.solver.api import compile_solve

    # as a library user does (jaxgraph.enable_compilation_cache): every program cached, also
    # those compiled in under JAX's default threshold of one second
    jaxgraph.enable_compilation_cache(os.environ["JAX_COMPILATION_CACHE_DIR"])
    clock = _CompileClock()
    t0 = time.perf_counter()
    problem, values = jaxgraph.io.read_g2o(path, dtype=jnp.float64)
    read_seconds = time.perf_counter() - t0
    kw = dict(linear_solver=linear_solver, max_iterations=max_iterations)

    def run(p, v):
        out = jaxgraph.solve(p, v, **kw)
        jax.block_until_ready(out)
        return out

    def compile_time(p, v):
        """Seconds of ``compile_solve`` (what the CLI reports as compile time) and JAX's split."""
        clock.take()
        t0 = time.perf_counter()
        compile_solve(p, v, **kw)
        return time.perf_counter() - t0, clock.take()

    def first_and_steady(p, v, reps):
        clock.take()
        t0 = time.perf_counter()
        run(p, v)
        first = time.perf_counter() - t0
        split = clock.take()
        out, steady, n = _timed(lambda: run(p, v), reps, budget_seconds)
        return out, first, steady, n, split

    other = rewired(problem)
    if phase == "warm":
        seconds, split = compile_time(other, values)
        print(json.dumps({"new_graph_new_process_compile_seconds": seconds,
                          "new_graph_new_process_split": split}))
        return
    compile_seconds, split = compile_time(problem, values)
    (out, info), first, steady, timed_runs, _ = first_and_steady(problem, values, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        sol = Path(tmp) / "solution.g2o"
        jaxgraph.io.write_g2o(sol, problem, out)
        gcost = gtsam_cost_of_g2o(path, sol)
    row = {
        "initial_cost": float(info.initial_cost),
        "final_cost_own": float(info.cost),
        "final_cost": gcost,
        "iterations": int(info.iterations),
        "accepted_steps": int(info.accepted_steps),
        "converged": bool(info.converged),
        "status": int(info.status),
        "compile_seconds": compile_seconds,
        "compile_split": split,
        "first_call_minus_steady_seconds": max(first - steady, 0.0),
        "solve_seconds": steady,
        "timed_runs": timed_runs,
        "read_seconds": read_seconds,
    }
    _, first_o, steady_o, _, split_o = first_and_steady(other, values, 1)
    row["new_graph_same_process_compile_seconds"] = max(first_o - steady_o, 0.0)
    row["new_graph_same_process_split"] = split_o
    v32 = {k: jnp.asarray(x, jnp.float32) for k, x in values.items()}
    run(problem, v32)  # compiles the float32 program
    # float32 against float64 run alternately: measured one after the other, minutes apart,
    # their ratio swung 0.73-1.17 with the machine's speed
    (_, info32), steady64, steady32, pairs = _timed_pair(lambda: run(problem, values), lambda: run(problem, v32),
                                                         max(1, repeats), budget_seconds)
    row["float32_solve_seconds"] = steady32
    row["float64_alternating_solve_seconds"] = steady64
    row["float32_over_float64"] = steady32 / steady64
    row["float32_alternating_runs"] = pairs
    row["float32_iterations"] = int(info32.iterations)
    row["float32_final_cost_own"] = float(info32.cost)
    print(json.dumps(row))


def _worker(args, env_extra=None, timeout=1800):
    env = dict(os.environ, **(env_extra or {}))
    r = subprocess.run([sys.executable, __file__] + args, capture_output=True, text=True, timeout=timeout,
                       env=env)
    if r.returncode != 0:
        raise RuntimeError("worker failed: " + r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_ours(path, repeats, linear_solver, max_iterations):
    """Cold run in a fresh process with an empty persistent compilation cache, then a
    second process on that (warm) cache with a rewired graph of the same size class."""
    with tempfile.TemporaryDirectory() as cache:
        env = {"JAX_COMPILATION_CACHE_DIR": cache}
        common = ["--linear-solver", linear_solver, "--max-iterations", str(max_iterations),
                  "--repeats", str(repeats)]
        row = _worker(["--ours-worker", str(path), "--phase", "cold"] + common, env)
        row.update(_worker(["--ours-worker", str(path), "--phase", "warm"] + common, env))
    return row


def busy_ratio(path, linear_solver, max_iterations, repeats):
    """Steady time with one competing busy process over steady time without (same process)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import jaxgraph

    problem, values = jaxgraph.io.read_g2o(path, dtype=jnp.float64)
    kw = dict(linear_solver=linear_solver, max_iterations=max_iterations)
    run = lambda: jax.block_until_ready(jaxgraph.solve(problem, values, **kw))  # noqa: E731
    run()
    _, quiet, _ = _timed(run, repeats, 60.0)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        _, busy, _ = _timed(run, repeats, 60.0)
    finally:
        hog.kill()
        hog.wait()
    return {"file": Path(path).name, "solve_seconds": quiet, "solve_seconds_one_busy_process": busy,
            "ratio": busy / quiet}


# ------------------------------------------------------------------------------ jaxls
def jaxls_worker(path, repeats):
    """Runs inside a subprocess; prints one JSON line."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import jaxlie
    import jaxls

    import jaxgraph

    problem, values = jaxgraph.io.read_g2o(path, dtype=jnp.float64)
    g = problem.group("edges")
    idx = g.indices.array
    info = g.noise.prepare().matrix  # sqrt information, [M, d, d]
    three = problem.variables[0].kind == "SE3"
    P = values["poses"]
    if three:
        Var, G = jaxls.SE3Var, jaxlie.SE3
        init = G(P)  # wxyz_xyz
        meas = G(g.measurement)
    else:
        Var, G = jaxls.SE2Var, jaxlie.SE2
        init = G.from_xy_theta(P[:, 0], P[:, 1], P[:, 2])
        m = g.measurement
        meas = G.from_xy_theta(m[:, 0], m[:, 1], m[:, 2])
    n = P.shape[0]

    @jaxls.Cost.factory
    def between(vals, a, b, T_ab, sqrt_info):
        return sqrt_info @ (T_ab.inverse() @ (vals[a].inverse() @ vals[b])).log()

    @jaxls.Cost.factory
    def prior(vals, a, T):
        return (T.inverse() @ vals[a]).log() / 1e-6

    T0 = jax.tree_util.tree_map(lambda x: x[0:1], init)
    costs = [
        between(Var(jnp.asarray(idx[:, 0])), Var(jnp.asarray(idx[:, 1])), meas, info),
        prior(Var(jnp.asarray([0])), T0),
    ]
    var = Var(jnp.arange(n))
    t0 = time.perf_counter()
    lsp = jaxls.LeastSquaresProblem(costs, [var]).analyze()
    analyze_seconds = time.perf_counter() - t0
    init_vals = jaxls.VarValues.make([var.with_value(init)])
    t0 = time.perf_counter()
    sol = lsp.solve(init_vals, verbose=False)
    jax.block_until_ready(sol)
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sol = lsp.solve(init_vals, verbose=False)
        jax.block_until_ready(sol)
        times.append(time.perf_counter() - t0)
    T = sol[var]
    if three:
        out = {"poses": T.wxyz_xyz}
    else:
        out = {"poses": jnp.stack([T.translation()[:, 0], T.translation()[:, 1], T.rotation().as_radians()], 1)}
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "s.g2o"
        jaxgraph.io.write_g2o(p, problem, out)
        gcost = gtsam_cost_of_g2o(path, p)
    steady = statistics.median(times)
    print(json.dumps({
        "final_cost": gcost,
        "compile_seconds": max(first - steady, 0.0) + analyze_seconds,
        "solve_seconds": steady,
    }))


def run_jaxls(path, repeats, timeout):
    try:
        r = subprocess.run(
            [sys.executable, __file__, "--jaxls-worker", str(path), "--repeats", str(repeats)],
            capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"skipped": f"exceeded the {timeout} s cap"}
    if r.returncode != 0:
        return {"skipped": "failed: " + (r.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def machine_info():
    import jax

    info = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax_version": jax.__version__,
        "device": str(jax.devices()[0]),
        "device_kind": jax.devices()[0].device_kind,
    }
    try:
        from importlib.metadata import version

        info["gtsam_version"] = version("gtsam")
        info["jaxls_version"] = version("almond-jaxls")
    except Exception:  # not installed: the fields are simply absent
        pass
    info["load_average_1_5_15min"] = os.getloadavg()
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", default="", help="comma-separated stems (default: every .g2o)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions per solver and file (default 3)")
    ap.add_argument("--linear-solver", default="auto", help="jaxgraph linear solver (default auto)")
    ap.add_argument("--max-iterations", type=int, default=400, help="jaxgraph max trials (default 400)")
    ap.add_argument("--jaxls", action="store_true", help="also run jaxls (slow; default off)")
    ap.add_argument("--jaxls-timeout", type=float, default=240.0, help="cap per jaxls file, s (default 240)")
    ap.add_argument("--busy-files", default="intel,sphere2500",
                    help="files timed again with one competing busy process (default intel,sphere2500; '' = none)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "posegraph_cpu.json"),
                    help="output JSON (default benchmarks/results/posegraph_cpu.json)")
    ap.add_argument("--jaxls-worker", help=argparse.SUPPRESS)
    ap.add_argument("--ours-worker", help=argparse.SUPPRESS)
    ap.add_argument("--phase", default="cold", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.jaxls_worker:
        jaxls_worker(args.jaxls_worker, args.repeats)
        return 0
    if args.ours_worker:
        ours_worker(args.ours_worker, args.repeats, args.linear_solver, args.max_iterations, args.phase)
        return 0
    files = sorted(DATA.glob("*.g2o"))
    if args.files:
        wanted = set(args.files.split(","))
        files = [f for f in files if f.stem in wanted]
    load_start = os.getloadavg()
    results = []
    for f in files:
        print(f"== {f.name} (load {os.getloadavg()[0]:.1f})", flush=True)
        g = run_gtsam(f, args.repeats)
        o = run_ours(f, args.repeats, args.linear_solver, args.max_iterations)
        row = {"file": f.name, "load_average_1min": os.getloadavg()[0], "gtsam": g, "jaxgraph": o}
        row["cost_rel_diff"] = (o["final_cost"] - g["final_cost"]) / g["final_cost"]
        row["time_ratio"] = o["solve_seconds"] / g["solve_seconds"]
        print(
            f"   gtsam {g['final_cost']:.9g} ({g['iterations']} it, {g['solve_seconds']:.4f} s) | "
            f"jaxgraph {o['final_cost']:.9g} ({o['iterations']} it, {o['solve_seconds']:.4f} s, "
            f"f32 {o['float32_solve_seconds']:.4f} s, cold compile {o['compile_seconds']:.2f} s, new graph "
            f"{o['new_graph_same_process_compile_seconds']:.2f} s / new process "
            f"{o['new_graph_new_process_compile_seconds']:.2f} s) ratio {row['time_ratio']:.2f}",
            flush=True,
        )
        results.append(row)
    if args.jaxls:
        for row in results:
            print(f"== jaxls {row['file']}", flush=True)
            row["jaxls"] = run_jaxls(DATA / row["file"], args.repeats, args.jaxls_timeout)
            print("   ", row["jaxls"], flush=True)
    contention = []
    for stem in [x for x in args.busy_files.split(",") if x]:
        print(f"== one busy process: {stem}", flush=True)
        contention.append(busy_ratio(DATA / f"{stem}.g2o", args.linear_solver, args.max_iterations, args.repeats))
        print("   ", contention[-1], flush=True)
    ratios = [r["time_ratio"] for r in results]
    geo = math.exp(sum(math.log(x) for x in ratios) / len(ratios)) if ratios else float("nan")
    summary = {
        "geometric_mean_time_ratio_vs_gtsam": geo,
        "max_time_ratio_vs_gtsam": max(ratios) if ratios else None,
        "max_cost_rel_diff_vs_gtsam": max(r["cost_rel_diff"] for r in results) if results else None,
        "all_within_1e-3_or_lower": all(r["cost_rel_diff"] <= 1e-3 for r in results),
        "max_cold_compile_seconds": max(r["jaxgraph"]["compile_seconds"] for r in results) if results else None,
        "max_new_graph_same_process_compile_seconds":
            max(r["jaxgraph"]["new_graph_same_process_compile_seconds"] for r in results) if results else None,
        "max_new_graph_new_process_compile_seconds":
            max(r["jaxgraph"]["new_graph_new_process_compile_seconds"] for r in results) if results else None,
        "max_float32_over_float64":
            max(r["jaxgraph"]["float32_over_float64"] for r in results)
            if results else None,
        "load_average_at_start": load_start,
        "load_average_at_end": os.getloadavg(),
    }
    doc = {
        "benchmark": "posegraph",
        "machine": machine_info(),
        "settings": {
            "repeats": args.repeats,
            "linear_solver": args.linear_solver,
            "max_iterations": args.max_iterations,
            "dtype": "float64",
            "prior": "pose 0 at its initial value, isotropic sigma 1e-6",
            "gtsam": "LevenbergMarquardtParams() defaults",
        },
        "results": results,
        "contention_one_busy_process": contention,
        "summary": summary,
    }
    hdr = f"{'file':22s} {'GTSAM cost':>14s} {'ours cost':>14s} {'rel diff':>9s} {'it G/o':>8s} {'GTSAM s':>8s} {'ours s':>8s} {'ratio':>6s} {'compile':>8s} {'jaxls s':>8s}"
    print(hdr)
    for r in results:
        g, o = r["gtsam"], r["jaxgraph"]
        jl = r.get("jaxls", {})
        js = f"{jl['solve_seconds']:.3f}" if "solve_seconds" in jl else "-"
        print(
            f"{r['file']:22s} {g['final_cost']:14.9g} {o['final_cost']:14.9g} {r['cost_rel_diff']:9.1e} "
            f"{g['iterations']:>3d}/{o['iterations']:<4d} {g['solve_seconds']:8.4f} {o['solve_seconds']:8.4f} "
            f"{r['time_ratio']:6.2f} {o['compile_seconds']:8.1f} {js:>8s}"
        )
    print(f"geometric mean time ratio (ours / GTSAM): {geo:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
