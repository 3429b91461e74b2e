"""``jaxgraph solve INPUT.g2o --batch B [--noise SIGMA] [--seed S]``: Monte Carlo robustness of
a map, ``B`` copies with perturbed initial values solved in one vmapped call, optionally
split over the processes of a multi-process run (:mod:`jaxgraph.cli.cluster`)."""

from __future__ import annotations

import argparse

from . import cluster
from .common import (
    Options,
    SolveFailed,
    check_output_paths,
    error,
    exit_code,
    note,
    read_input,
    solver_flags,
    timed,
    use_compile_cache,
)
from .report import build_report, finite_or_none, write_report


#: ``--noise`` when not given: the tangent-space standard deviation of the perturbations.
DEFAULT_NOISE = 0.01


def run_batch(input_path, batch: int, sigma: float, seed: int, output=None, report=None, *, run=None, verbose=True,
              **options) -> dict:
    """Solve ``batch`` perturbed copies of a graph in one vmapped call; returns the report dict.

    Compiled ahead of time and run once; reports the spread of the final costs and problems per
    second.

    Args:
      input_path: the g2o file.
      batch: number of copies (>= 1).
      sigma: standard deviation of the tangent-space perturbation of every pose (metres and
        radians, >= 0); copy ``k`` starts from ``Exp(N(0, sigma^2))`` applied to the file's values.
      seed: random seed of the perturbations (the same seed gives the same copies).
      output: receives the lowest-cost converged solution (g2o); report: the JSON report; None
        writes none.
      options: :class:`jaxgraph.cli.common.Options` fields (``method``, ``linear_solver``,
        ``max_iterations``, ``float32``, ``strict``, ``overwrite``).
      run: a :class:`jaxgraph.distributed.RunInfo` when this is one process of a multi-process
        run: the batch is split over all devices of all processes and process 0 alone prints
        and writes.
      verbose: print the graph's size and a summary line.

    Raises ``ValueError``/``OSError`` for bad arguments or input and :class:`SolveFailed`
    when no copy converged (the report is written first).
    """
    opts = Options(**options).resolved(input_path)  # format from the file name, diagonal damping for BA
    if run is not None and run.process_index != 0:
        output = report = None
        verbose = False
    if batch < 1:
        raise ValueError(f"--batch must be a positive integer, got {batch}")
    if not 0.0 <= sigma < float("inf"):
        raise ValueError(f"--noise must be a finite non-negative standard deviation, got {sigma}")
    check_output_paths(input_path, overwrite=opts.overwrite, output=output, report=report)
    import jax
    import numpy as np

    from ..io import write_g2o
    from ..io.synthetic import perturbed_copies
    from ..runtime import distributed
    from ..runtime.compile_cache import entry_point
    from ..solver import solve

    inp = read_input(input_path, opts)
    problem = inp.problem
    copies = perturbed_copies(problem, inp.values, batch, sigma, seed)
    if verbose:
        print(
            f"{input_path}: {inp.describe()}; {batch} copies, initial values perturbed by "
            f"Exp(N(0, {sigma}^2)), seed {seed}; compiling the batched solve...",
            flush=True,
        )

    def one(v):
        return solve(problem, v, **opts.solver_settings())

    if run is None:
        solve_all = entry_point(jax.vmap(one))
    else:
        solve_all = distributed.sharded_vmap(one)
        copies = distributed.shard_batch(copies)
    compiled, compile_seconds = timed(lambda: solve_all.lower(copies).compile())
    (out, info), seconds = timed(compiled, copies)
    if run is not None:
        out, info = distributed.gather((out, info), batch_size=batch)
    costs = np.asarray(info.cost, dtype=np.float64)
    initial = np.asarray(info.initial_cost, dtype=np.float64)
    converged = np.asarray(info.converged)
    # JSON has no NaN: non-finite costs are written as null.
    rep = build_report(inp, {
        "batch": batch,
        "noise_sigma": sigma,
        "seed": seed,
        "initial_cost": {"min": float(initial.min()), "median": float(np.median(initial)), "max": float(initial.max())},
        "final_cost": {
            "min": finite_or_none(float(costs.min())),
            "median": finite_or_none(float(np.median(costs))),
            "max": finite_or_none(float(costs.max())),
            "std": finite_or_none(float(costs.std())),
            "per_problem": [finite_or_none(c) for c in costs.tolist()],
        },
        "iterations": np.asarray(info.iterations).tolist(),
        "converged": int(np.sum(converged)),
        "problems_per_second": batch / seconds,
    }, opts, compile_seconds=compile_seconds, solve_seconds=seconds)
    if run is not None:
        rep["processes"], rep["devices"] = run.process_count, run.global_devices
    if output and converged.any():
        best = int(np.argmin(np.where(converged, costs, np.inf)))
        write_g2o(output, problem, jax.tree_util.tree_map(lambda x: x[best], out))
        rep["output"] = str(output)
        rep["output_problem_index"] = best
    write_report(report, rep)
    if verbose:
        fc = rep["final_cost"]
        print(
            f"final cost over {batch} problems: min {fc['min']}, median {fc['median']}, max {fc['max']} "
            f"(std {fc['std']}); {rep['converged']}/{batch} converged; {rep['problems_per_second']:.2f} problems/s "
            f"({seconds:.3f} s per batched call, compile {compile_seconds:.1f} s)",
            flush=True,
        )
        written = [rep.get("output"), str(report) if report else None]
        if any(written):
            print("wrote " + ", ".join(p for p in written if p), flush=True)
    if not converged.any():
        raise SolveFailed(f"none of the {batch} solves converged" + (f"; {output} not written" if output else ""))
    return rep


def batch_command(args: argparse.Namespace) -> int:
    """``jaxgraph solve --batch``: check the flag combinations, join a multi-process run when
    asked, solve the batch; the exit code."""
    if args.plot:
        note("--plot is ignored with --batch")
    if args.marginals:
        return error("--marginals needs --report and no --batch")
    if args.init != "file" or args.gnc:
        return error("--init chordal and --gnc do not combine with --batch")
    try:
        run = cluster.join_run(args)
    except (ValueError, RuntimeError) as exc:  # bad flags, or no cluster found / unreachable coordinator
        return error(str(exc))
    use_compile_cache(args.no_compile_cache)
    noise = DEFAULT_NOISE if args.noise is None else args.noise
    seed = 0 if args.seed is None else args.seed
    return exit_code(run_batch, args.input, args.batch, noise, seed, args.output, args.report, run=run,
                     **solver_flags(args))
