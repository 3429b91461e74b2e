"""Command-line interface.

``jaxgraph solve INPUT.g2o [--output OUT.g2o] [--report REPORT.json] [--plot OUT.png]
[--method lm|gn] [--linear-solver auto|host|cholesky|dense|pcg] [--max-iterations N]
[--init file|chordal] [--gnc tls|gm] ...``
optimises a g2o pose graph once: it checks the output paths, reads the graph, prints
``compiling for N poses, M factors...``, compiles ahead of time, then solves, printing one
progress line per iteration; compile and solve seconds are those of that one run.

``jaxgraph demo [--out DIR]`` solves the bundled intel.g2o (Intel Research Lab, Seattle;
see ``jaxgraph/data/README.md``) and writes the optimised graph, the report and a
before/after plot into ``DIR``.

Exit codes: 0 converged (outputs written); 1 the solver did not converge (the report is
written; the graph only if every value is finite and the solver did not fail, see
``docs/solver.md``); 2 bad input or arguments (one line on stderr).

Compiled programs are kept in JAX's persistent compilation cache
(:func:`jaxgraph.enable_compilation_cache`): ``$JAX_COMPILATION_CACHE_DIR`` if set, else
``~/.cache/jaxgraph/jax``, at most ``$JAX_COMPILATION_CACHE_MAX_SIZE`` bytes per store (default
1 GiB, least recently used entries evicted); ``--no-compile-cache`` or
``JAXGRAPH_NO_COMPILE_CACHE=1`` turns it off.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

# Exit codes.
OK, NOT_CONVERGED, USER_ERROR = 0, 1, 2


class SolveFailed(RuntimeError):
    """The solve ran but did not give a result that may be written (exit code 1)."""


def print_progress(iteration, cost, damping, step_norm, accepted):
    """The solver ``callback`` of ``jaxgraph solve``: one line per trial. A module-level
    function, so the compiled solve that calls it is found again in the persistent
    compilation cache by the next ``jaxgraph`` process (see jaxgraph/solver/progress.py)."""
    print(
        f"  iter {int(iteration) + 1:4d}  cost {float(cost):.9e}  lambda {float(damping):.1e}  "
        f"|dx| {float(step_norm):.3e}  {'accepted' if bool(accepted) else 'rejected'}",
        flush=True,
    )


def check_output_paths(input_path, *, overwrite: bool = False, **paths) -> None:
    """Fail fast (``ValueError`` naming the flag) unless every given output path can be written.

    ``paths``: flag name -> path or None (``output=...``, ``report=...``, ``plot=...``). An output
    may not be the input file unless ``overwrite``; two outputs may not share a path. A path
    that does not exist yet is created and removed again to prove the folder is writable.
    """
    seen = {}
    src = Path(input_path) if input_path is not None else None
    for flag, path in paths.items():
        if path is None:
            continue
        name = "--" + flag.replace("_", "-")
        p = Path(path)
        key = os.path.abspath(p)
        if key in seen:
            raise ValueError(f"{name} and {seen[key]} are the same file {path}")
        seen[key] = name
        if p.is_dir():
            raise ValueError(f"{name} {path} is a folder, expected a file path")
        if src is not None and p.exists() and src.exists() and os.path.samefile(p, src):
            if flag != "output" or not overwrite:
                raise ValueError(f"{name} {path} is the input file; pass --overwrite to replace the input with the result")
        folder = p.parent if str(p.parent) else Path(".")
        if not folder.is_dir():
            raise ValueError(f"{name} {path}: folder {folder} does not exist")
        try:
            if p.exists():
                with open(p, "a"):
                    pass
            else:
                with open(p, "x"):
                    pass
                p.unlink()
        except OSError as exc:
            raise ValueError(f"{name} {path} is not writable: {exc.strerror or exc}") from None


def first_non_finite(values: dict):
    """``(group, index)`` of the first variable with a non-finite number, or None."""
    import numpy as np

    for name, x in values.items():
        bad = np.nonzero(~np.all(np.isfinite(np.asarray(x)), axis=-1))[0]
        if bad.size:
            return name, int(bad[0])
    return None


def _finite_or_none(x: float):
    return x if math.isfinite(x) else None


def plot_trajectories(path, before, after, title: str = "") -> bool:
    """Top view (x, y) of the poses before and after optimisation; returns False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'jaxgraph[plot]'): skipping the plot", file=sys.stderr)
        return False
    import numpy as np

    def xy(v):
        v = np.asarray(v)
        return (v[:, 0], v[:, 1]) if v.shape[1] == 3 else (v[:, 4], v[:, 5])

    fig, axes = plt.subplots(1, 2, figsize=(12, 6))
    for ax, vals, name, color in ((axes[0], before, "initial", "tab:gray"), (axes[1], after, "optimised", "tab:blue")):
        x, y = xy(vals)
        ax.plot(x, y, "-", lw=0.6, color=color)
        ax.set_title(f"{title} {name}".strip())
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _write_report(report, rep: dict) -> None:
    if report:
        Path(report).write_text(json.dumps(rep, indent=2, allow_nan=False) + "\n")


