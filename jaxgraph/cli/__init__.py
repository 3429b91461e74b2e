"""Command-line interface.

``jaxgraph solve INPUT [--format g2o|bal|bundler|stereo] [--output OUT] [--report REPORT.json]
[--plot OUT.png] [--method lm|gn] [--linear-solver auto|host|cholesky|dense|pcg]
[--max-iterations N] [--(no-)diagonal-damping] [--init file|chordal] [--gnc tls|gm] ...``
optimises a problem once (a g2o pose or landmark graph, a BAL or Bundler bundle adjustment,
GTSAM's stereo visual odometry files; docs/formats.md): it checks the output paths, reads the
file, prints ``compiling for N poses, M factors...``, compiles ahead of time, then solves,
printing one progress line per iteration, and writes the result in the input's format;
compile and solve seconds are those of that one run.
``jaxgraph solve INPUT.g2o --batch B [--noise SIGMA] [--seed S]`` solves ``B`` perturbed
copies in one batched call instead (docs/batching.md).

``jaxgraph demo [--out DIR]`` solves the bundled intel.g2o (2D, Intel Research Lab, Seattle)
and sphere2500.g2o (3D; see ``jaxgraph/data/README.md``) and writes, for each, the optimised
graph, the report and a before/after plot into ``DIR`` (:mod:`.demo`).

Exit codes: 0 converged (outputs written); 1 the solver did not converge (the report is
written; the graph only if every value is finite and the solver did not fail, see
``docs/solver.md``); 2 bad input or arguments (one line on stderr).

Modules: :mod:`.solve` (one solve), :mod:`.batch` (``--batch``), :mod:`.cluster`
(multi-process flags), :mod:`.demo`, :mod:`.report` (the JSON report's common keys),
:mod:`.plot`, :mod:`.common` (exit codes, path checks, reading the input, compile cache,
progress lines). This module builds the parser and dispatches.

Compiled programs are kept in JAX's persistent compilation cache
(:func:`jaxgraph.enable_compilation_cache`): ``$JAX_COMPILATION_CACHE_DIR`` if set, else
``~/.cache/jaxgraph/jax``, at most ``$JAX_COMPILATION_CACHE_MAX_SIZE`` bytes per store (default
1 GiB, least recently used entries evicted); ``--no-compile-cache`` or
``JAXGRAPH_NO_COMPILE_CACHE=1`` turns it off.
"""

from __future__ import annotations

import argparse
import os

# One OpenBLAS thread, set before numpy, SciPy or jaxlib load their BLAS: with two threads on
# a busy 2-core machine a 156 x 156 Cholesky took 250 ms instead of 0.25 ms (OpenBLAS waits for
# a second thread that the solver's own threads keep busy). The user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from . import cluster
from .batch import DEFAULT_NOISE, batch_command, run_batch
from .common import (
    FORMATS,
    LIBRARY_TRIALS,
    NOT_CONVERGED,
    OK,
    USER_ERROR,
    SolveFailed,
    nonnegative_float,
    package_version,
    positive_float,
    positive_int,
    print_progress,
)
from .demo import bundled_intel, demo_command
from .solve import run_solve, solve_command

__all__ = [
    "NOT_CONVERGED",
    "OK",
    "USER_ERROR",
    "SolveFailed",
    "build_parser",
    "bundled_intel",
    "main",
    "print_progress",
    "run_batch",
    "run_solve",
]


def _solve(args: argparse.Namespace) -> int:
    """``jaxgraph solve``: with ``--batch`` a batch of perturbed copies, else one solve."""
    return solve_command(args) if args.batch is None else batch_command(args)


