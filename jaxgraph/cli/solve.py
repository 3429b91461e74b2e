"""``jaxgraph solve INPUT [--format g2o|bal|bundler|stereo]``: one solve, compiled ahead of
time, the result written in the input's format; ``--init chordal`` and ``--gnc`` choose its
start (g2o files), ``--marginals`` adds covariances to the report. With ``--batch`` the
command is :mod:`jaxgraph.cli.batch` instead."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import cluster
from .common import (
    Options,
    SolveFailed,
    check_output_paths,
    error,
    exit_code,
    note,
    print_progress,
    read_input,
    solver_flags,
    timed,
    use_compile_cache,
    variable_id,
    write_output,
)
from .plot import MISSING, have_matplotlib, plot_trajectories
from .report import build_report, finite_or_none, write_report


def run_solve(input_path, output=None, report=None, *, plot=None, marginals=False, init="file", gnc=None,
              verbose=True, **options) -> dict:
    """Check the paths, read, compile ahead of time, solve once, write; returns the report dict.

    Args:
      input_path: the input file (g2o, BAL, Bundler or stereo factors; ``format``).
      output, report, plot: where to write the optimised problem (in the input's format),
        the JSON report and the before/after PNG (problems with poses); None writes none.
      marginals: add every variable's marginal covariance at the solution to the report
        (``jaxgraph.marginals``; key ``"marginals"``).
      verbose: print the graph's size, one progress line per trial and a summary.
      init: ``"file"`` starts from the file's values, ``"chordal"`` from
        :func:`jaxgraph.initialize.chordal`.
      gnc: ``"tls"`` or ``"gm"`` first runs :func:`jaxgraph.gnc` and then solves the graph
        with its final weights (rejected loop closures weigh 0) from its solution.
      options: :class:`jaxgraph.cli.common.Options` fields (``method``, ``linear_solver``,
        ``max_iterations``, ``float32``, ``strict``, ``overwrite``, ``format``: by the file
        name when None, ``diagonal_damping``: on for bal and bundler when None).

    Raises ``ValueError``/``OSError`` for bad input (before any solving when it is about the
    paths) and :class:`SolveFailed` when the solve did not converge (the report is written
    first; the graph too if its values are finite and the solver did not fail).
    """
    opts = Options(**options).resolved(input_path)
    if opts.format != "g2o" and (init != "file" or gnc):
        raise ValueError(f"--init chordal and --gnc need a g2o pose graph, not a {opts.format} file")
    if plot and opts.format in ("bal", "bundler"):
        raise ValueError(f"--plot draws poses; a {opts.format} file holds cameras and points")
    check_output_paths(input_path, overwrite=opts.overwrite, output=output, report=report, plot=plot)
    if plot and not have_matplotlib():
        raise ValueError(f"--plot {plot}: {MISSING}")
    import jax

    from ..algorithms.marginals import report as marginals_report
    from ..solver import STATUS, SolverConfig
    from ..solver.api import compile_solve

    inp = read_input(input_path, opts)
    problem, values = inp.problem, inp.values
    graph, start, extra = _prepare_start(problem, values, init, gnc, opts.solver_settings(), verbose)
    nfactors = sum(g.count for g in problem.factors)
    config = SolverConfig(method=opts.method, linear_solver=opts.linear_solver,
                          callback=print_progress if verbose else None).replace(
        max_iterations=opts.max_iterations, max_accepted_iterations=opts.max_accepted_iterations,
        diagonal_damping=opts.diagonal_damping, **({} if opts.tolerance is None else {"tolerance": opts.tolerance}))
    if verbose:
        damped = ", diagonal damping" if opts.method == "lm" and opts.diagonal_damping else ""
        print(f"{input_path}: {inp.describe()}, method {opts.method}{damped}", flush=True)
        print(f"compiling for {inp.sizes()}, {nfactors} factors...", flush=True)
    if graph.anchored is not None:  # said even without --verbose: the solution is of a held problem
        group, index = graph.anchored
        note(f"no factor fixes the gauge: {group}[{index}] is held at its initial value (add a prior to free it)")
    (compiled, args), compile_seconds = timed(compile_solve, graph, start, config)
    if verbose:
        print(f"compiled in {compile_seconds:.2f} s; solving", flush=True)

    def solve_once():
        out, info = compiled(*args)
        return args[0].unpad_values(out, problem), info  # size-class solves run on a padded copy

    (out, info), solve_seconds = timed(solve_once)
    jax.effects_barrier()  # every progress line printed before the summary

    status = int(info.status)
    rep = build_report(inp, {
        "initial_cost": finite_or_none(float(info.initial_cost)),
        "final_cost": finite_or_none(float(info.cost)),
        "iterations": int(info.iterations),
        "accepted_steps": int(info.accepted_steps),
        "converged": bool(info.converged),
        "status": STATUS[status],
        "status_code": status,
        "linear_clamped": int(info.linear_clamped),
        "compile_cache": jax.config.jax_compilation_cache_dir if jax.config.jax_enable_compilation_cache else None,
        "factors": int(nfactors),
        "init": init,
        **extra,
    }, opts, compile_seconds=compile_seconds, solve_seconds=solve_seconds)
    bad = first_non_finite(out)
    # Written only when finite and the loop ended normally (converged, max_iterations or
    # max_accepted_iterations).
    writable = bad is None and (rep["converged"] or status in (0, 8))
    if marginals and writable:
        rep["marginals"], rep["marginals_seconds"] = timed(marginals_report, graph, out)
    if output and writable:
        write_output(inp.format, output, problem, out)
        rep["output"] = os.fspath(output)
    if plot and writable:
        drawn = plot_trajectories(plot, values["poses"], out["poses"], Path(input_path).stem)
        rep["plot"] = os.fspath(plot) if drawn else None
    write_report(report, rep)
    if verbose:
        final = "nan" if rep["final_cost"] is None else f"{rep['final_cost']:.9e}"
        initial = "nan" if rep["initial_cost"] is None else f"{rep['initial_cost']:.9e}"
        print(
            f"initial cost {initial} -> final cost {final} in {rep['iterations']} iterations ({rep['status']}); "
            f"compile {compile_seconds:.2f} s, solve {solve_seconds:.4f} s on {rep['device']}",
            flush=True,
        )
        # only the files this run wrote (the plot is skipped without matplotlib)
        written = [rep.get("output"), rep.get("plot"), os.fspath(report) if report else None]
        if any(written):
            print("wrote " + ", ".join(p for p in written if p), flush=True)
    if not rep["converged"]:
        if bad is not None:
            group, k = bad
            label = "vertex id" if group == "poses" and "vertex_ids" in problem.metadata else "id"
            why = f"{group} {k} ({label} {variable_id(problem, group, k)}) is not finite"
        else:
            why = STATUS[status]
        kept = f"; wrote {output} anyway (finite, last iterate)" if output and writable else (f"; {output} not written" if output else "")
        raise SolveFailed(f"the solve did not converge: {why}{kept}")
    return rep


def first_non_finite(values: dict):
    """``(group, index)`` of the first variable with a non-finite number in ``values``, or None."""
    import numpy as np

    for name, x in values.items():
        bad = np.nonzero(~np.all(np.isfinite(np.asarray(x)), axis=-1))[0]
        if bad.size:
            return name, int(bad[0])
    return None


def _prepare_start(problem, values, init, gnc, solve_options, verbose):
    """``(problem to solve, initial values, report entries)`` for ``--init`` and ``--gnc``."""
    extra = {}
    start = values
    if init == "chordal":
        from ..algorithms.initialize import chordal

        start, extra["init_seconds"] = timed(chordal, problem, values)
        if verbose:
            print(f"chordal initialisation: cost {float(problem.cost(values)):.6e} -> {float(problem.cost(start)):.6e}", flush=True)
    if not gnc:
        return problem, start, extra
    import numpy as np

    from ..algorithms.gnc import GNC_STATUS, weighted_problem
    from ..algorithms.gnc import gnc as run_gnc

    (start, weights, info), seconds = timed(run_gnc, problem, start, gnc, **solve_options)
    ids = problem.metadata["vertex_ids"]
    edges = problem.group("edges")
    rejected = np.nonzero(np.asarray(weights["edges"]) <= 0.5)[0]
    pairs = ids[edges.indices.array[rejected]]
    status = GNC_STATUS[int(info.status)]
    extra.update(
        gnc=gnc,
        gnc_seconds=seconds,
        gnc_status=status,
        gnc_iterations=int(info.iterations),
        gnc_candidates=int(info.num_candidates),
        gnc_rejected=[[int(a), int(b)] for a, b in pairs],
        gnc_inconsistent=int(info.inconsistent),
        gnc_prefilter_rejected=int(info.prefilter_rejected),
    )
    if verbose:
        print(f"GNC ({gnc}): {len(rejected)} of {int(info.num_candidates)} candidate edges rejected "
              f"in {int(info.iterations)} iterations ({status})", flush=True)
    if not bool(info.converged):
        raise SolveFailed(f"GNC did not converge: {status}; {int(info.inconsistent)} candidate edges' weights "
                          "differ from their decision at its last solution")
    return weighted_problem(problem, {k: w for k, w in weights.items() if k == "edges"}), start, extra


def solve_command(args: argparse.Namespace) -> int:
    """``jaxgraph solve`` without ``--batch``: check the flag combinations, solve; the exit code."""
    if args.marginals and not args.report:
        return error("--marginals needs --report and no --batch")
    for flag, value in (("--noise", args.noise), ("--seed", args.seed)):
        if value is not None:
            return error(f"{flag} applies to --batch (the perturbation of the batch's copies); "
                         "a single solve starts from the file's values")
    if cluster.flags_given(args):
        return error("--distributed / --coordinator need --batch (a multi-process run splits a batch)")
    use_compile_cache(args.no_compile_cache)
    return exit_code(run_solve, args.input, args.output, args.report, plot=args.plot, marginals=args.marginals,
                     init=args.init, gnc=args.gnc, **solver_flags(args))