def run_solve(
    input_path,
    output=None,
    report=None,
    *,
    method="lm",
    linear_solver="auto",
    max_iterations=100,
    plot=None,
    float32=False,
    strict=False,
    overwrite=False,
    marginals=False,
    verbose=True,
    init="file",
    gnc=None,
) -> dict:
    """Check the paths, read, compile ahead of time, solve once, write; returns the report dict.

    ``marginals``: add every variable's marginal covariance at the solution to the report
    (``jaxgraph.marginals``; key ``"marginals"``).
    ``init="chordal"`` starts from :func:`jaxgraph.initialize.chordal` instead of the file's
    values; ``gnc="tls"|"gm"`` first runs :func:`jaxgraph.gnc` and then solves the graph
    with its final weights (rejected loop closures weigh 0) from its solution.

    Raises ``ValueError``/``OSError`` for bad input (before any solving when it is about the
    paths) and :class:`SolveFailed` when the solve did not converge (the report is written
    first; the graph too if its values are finite and the solver did not fail).
    """
    check_output_paths(input_path, overwrite=overwrite, output=output, report=report, plot=plot)
    import jax

    if not float32:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import jaxgraph
    from ..algorithms.marginals import report as marginals_report
    from ..solver import STATUS, SolverConfig
    from ..solver.api import compile_solve

    dtype = jnp.float32 if float32 else jnp.float64
    problem, values = jaxgraph.io.read_g2o(input_path, strict=strict, dtype=dtype)
    graph, start, extra = _prepare_start(problem, values, init, gnc, dict(method=method, linear_solver=linear_solver, max_iterations=max_iterations), verbose)
    edges = sum(g.count for g in problem.factors if g.kind == "between")
    nfactors = sum(g.count for g in problem.factors)
    poses = problem.variables[0].count
    config = SolverConfig(method=method, linear_solver=linear_solver, callback=print_progress if verbose else None).replace(
        max_iterations=max_iterations
    )
    if verbose:
        print(f"{input_path}: {poses} poses, {edges} edges ({problem.variables[0].kind}), method {method}", flush=True)
        print(f"compiling for {poses} poses, {nfactors} factors...", flush=True)
    t0 = time.perf_counter()
    compiled, args = compile_solve(graph, start, config)
    compile_seconds = time.perf_counter() - t0
    if verbose:
        print(f"compiled in {compile_seconds:.2f} s; solving", flush=True)
    t0 = time.perf_counter()
    out, info = jax.block_until_ready(compiled(*args))
    out = args[0].unpad_values(out, problem)  # size-class solves run on a padded copy
    solve_seconds = time.perf_counter() - t0
    jax.effects_barrier()  # every progress line printed before the summary

    status = int(info.status)
    rep = {
        "input": os.fspath(input_path),
        "initial_cost": _finite_or_none(float(info.initial_cost)),
        "final_cost": _finite_or_none(float(info.cost)),
        "iterations": int(info.iterations),
        "accepted_steps": int(info.accepted_steps),
        "converged": bool(info.converged),
        "status": STATUS[status],
        "status_code": status,
        "linear_clamped": int(info.linear_clamped),
        "compile_seconds": compile_seconds,
        "solve_seconds": solve_seconds,
        "compile_cache": jax.config.jax_compilation_cache_dir if jax.config.jax_enable_compilation_cache else None,
        "poses": int(poses),
        "edges": int(edges),
        "factors": int(nfactors),
        "method": method,
        "linear_solver": linear_solver,
        "dtype": str(jnp.dtype(dtype)),
        "device": str(jax.devices()[0]),
        "platform": platform.platform(),
        "jax_version": jax.__version__,
        "init": init,
        **extra,
    }
    bad = first_non_finite(out)
    # Written only when finite and the loop ended normally (converged or max_iterations).
    writable = bad is None and (rep["converged"] or status == 0)
    if marginals and writable:
        t0 = time.perf_counter()
        rep["marginals"] = marginals_report(graph, out)
        rep["marginals_seconds"] = time.perf_counter() - t0
    if output and writable:
        jaxgraph.io.write_g2o(output, problem, out)
        rep["output"] = os.fspath(output)
    if plot and writable:
        rep["plot"] = os.fspath(plot) if plot_trajectories(plot, values["poses"], out["poses"], Path(input_path).stem) else None
    _write_report(report, rep)
    if verbose:
        cost = "nan" if rep["final_cost"] is None else f"{rep['final_cost']:.9e}"
        init = "nan" if rep["initial_cost"] is None else f"{rep['initial_cost']:.9e}"
        print(
            f"initial cost {init} -> final cost {cost} in {rep['iterations']} iterations ({rep['status']}); "
            f"compile {compile_seconds:.2f} s, solve {solve_seconds:.4f} s on {rep['device']}",
            flush=True,
        )
    if not rep["converged"]:
        if bad is not None:
            group, k = bad
            vid = int(problem.metadata["vertex_ids"][k]) if group == "poses" else k
            why = f"{group} {k} (vertex id {vid}) is not finite"
        else:
            why = STATUS[status]
        kept = f"; wrote {output} anyway (finite, last iterate)" if output and writable else (f"; {output} not written" if output else "")
        raise SolveFailed(f"the solve did not converge: {why}{kept}")
    return rep


