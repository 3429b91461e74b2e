"""``jaxgraph demo [--out DIR]``: solve the bundled intel.g2o (Intel Research Lab, Seattle; see
``jaxgraph/data/README.md``) and write the optimised graph, the report and a before/after plot
into ``DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import OK, error, exit_code, use_compile_cache
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
    code = exit_code(
        run_solve,
        bundled_intel(),
        out / "intel_optimized.g2o",
        out / "report.json",
        plot=out / "intel.png",
        max_iterations=args.max_iterations,
        overwrite=True,
    )
    if code == OK:  # the plot is skipped without matplotlib: name only the files written
        written = [p for p in (out / "intel_optimized.g2o", out / "report.json", out / "intel.png") if p.exists()]
        print("wrote " + ", ".join(str(p) for p in written))
    return code
