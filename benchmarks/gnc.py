"""GNC benchmark: jaxgraph.gnc vs GTSAM's GncLMOptimizer on graphs with false loop closures.

For each graph: ``jaxgraph.gnc.add_random_loop_closures(problem, values, 0.1, seed)`` adds
``round(0.1 M)`` false loop closures (random pairs, random relative poses, information of a
real loop closure); the corrupted graph is written as a g2o file and both libraries read
that same file (prior on pose 0 with sigma 1e-6, odometry and the prior known inliers).
Every result is scored on the CLEAN graph (its cost at the returned values, float64).

* ours: ``jaxgraph.gnc(..., loss)`` with default settings (seconds include compilation,
  ``warm_seconds`` is a second call);
* plain LM on the corrupted graph (ours), for reference;
* GTSAM ``GncLMOptimizer`` with default ``GncLMParams`` except the loss type and the known
  inliers (``--skip-gtsam`` to leave it out; it takes minutes on sphere2500).

Usage: python benchmarks/gnc.py [--files intel,sphere2500] [--losses tls,gm] [--skip-gtsam] [--gtsam-cap S]

Sweep (issue 24): ``--sweep --rates 0.1,0.2 --seeds 0-9 --files intel --losses tls
--gtsam-losses tls`` runs every cell (graph x outlier rate x seed): the corruption is
``add_random_loop_closures(clean, values, rate, seed=seed)`` (``round(rate M)`` false loop
closures for ``M`` edges: random pairs ``|i - j| > 1``, uniformly random relative poses,
translations in a box as large as the map, the information of a randomly chosen real loop
closure), written as a g2o file and read back by both libraries. Per cell: the clean
optimum, ours (``jaxgraph.gnc`` with default settings, seconds with compilation) and GTSAM's
``GncLMOptimizer`` (child process, stopped after ``--gtsam-cap`` seconds), each scored on
the clean graph with false closures accepted and true ones rejected, and the load average
before the cell. Both sides also record their process CPU time (ours: every thread of this
process, compilation included; GTSAM: its child's optimize call, single-threaded): on the
shared 2-core machine the wall times depend on the load, CPU times much less, and ours
counting both compile threads makes the comparison conservative. ``--gtsam-stop-after-ours S``
stops each GTSAM run S seconds after ours' time on its cell (its imports count against it), so
"stopped" proves GTSAM slower there without waiting for it (sphere2500: 5-20 minutes a cell);
``--cache DIR`` turns jaxgraph's compilation cache on (an empty DIR: the first cell compiles;
``gnc_programs_traced`` says where a program was traced). Rows are appended to ``--out`` (default
``benchmarks/results/gnc_sweep_cpu.json``) after every cell, so a stopped sweep keeps them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "posegraph"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


from _machine import timed as _timed  # noqa: E402  (benchmarks/ is on sys.path above)


def run_gtsam(corrupted_path, clean, loss, three_d):
    import gtsam
    import jax.numpy as jnp
    import numpy as np

    graph, initial = gtsam.readG2o(str(corrupted_path), three_d)
    if three_d:
        graph.add(gtsam.PriorFactorPose3(0, initial.atPose3(0), gtsam.noiseModel.Isotropic.Sigma(6, 1e-6)))
    else:
        graph.add(gtsam.PriorFactorPose2(0, initial.atPose2(0), gtsam.noiseModel.Isotropic.Sigma(3, 1e-6)))
    known = []
    for k in range(graph.size()):
        keys = graph.at(k).keys()
        if len(keys) == 1 or abs(int(keys[0]) - int(keys[1])) == 1:
            known.append(k)
    params = gtsam.GncLMParams()
    params.setLossType(gtsam.GncLossType.TLS if loss == "tls" else gtsam.GncLossType.GM)
    params.setKnownInliers(known)
    opt = gtsam.GncLMOptimizer(graph, initial, params)
    t0, c0 = time.perf_counter(), time.process_time()
    result = opt.optimize()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = clean.variables[0].count
    if three_d:
        rows = []
        for k in range(n):
            p = result.atPose3(k)
            q = p.rotation().toQuaternion()
            rows.append([q.w(), q.x(), q.y(), q.z(), *np.asarray(p.translation())])
    else:
        rows = [[result.atPose2(k).x(), result.atPose2(k).y(), result.atPose2(k).theta()] for k in range(n)]
    values = {"poses": jnp.asarray(np.asarray(rows, np.float64))}
    weights = np.asarray(opt.getWeights())
    return {"clean_cost": float(clean.cost(values)), "seconds": seconds, "cpu_seconds": cpu,
            "inliers": int((weights > 0.5).sum()),
            "weights": weights.tolist()}


def _gtsam_worker(queue, corrupted_path, stem, loss, three_d):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jaxgraph

    clean, _ = jaxgraph.io.read_g2o(DATA / f"{stem}.g2o")
    queue.put(run_gtsam(corrupted_path, clean, loss, three_d))


def run_gtsam_capped(corrupted_path, stem, loss, three_d, cap):
    """``run_gtsam`` in a child process, stopped after ``cap`` seconds (recorded as such)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_gtsam_worker, args=(queue, str(corrupted_path), stem, loss, three_d))
    t0 = time.perf_counter()
    proc.start()
    try:
        return queue.get(timeout=cap)
    except Exception:  # queue.Empty: the cap came first (or the child died)
        return {"stopped": f"unfinished after {time.perf_counter() - t0:.0f} s (cap {cap:.0f} s)"}
    finally:
        proc.terminate()
        proc.join()