def _prepare_start(problem, values, init, gnc, solve_options, verbose):
    """``(problem to solve, initial values, report entries)`` for ``--init`` and ``--gnc``."""
    extra = {}
    start = values
    if init == "chordal":
        from ..algorithms.initialize import chordal

        t0 = time.perf_counter()
        start = chordal(problem, values)
        extra["init_seconds"] = time.perf_counter() - t0
        if verbose:
            print(f"chordal initialisation: cost {float(problem.cost(values)):.6e} -> {float(problem.cost(start)):.6e}", flush=True)
    if not gnc:
        return problem, start, extra
    import numpy as np

    from ..algorithms.gnc import GNC_STATUS, gnc as run_gnc, weighted_problem

    t0 = time.perf_counter()
    start, weights, info = run_gnc(problem, start, gnc, **solve_options)
    ids = problem.metadata["vertex_ids"]
    edges = problem.group("edges")
    rejected = np.nonzero(np.asarray(weights["edges"]) <= 0.5)[0]
    pairs = ids[edges.indices.array[rejected]]
    extra.update(
        gnc=gnc,
        gnc_seconds=time.perf_counter() - t0,
        gnc_status=GNC_STATUS[int(info.status)],
        gnc_iterations=int(info.iterations),
        gnc_candidates=int(info.num_candidates),
        gnc_rejected=[[int(a), int(b)] for a, b in pairs],
    )
    if verbose:
        print(f"GNC ({gnc}): {len(rejected)} of {int(info.num_candidates)} candidate edges rejected "
              f"in {int(info.iterations)} iterations ({GNC_STATUS[int(info.status)]})", flush=True)
    if not bool(info.converged):
        raise SolveFailed(f"GNC did not converge: {GNC_STATUS[int(info.status)]}")
    return weighted_problem(problem, {k: w for k, w in weights.items() if k == "edges"}), start, extra


