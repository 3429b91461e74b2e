"""``jaxgraph demo [--out DIR]``: solve the bundled intel.g2o (Intel Research Lab, Seattle; see
``jaxgraph/data/README.md``) and write the optimised graph, the report and a before/after plot
into ``DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import error, exit_code, note, use_compile_cache
from .plot import MISSING, have_matplotlib
from .solve import run_solve


def bundled_intel() -> Path:
    """Path of the bundled intel.g2o (:func:`jaxgraph.data.path`)."""
    from ..data import path

    return path("intel.g2o")


def demo_command(args: argparse.Namespace) -> int:
    """``jaxgraph demo``: create ``--out``, solve intel.g2o into it; the exit code."""
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return error(f"--out {out}: {exc.strerror or exc}")
    use_compile_cache(args.no_compile_cache)
    plot = out / "intel.png"
    if not have_matplotlib():
        note(f"{MISSING}: no plot")
        plot = None
    # run_solve prints the "wrote" line, naming only the files it wrote (no plot without matplotlib)
    return exit_code(
        run_solve,
        bundled_intel(),
        out / "intel_optimized.g2o",
        out / "report.json",
        plot=plot,
        max_iterations=args.max_iterations,
        overwrite=True,
    )
