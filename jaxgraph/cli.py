"""Command-line interface.

``jaxgraph solve INPUT.g2o --output OUT.g2o --report REPORT.json [--method lm|gn]
[--linear-solver auto|cholesky|dense|pcg] [--max-iterations N] [--plot OUT.png]``
optimises a g2o pose graph, printing one progress line per iteration.

``jaxgraph demo [--out DIR]`` solves the bundled intel.g2o (Intel Research Lab, Seattle;
see ``jaxgraph/data/README.md``) and writes the optimised graph, the report and a
before/after plot into ``DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path


def _progress_printer(state: dict):
    def callback(iteration, cost, damping, step_norm, accepted):
        if state.get("quiet"):
            return
        print(
            f"  iter {int(iteration) + 1:4d}  cost {float(cost):.9e}  lambda {float(damping):.1e}  "
            f"|dx| {float(step_norm):.3e}  {'accepted' if bool(accepted) else 'rejected'}",
            flush=True,
        )

    return callback


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
    verbose=True,
) -> dict:
    """Read, solve (twice: the second, compiled call is timed), write; returns the report dict."""
    import jax

    if not float32:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import jaxgraph

    dtype = jnp.float32 if float32 else jnp.float64
    problem, values = jaxgraph.io.read_g2o(input_path, strict=strict, dtype=dtype)
    edges = sum(g.count for g in problem.factors if g.kind == "between")
    poses = problem.variables[0].count
    state = {"quiet": not verbose}
    cb = _progress_printer(state)
    kw = dict(method=method, linear_solver=linear_solver, max_iterations=max_iterations, callback=cb)
    if verbose:
        print(f"{input_path}: {poses} poses, {edges} edges ({problem.variables[0].kind}), method {method}", flush=True)
    t0 = time.perf_counter()
    out, info = jaxgraph.solve(problem, values, **kw)
    jax.block_until_ready((out, info))
    first = time.perf_counter() - t0
    state["quiet"] = True
    t0 = time.perf_counter()
    out, info = jaxgraph.solve(problem, values, **kw)
    jax.block_until_ready((out, info))
    solve_seconds = time.perf_counter() - t0
    from .solver import STATUS

    rep = {
        "input": os.fspath(input_path),
        "initial_cost": float(info.initial_cost),
        "final_cost": float(info.cost),
        "iterations": int(info.iterations),
        "accepted_steps": int(info.accepted_steps),
        "converged": bool(info.converged),
        "status": STATUS[int(info.status)],
        "compile_seconds": max(first - solve_seconds, 0.0),
        "solve_seconds": solve_seconds,
        "poses": int(poses),
        "edges": int(edges),
        "method": method,
        "linear_solver": linear_solver,
        "dtype": str(jnp.dtype(dtype)),
        "device": str(jax.devices()[0]),
        "platform": platform.platform(),
        "jax_version": jax.__version__,
    }
    if output:
        jaxgraph.io.write_g2o(output, problem, out)
    if report:
        Path(report).write_text(json.dumps(rep, indent=2) + "\n")
    if plot:
        rep["plot"] = os.fspath(plot) if plot_trajectories(plot, values["poses"], out["poses"], Path(input_path).stem) else None
    if verbose:
        print(
            f"initial cost {rep['initial_cost']:.9e} -> final cost {rep['final_cost']:.9e} in "
            f"{rep['iterations']} iterations ({rep['status']}); compile {rep['compile_seconds']:.2f} s, "
            f"solve {rep['solve_seconds']:.4f} s on {rep['device']}",
            flush=True,
        )
    return rep


def perturbed_copies(problem, values, batch: int, sigma: float, seed: int):
    """``batch`` copies of ``values`` moved by ``Exp(noise)``, noise ~ N(0, sigma^2) per tangent entry.

    Every variable is perturbed (fixed ones stay put: ``Problem.retract`` leaves them).
    Returns a dict of ``[batch, count, param_dim]`` arrays.
    """
    import jax

    total = sum(v.count for v in problem.variables)
    block = problem.structure.block_dim
    dtype = next(iter(values.values())).dtype
    keys = jax.random.split(jax.random.PRNGKey(seed), batch)
    noise = jax.vmap(lambda k: sigma * jax.random.normal(k, (total, block), dtype))(keys)
    return jax.vmap(lambda d: problem.retract(values, d))(noise)


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
    verbose=True,
) -> dict:
    """Monte Carlo robustness of a map: solve ``batch`` perturbed copies in one vmapped call.

    Reports the spread of the final costs and problems per second (of a second, compiled
    call). ``output`` receives the lowest-cost solution.
    """
    import jax

    if not float32:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    import jaxgraph

    if batch < 1:
        raise ValueError(f"--batch must be a positive integer, got {batch}")
    if not sigma >= 0.0:
        raise ValueError(f"--noise must be a non-negative standard deviation, got {sigma}")
    dtype = jnp.float32 if float32 else jnp.float64
    problem, values = jaxgraph.io.read_g2o(input_path, strict=strict, dtype=dtype)
    copies = perturbed_copies(problem, values, batch, sigma, seed)
    edges = sum(g.count for g in problem.factors if g.kind == "between")
    poses = problem.variables[0].count
    if verbose:
        print(
            f"{input_path}: {poses} poses, {edges} edges; {batch} copies, initial values perturbed by "
            f"Exp(N(0, {sigma}^2)), seed {seed}; compiling the batched solve...",
            flush=True,
        )
    solve_all = jax.jit(
        jax.vmap(lambda v: jaxgraph.solve(problem, v, method=method, linear_solver=linear_solver, max_iterations=max_iterations))
    )
    t0 = time.perf_counter()
    out, info = jax.block_until_ready(solve_all(copies))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    out, info = jax.block_until_ready(solve_all(copies))
    seconds = time.perf_counter() - t0
    costs = np.asarray(info.cost, dtype=np.float64)
    initial = np.asarray(info.initial_cost, dtype=np.float64)
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
        "converged": int(np.sum(np.asarray(info.converged))),
        "compile_seconds": max(first - seconds, 0.0),
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
    if output:
        best = int(np.argmin(costs))
        jaxgraph.io.write_g2o(output, problem, jax.tree_util.tree_map(lambda x: x[best], out))
        rep["output_problem_index"] = best
    if report:
        Path(report).write_text(json.dumps(rep, indent=2) + "\n")
    if verbose:
        fc = rep["final_cost"]
        print(
            f"final cost over {batch} problems: min {fc['min']:.9e}, median {fc['median']:.9e}, max {fc['max']:.9e} "
            f"(std {fc['std']:.3e}); {rep['converged']}/{batch} converged; {rep['problems_per_second']:.2f} problems/s "
            f"({seconds:.3f} s per batched call, compile {rep['compile_seconds']:.1f} s)",
            flush=True,
        )
    return rep


def _solve(args: argparse.Namespace) -> int:
    common = dict(
        method=args.method,
        linear_solver=args.linear_solver,
        max_iterations=args.max_iterations,
        float32=args.float32,
        strict=args.strict,
    )
    if args.batch is not None and args.plot:
        print("jaxgraph: note: --plot is ignored with --batch", file=sys.stderr)
    try:
        if args.batch is not None:
            run_batch(args.input, args.batch, args.noise, args.seed, args.output, args.report, **common)
        else:
            run_solve(args.input, args.output, args.report, plot=args.plot, **common)
    except (ValueError, OSError) as exc:
        print(f"jaxgraph: error: {exc}", file=sys.stderr)
        return 2
    return 0


def bundled_intel() -> Path:
    """Path of the bundled intel.g2o."""
    return Path(__file__).resolve().parent / "data" / "intel.g2o"


def _demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rep = run_solve(
        bundled_intel(),
        out / "intel_optimized.g2o",
        out / "report.json",
        plot=out / "intel.png",
        max_iterations=args.max_iterations,
    )
    print(f"wrote {out / 'intel_optimized.g2o'}, {out / 'report.json'}" + (f", {rep['plot']}" if rep.get("plot") else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxgraph", description="Pose-graph optimisation in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("solve", help="optimise a g2o pose graph")
    s.add_argument("input", help="input .g2o file")
    s.add_argument("--output", "-o", help="write the optimised graph here (.g2o)")
    s.add_argument("--report", help="write a JSON report here")
    s.add_argument("--method", choices=["lm", "gn"], default="lm")
    s.add_argument("--linear-solver", choices=["auto", "cholesky", "dense", "pcg"], default="auto")
    s.add_argument("--max-iterations", type=int, default=100)
    s.add_argument("--plot", help="write a before/after top-view PNG here (needs matplotlib)")
    s.add_argument("--float32", action="store_true", help="solve in float32 (default float64)")
    s.add_argument("--strict", action="store_true", help="reject non-positive-definite information matrices")
    s.add_argument("--batch", type=int, default=None, metavar="B",
                   help="solve B copies with perturbed initial values in one batched call (Monte Carlo)")
    s.add_argument("--noise", type=float, default=0.01, metavar="SIGMA",
                   help="with --batch: std. dev. of the tangent-space perturbation of every pose (default 0.01)")
    s.add_argument("--seed", type=int, default=0, metavar="S", help="with --batch: random seed (default 0)")
    s.set_defaults(func=_solve)

    d = sub.add_parser("demo", help="solve the bundled intel.g2o and plot it")
    d.add_argument("--out", default="jaxgraph_demo", help="output folder")
    d.add_argument("--max-iterations", type=int, default=100)
    d.set_defaults(func=_demo)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