def run_batch(
    input_path,
    batch: int,
    sigma: float,
    seed: int,
    output=None,
    report=None,
    *,
    method="lm",
    linear_solver="auto",
    max_iterations=100,
    float32=False,
    strict=False,
    overwrite=False,
    run=None,
    verbose=True,
) -> dict:
    """Monte Carlo robustness of a map: solve ``batch`` perturbed copies in one vmapped call.

    Compiled ahead of time and run once; reports the spread of the final costs and problems per
    second. ``output`` receives the lowest-cost converged solution.
    ``run``: a :class:`jaxgraph.distributed.RunInfo` when this is one process of a
    multi-process run: the batch is split over all devices of all processes and process 0
    alone prints and writes.
    """
    if run is not None and run.process_index != 0:
        output = report = None
        verbose = False
    if batch < 1:
        raise ValueError(f"--batch must be a positive integer, got {batch}")
    if not sigma >= 0.0:
        raise ValueError(f"--noise must be a non-negative standard deviation, got {sigma}")
    check_output_paths(input_path, overwrite=overwrite, output=output, report=report)
    import jax

    if not float32:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    import jaxgraph
    from ..runtime import distributed
    from ..runtime.compile_cache import entry_point

    dtype = jnp.float32 if float32 else jnp.float64
    problem, values = jaxgraph.io.read_g2o(input_path, strict=strict, dtype=dtype)
    from ..io.synthetic import perturbed_copies

    copies = perturbed_copies(problem, values, batch, sigma, seed)
    edges = sum(g.count for g in problem.factors if g.kind == "between")
    poses = problem.variables[0].count
    if verbose:
        print(
            f"{input_path}: {poses} poses, {edges} edges; {batch} copies, initial values perturbed by "
            f"Exp(N(0, {sigma}^2)), seed {seed}; compiling the batched solve...",
            flush=True,
        )
    def one(v):
        return jaxgraph.solve(problem, v, method=method, linear_solver=linear_solver, max_iterations=max_iterations)

    if run is None:
        solve_all = entry_point(jax.vmap(one))
    else:
        solve_all = distributed.sharded_vmap(one)
        copies = distributed.shard_batch(copies)
    t0 = time.perf_counter()
    compiled = solve_all.lower(copies).compile()
    compile_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    out, info = jax.block_until_ready(compiled(copies))
    seconds = time.perf_counter() - t0
    if run is not None:
        out, info = distributed.gather((out, info), batch_size=batch)
    costs = np.asarray(info.cost, dtype=np.float64)
    initial = np.asarray(info.initial_cost, dtype=np.float64)
    converged = np.asarray(info.converged)
    rep = {
        "input": os.fspath(input_path),
        "batch": batch,
        "noise_sigma": sigma,
        "seed": seed,
        "initial_cost": {"min": float(initial.min()), "median": float(np.median(initial)), "max": float(initial.max())},
        "final_cost": {
            "min": float(costs.min()),
            "median": float(np.median(costs)),
            "max": float(costs.max()),
            "std": float(costs.std()),
            "per_problem": costs.tolist(),
        },
        "iterations": np.asarray(info.iterations).tolist(),
        "converged": int(np.sum(converged)),
        "compile_seconds": compile_seconds,
        "solve_seconds": seconds,
        "problems_per_second": batch / seconds,
        "poses": int(poses),
        "edges": int(edges),
        "method": method,
        "linear_solver": linear_solver,
        "dtype": str(jnp.dtype(dtype)),
        "device": str(jax.devices()[0]),
        "platform": platform.platform(),
        "jax_version": jax.__version__,
    }
    if run is not None:
        rep["processes"], rep["devices"] = run.process_count, run.global_devices
    if not np.all(np.isfinite(costs)):  # JSON has no NaN: the report would not be valid
        for key in ("min", "median", "max", "std"):
            rep["final_cost"][key] = _finite_or_none(rep["final_cost"][key])
        rep["final_cost"]["per_problem"] = [_finite_or_none(c) for c in costs.tolist()]
    if output and converged.any():
        best = int(np.argmin(np.where(converged, costs, np.inf)))
        jaxgraph.io.write_g2o(output, problem, jax.tree_util.tree_map(lambda x: x[best], out))
        rep["output_problem_index"] = best
    _write_report(report, rep)
    if verbose:
        fc = rep["final_cost"]
        print(
            f"final cost over {batch} problems: min {fc['min']}, median {fc['median']}, max {fc['max']} "
            f"(std {fc['std']}); {rep['converged']}/{batch} converged; {rep['problems_per_second']:.2f} problems/s "
            f"({seconds:.3f} s per batched call, compile {compile_seconds:.1f} s)",
            flush=True,
        )
    if not converged.any():
        raise SolveFailed(f"none of the {batch} solves converged" + (f"; {output} not written" if output else ""))
    return rep