def _add_cache_flag(p: argparse.ArgumentParser) -> None:
    """Add ``--no-compile-cache`` to the subcommand parser ``p``."""
    p.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not use JAX's persistent compilation cache (default: on, in $JAX_COMPILATION_CACHE_DIR "
        "or ~/.cache/jaxgraph/jax, bounded by $JAX_COMPILATION_CACHE_MAX_SIZE bytes, default 1 GiB; "
        "JAXGRAPH_NO_COMPILE_CACHE=1 also turns it off)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``jaxgraph`` argument parser: subcommands ``solve`` and ``demo``; each sets ``func``, its handler."""
    parser = argparse.ArgumentParser(prog="jaxgraph", description="Pose-graph optimisation in JAX.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("solve", help="optimise a g2o graph or a bundle-adjustment / stereo problem",
                       description="Optimise a g2o pose or landmark graph, a BAL or Bundler bundle adjustment, or "
                       "GTSAM's stereo visual odometry files (solved once, compiled ahead of time).")
    s.add_argument("input", help="input file: .g2o, .bal, Bundler .out, or a file named by --format (a stereo "
                   "problem: the VO_stereo_factors*.txt file, with its calibration and poses files beside it)")
    s.add_argument("--format", choices=list(FORMATS), default=None,
                   help="input format (default: by the extension: .g2o g2o, .bal bal, .out bundler; a .txt file "
                   "needs --format bal or --format stereo); --output is written in the same format")
    s.add_argument("--output", "-o", help="write the optimised problem here, in the input's format (stereo: also "
                   "its _poses/_calibration files beside it) (default: not written)")
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
    s.add_argument("--max-iterations", type=positive_int, default=LIBRARY_TRIALS,
                   help="most trials, accepted and rejected LM steps (= linear solves) "
                   f"(default: {LIBRARY_TRIALS}, the library's)")
    s.add_argument("--tolerance", type=nonnegative_float, default=None, metavar="TOL",
                   help="stop when an accepted step lowers the cost by at most TOL times the cost (relative) or by "
                   "at most TOL (absolute); 0 turns both rules off (default: 1e-5, the library's and GTSAM's)")
    s.add_argument("--max-accepted-iterations", type=positive_int, default=None,
                   help="most accepted steps, the iterations GTSAM counts (default: no such cap)")
    s.add_argument("--diagonal-damping", action=argparse.BooleanOptionalAction, default=None,
                   help="LM damping lambda * diag(H) (clamped >= 1e-6) instead of lambda * I (default: on for "
                   "bundle adjustment, bal and bundler; off otherwise)")
    s.add_argument("--trackxyz", choices=["relative_point", "bearing_range"], default="relative_point",
                   help="g2o: read EDGE_SE3_TRACKXYZ as g2o means it (relative_point) or as GTSAM's reader does, "
                   "a bearing-range factor (default: relative_point)")
    s.add_argument("--landmark-prior", type=positive_float, default=None, metavar="SIGMA",
                   help="g2o: known landmarks: hold every landmark at its value in the file with this sigma in "
                   "metres (GTSAM's known-landmark reference uses 1e-6); pose 0 is then not anchored "
                   "(default: no prior, pose 0 anchored)")
    s.add_argument("--float32", action="store_true", help="solve in float32 (default: float64)")
    s.add_argument("--strict", action="store_true", help="g2o: reject non-positive-definite information matrices (default: repair them and warn)")
    s.add_argument("--init", choices=["file", "chordal"], default="file",
                   help="initial values: the file's, or chordal initialisation (rotation averaging + linear "
                   "translations; g2o files) (default: file)")
    s.add_argument("--gnc", choices=["tls", "gm"], default=None,
                   help="reject outlier loop closures by graduated non-convexity with this loss first, g2o files, "
                   "docs/robust.md (default: off)")
    s.add_argument("--batch", type=positive_int, default=None, metavar="B",
                   help="solve B copies with perturbed initial values in one batched call, Monte Carlo (default: one solve)")
    s.add_argument("--noise", type=nonnegative_float, default=None, metavar="SIGMA",
                   help=f"with --batch: std. dev. of the tangent-space perturbation of every pose (default: {DEFAULT_NOISE}; "
                   "refused without --batch)")
    s.add_argument("--seed", type=int, default=None, metavar="S",
                   help="with --batch: random seed (default: 0; refused without --batch)")
    s.add_argument("--marginals", action="store_true",
                   help="with --report: add every pose's marginal covariance at the solution (default: off)")
    cluster.add_flags(s)
    _add_cache_flag(s)
    s.set_defaults(func=_solve)

    d = sub.add_parser("demo", help="solve the bundled intel.g2o (2D) and sphere2500.g2o (3D) and plot them")
    d.add_argument("--out", default="jaxgraph_demo", help="output folder (default: jaxgraph_demo)")
    d.add_argument("--max-iterations", type=positive_int, default=100, help="maximum loop trips (default: 100)")
    _add_cache_flag(d)
    d.set_defaults(func=demo_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``jaxgraph`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code
    (0 converged, 1 not converged, 2 bad input or arguments; argparse exits 2 itself)."""
    args = build_parser().parse_args(argv)
    return args.func(args)