def _seeds(text):
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(t) for t in text.split(",")]


def sweep(args):
    """The issue-24 sweep; see the module docstring."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    import jaxgraph
    from jaxgraph.algorithms.gnc import GNC_STATUS
    from jaxgraph.algorithms.consistency import consistent_closures
    from jaxgraph.io.synthetic import add_random_loop_closures

    if args.cache:
        jaxgraph.enable_compilation_cache(args.cache)
    traced = []  # compiled GNC programs traced in this process (a cached one is loaded, not traced)
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, fun_name=None, **_: traced.append(fun_name)
        if event == "/jax/core/compile/jaxpr_trace_duration" and fun_name == "_gnc" else None)
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.exists() and args.append else None
    if report is None:
        from _machine import machine_info

        report = {"machine": machine_info(), "note": (
            "2-core machine shared with other work; load_average is os.getloadavg() before each cell: "
            "times are only comparable at low load"), "rows": []}
    tmpdir = tempfile.mkdtemp(prefix="jaxgraph_gnc_sweep_")
    for stem in args.files.split(","):
        clean, values = jaxgraph.io.read_g2o(DATA / f"{stem}.g2o")
        clean_opt = float(jaxgraph.solve(clean, values)[1].cost)
        three_d = clean.variables[0].kind == "SE3"
        for rate in (float(r) for r in args.rates.split(",")):
            for seed in _seeds(args.seeds):
                bad, outlier = add_random_loop_closures(clean, values, rate, seed=seed)
                path = Path(tmpdir) / f"{stem}_{rate}_{seed}.g2o"
                jaxgraph.io.write_g2o(path, bad, values)
                bad, start = jaxgraph.io.read_g2o(path)  # exactly what GTSAM reads
                row = {"graph": stem, "rate": rate, "seed": seed, "false_loop_closures": int(outlier.sum()),
                       "edges": int(outlier.size), "clean_optimum": clean_opt,
                       "load_average": os.getloadavg()}
                if args.prefilter_stats:
                    # the pre-filter alone (gnc runs it again inside its own timing)
                    (keep, _, _), ps = _timed(consistent_closures, bad)
                    row["prefilter"] = {"seconds": ps, "false_kept": int((keep & outlier).sum()),
                                        "true_dropped": int((~keep & ~outlier).sum())}
                for loss in [x for x in args.losses.split(",") if x]:
                    traced.clear()
                    c0 = time.process_time()
                    (x, w, info), s = _timed(jaxgraph.gnc, bad, start, loss)
                    cpu = time.process_time() - c0
                    inl = np.asarray(w["edges"]) > 0.5
                    cost = float(clean.cost(x))
                    row[f"ours_{loss}"] = {
                        "clean_cost": cost, "relative": cost / clean_opt - 1, "seconds_with_compile": s,
                        "cpu_seconds_with_compile": cpu,
                        "status": int(info.status), "status_text": GNC_STATUS[int(info.status)],
                        "iterations": int(info.iterations), "false_accepted": int((inl & outlier).sum()),
                        "true_rejected": int((~inl & ~outlier).sum()),
                        "prefilter_rejected": int(info.prefilter_rejected),
                        "gnc_programs_traced": len(traced),
                    }
                    print(stem, rate, seed, "ours", loss, row[f"ours_{loss}"], flush=True)
                for loss in [x for x in args.gtsam_losses.split(",") if x]:
                    cap = args.gtsam_cap
                    ours = row.get(f"ours_{loss}", row.get("ours_tls"))
                    if args.gtsam_stop_after_ours is not None and ours is not None:
                        cap = min(cap, ours["seconds_with_compile"] + args.gtsam_stop_after_ours)
                    g = run_gtsam_capped(path, stem, loss, three_d, cap)
                    g["cap_seconds"] = cap
                    if "weights" in g:
                        inl = np.asarray(g.pop("weights")) > 0.5
                        # GTSAM's factor order: the file's edges, then the added prior
                        inl = inl[: outlier.size]
                        g.update(relative=g["clean_cost"] / clean_opt - 1, false_accepted=int((inl & outlier).sum()),
                                 true_rejected=int((~inl & ~outlier).sum()))
                    row[f"gtsam_{loss}"] = g
                    print(stem, rate, seed, "gtsam", loss, g, flush=True)
                report["rows"].append(row)
                report["load_average_after_last_row"] = os.getloadavg()
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(report, indent=1))


def plot(paths, out):
    """Success rate (clean-graph cost within 1 % of the clean optimum) against the outlier
    rate, ours vs GTSAM, one line per graph and method, from sweep JSON files; a run stopped
    at a time cap is left out of its rate (the legend counts those)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows, seen = [], set()
    for p in paths:  # a cell run twice (two sweeps overlapping) counts once per method
        for r in json.loads(Path(p).read_text())["rows"]:
            for k in [k for k in r if k.startswith(("ours_", "gtsam_")) and isinstance(r[k], dict)]:
                if (r["graph"], r["rate"], r["seed"], k) not in seen:
                    seen.add((r["graph"], r["rate"], r["seed"], k))
                    rows.append({"graph": r["graph"], "rate": r["rate"], k: r[k]})
    fig, ax = plt.subplots(figsize=(6, 4))
    keys = sorted({(r["graph"], k) for r in rows for k in r if k.startswith(("ours_", "gtsam_")) and isinstance(r[k], dict)})
    for graph, key in keys:
        cells, stopped = {}, 0
        for r in rows:
            if r["graph"] == graph and key in r:
                if "stopped" in r[key]:  # not run to its end: its result is unknown, not a miss
                    stopped += 1
                    continue
                cells.setdefault(r["rate"], []).append(r[key]["relative"] <= 0.01)
        rates = sorted(cells)
        if not rates:
            continue
        label = f"{graph} {key.replace('_', ' ').upper().replace('OURS', 'jaxgraph').replace('GTSAM', 'GTSAM')}"
        label += " (" + "/".join(str(len(cells[x])) for x in rates) + " seeds" + (f"; {stopped} stopped" if stopped else "") + ")"
        ax.plot([100 * x for x in rates], [100 * np.mean(cells[x]) for x in rates], "o-" if "ours" in key else "s--",
                label=label)
    ax.set_xlabel("false loop closures (% of edges)")
    ax.set_ylabel("runs within 1 % of the clean optimum (%)")
    ax.set_title("runs stopped at a time cap are left out (their result is unknown)", fontsize=8)
    ax.set_ylim(-5, 105)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print("wrote", out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plot", nargs="+", metavar="JSON", help="plot sweep JSON files (to --out, a .png) and exit")
    ap.add_argument("--sweep", action="store_true", help="run the sweep (rates x seeds) instead of one corruption")
    ap.add_argument("--rates", default="0.1,0.2,0.3,0.5", help="sweep: outlier rates (default 0.1,0.2,0.3,0.5)")
    ap.add_argument("--seeds", default="0-9", help="sweep: seeds, 'a-b' or comma-separated (default 0-9)")
    ap.add_argument("--gtsam-losses", default="tls", help="sweep: GTSAM losses to run, '' for none (default tls)")
    ap.add_argument("--prefilter-stats", action="store_true",
                    help="sweep: also time the consistency pre-filter alone and count what it keeps and drops")
    ap.add_argument("--append", action="store_true", help="sweep: append rows to an existing --out")
    ap.add_argument("--files", default="intel,sphere2500", help="comma-separated stems (default: intel,sphere2500)")
    ap.add_argument("--losses", default="tls,gm", help="comma-separated losses (default: tls,gm)")
    ap.add_argument("--fraction", type=float, default=0.1, help="false loop closures per edge (default: 0.1)")
    ap.add_argument("--seed", type=int, default=0, help="corruption seed (default: 0)")
    ap.add_argument("--skip-gtsam", action="store_true", help="do not run GTSAM (default: run it)")
    ap.add_argument("--gtsam-cap", type=float, default=1800.0,
                    help="seconds allowed per GTSAM GncLMOptimizer run; a longer one is stopped and recorded so (default 1800)")
    ap.add_argument("--gtsam-stop-after-ours", type=float, default=None, metavar="S",
                    help="sweep: stop each GTSAM run S seconds after ours' time on the same cell (counted from "
                         "the child's start, its imports included), so a stopped run took longer than ours")
    ap.add_argument("--cache", default=None, metavar="DIR",
                    help="sweep: jaxgraph.enable_compilation_cache(DIR) first (an empty folder: the first "
                         "cell compiles; the rows count the GNC programs traced per cell)")
    ap.add_argument("--skip-warm", action="store_true", help="do not time a second (compiled) GNC call")
    ap.add_argument("--out", default=None, help="result JSON (default results/gnc_cpu.json, sweep: gnc_sweep_cpu.json)")
    args = ap.parse_args()
    if args.plot:
        return plot(args.plot, args.out or str(ROOT / "benchmarks" / "results" / "gnc_sweep.png"))
    if args.out is None:
        args.out = str(ROOT / "benchmarks" / "results" / ("gnc_sweep_cpu.json" if args.sweep else "gnc_cpu.json"))
    if args.sweep:
        return sweep(args)

    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    import jaxgraph
    from jaxgraph.io.synthetic import add_random_loop_closures

    results = {}
    load_before = os.getloadavg()
    tmpdir = tempfile.mkdtemp(prefix="jaxgraph_gnc_")
    for stem in args.files.split(","):
        clean, values = jaxgraph.io.read_g2o(DATA / f"{stem}.g2o")
        bad, outlier = add_random_loop_closures(clean, values, args.fraction, seed=args.seed)
        path = Path(tmpdir) / f"{stem}_outliers.g2o"
        jaxgraph.io.write_g2o(path, bad, values)
        bad, values = jaxgraph.io.read_g2o(path)  # exactly what GTSAM reads
        clean_opt = float(jaxgraph.solve(clean, values)[1].cost)
        (lm, _), lm_s = _timed(jaxgraph.solve, bad, values)
        entry = {
            "edges": int(clean.group("edges").count),
            "false_loop_closures": int(outlier.sum()),
            "clean_optimum": clean_opt,
            "plain_lm": {"clean_cost": float(clean.cost(lm)), "seconds": lm_s},
        }
        print(stem, "clean optimum", clean_opt, "plain LM", entry["plain_lm"], flush=True)
        for loss in args.losses.split(","):
            (x, w, info), s = _timed(jaxgraph.gnc, bad, values, loss)
            inl = np.asarray(w["edges"]) > 0.5
            ours = {
                "clean_cost": float(clean.cost(x)),
                "relative_to_clean_optimum": float(clean.cost(x)) / clean_opt - 1,
                "seconds_with_compile": s,
                "iterations": int(info.iterations),
                "inner_iterations": int(info.inner_iterations),
                "status": int(info.status),
                "false_accepted": int((inl & outlier).sum()),
                "true_rejected": int((~inl & ~outlier).sum()),
            }
            if not args.skip_warm:
                ours["warm_seconds"] = _timed(jaxgraph.gnc, bad, values, loss)[1]
            entry[f"ours_{loss}"] = ours
            print(" ours", loss, ours, flush=True)
            if not args.skip_gtsam:
                entry[f"gtsam_{loss}"] = run_gtsam_capped(path, stem, loss, clean.variables[0].kind == "SE3", args.gtsam_cap)
                print(" gtsam", loss, entry[f"gtsam_{loss}"], flush=True)
        results[stem] = entry
        _write(args, load_before, results)  # after every file: a stopped run keeps what it measured


def _write(args, load_before, results):
    from _machine import machine_info

    report = {
        "machine": machine_info(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "note": "2-core machine; check the load averages: times are only comparable at low load",
        "fraction": args.fraction,
        "seed": args.seed,
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=1)
    print("wrote", args.out, flush=True)


if __name__ == "__main__":
    main()