def _use_compile_cache(disabled: bool) -> None:
    if disabled or os.environ.get("JAXGRAPH_NO_COMPILE_CACHE", "") not in ("", "0"):
        import jax

        # Off means off, even where JAX would read $JAX_COMPILATION_CACHE_DIR by itself.
        jax.config.update("jax_enable_compilation_cache", False)
        return
    from ..runtime.compile_cache import enable_compilation_cache

    try:
        enable_compilation_cache()
    except OSError as exc:  # an unwritable cache folder must not stop a solve
        print(f"jaxgraph: note: compilation cache disabled ({exc})", file=sys.stderr)


def _run(fn, *args, **kwargs) -> int:
    try:
        fn(*args, **kwargs)
    except SolveFailed as exc:
        print(f"jaxgraph: {exc}", file=sys.stderr)
        return NOT_CONVERGED
    except (ValueError, OSError) as exc:
        print(f"jaxgraph: error: {exc}", file=sys.stderr)
        return USER_ERROR
    return OK


def _solve(args: argparse.Namespace) -> int:
    common = dict(
        method=args.method,
        linear_solver=args.linear_solver,
        max_iterations=args.max_iterations,
        float32=args.float32,
        strict=args.strict,
        overwrite=args.overwrite,
    )
    if args.batch is not None and args.plot:
        print("jaxgraph: note: --plot is ignored with --batch", file=sys.stderr)
    if args.marginals and (args.batch is not None or not args.report):
        print("jaxgraph: error: --marginals needs --report and no --batch", file=sys.stderr)
        return USER_ERROR
    if args.batch is not None and (args.init != "file" or args.gnc):
        print("jaxgraph: error: --init chordal and --gnc do not combine with --batch", file=sys.stderr)
        return USER_ERROR
    from ..runtime.distributed import initialize_from_cli

    try:
        run = initialize_from_cli(args)
    except (ValueError, RuntimeError) as exc:  # bad flags, or no cluster found / unreachable coordinator
        print(f"jaxgraph: error: {exc}", file=sys.stderr)
        return USER_ERROR
    _use_compile_cache(args.no_compile_cache)
    if args.batch is not None:
        return _run(run_batch, args.input, args.batch, args.noise, args.seed, args.output, args.report, run=run, **common)
    return _run(run_solve, args.input, args.output, args.report, plot=args.plot, marginals=args.marginals,
                init=args.init, gnc=args.gnc, **common)


def bundled_intel() -> Path:
    """Path of the bundled intel.g2o (:func:`jaxgraph.data.path`)."""
    from ..data import path

    return path("intel.g2o")


def _demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"jaxgraph: error: --out {out}: {exc.strerror or exc}", file=sys.stderr)
        return USER_ERROR
    _use_compile_cache(args.no_compile_cache)
    code = _run(
        run_solve,
        bundled_intel(),
        out / "intel_optimized.g2o",
        out / "report.json",
        plot=out / "intel.png",
        max_iterations=args.max_iterations,
        overwrite=True,
    )
    if code == OK:
        print(f"wrote {out / 'intel_optimized.g2o'}, {out / 'report.json'}, {out / 'intel.png'}")
    return code


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _add_cache_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not use JAX's persistent compilation cache (default: on, in $JAX_COMPILATION_CACHE_DIR "
        "or ~/.cache/jaxgraph/jax, bounded by $JAX_COMPILATION_CACHE_MAX_SIZE bytes, default 1 GiB; "
        "JAXGRAPH_NO_COMPILE_CACHE=1 also turns it off)",
    )


def _add_distributed_flags(p: argparse.ArgumentParser) -> None:
    """``jaxgraph solve --batch`` as one process of a multi-process run (docs/batching.md)."""
    p.add_argument("--distributed", choices=["off", "auto"], default="off",
                   help="with --batch: 'auto' joins a multi-process run detected from the cluster environment "
                        "(SLURM, Open MPI) (default: off, one process)")
    p.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="with --batch: process 0's coordinator address; needs --num-processes and --process-id "
                        "(default: none, one process)")
    p.add_argument("--num-processes", type=_positive_int, default=None, metavar="N",
                   help="with --coordinator: processes in the run (default: none)")
    p.add_argument("--process-id", type=int, default=None, metavar="I",
                   help="with --coordinator: this process, 0..N-1 (default: none)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxgraph", description="Pose-graph optimisation in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("solve", help="optimise a g2o pose graph", description="Optimise a g2o pose graph (solved once, compiled ahead of time).")
    s.add_argument("input", help="input .g2o file")
    s.add_argument("--output", "-o", help="write the optimised graph here (.g2o) (default: not written)")
    s.add_argument("--report", help="write a JSON report here (default: not written)")
    s.add_argument("--plot", help="write a before/after top-view PNG here, needs matplotlib (default: no plot)")
    s.add_argument("--overwrite", action="store_true", help="allow --output to be the input file (default: refused)")
    s.add_argument("--method", choices=["lm", "gn"], default="lm", help="Levenberg-Marquardt or Gauss-Newton (default: lm)")
    s.add_argument(
        "--linear-solver",
        choices=["auto", "host", "cholesky", "dense", "pcg"],
        default="auto",
        help="linear solver of the normal equations: host = CHOLMOD on the CPU, cholesky = sparse "
        "Cholesky in JAX, dense, pcg; auto = dense up to 300 unknowns, else host on the CPU, "
        "see docs/linear.md (default: auto)",
    )
    s.add_argument("--max-iterations", type=_positive_int, default=100, help="maximum loop trips = linear solves (default: 100)")
    s.add_argument("--float32", action="store_true", help="solve in float32 (default: float64)")
    s.add_argument("--strict", action="store_true", help="reject non-positive-definite information matrices (default: repair them and warn)")
    s.add_argument("--init", choices=["file", "chordal"], default="file",
                   help="initial values: the file's, or chordal initialisation (rotation averaging + linear translations) (default: file)")
    s.add_argument("--gnc", choices=["tls", "gm"], default=None,
                   help="reject outlier loop closures by graduated non-convexity with this loss first, docs/robust.md (default: off)")
    s.add_argument("--batch", type=int, default=None, metavar="B",
                   help="solve B copies with perturbed initial values in one batched call, Monte Carlo (default: one solve)")
    s.add_argument("--noise", type=float, default=0.01, metavar="SIGMA",
                   help="with --batch: std. dev. of the tangent-space perturbation of every pose (default: 0.01)")
    s.add_argument("--seed", type=int, default=0, metavar="S", help="with --batch: random seed (default: 0)")
    s.add_argument("--marginals", action="store_true",
                   help="with --report: add every pose's marginal covariance at the solution (default: off)")
    _add_distributed_flags(s)
    _add_cache_flag(s)
    s.set_defaults(func=_solve)

    d = sub.add_parser("demo", help="solve the bundled intel.g2o and plot it")
    d.add_argument("--out", default="jaxgraph_demo", help="output folder (default: jaxgraph_demo)")
    d.add_argument("--max-iterations", type=_positive_int, default=100, help="maximum loop trips (default: 100)")
    _add_cache_flag(d)
    d.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
