"""``jaxgraph demo [--out DIR]``: solve two bundled pose graphs and write, for each, the optimised
graph, the report and a before/after plot into ``DIR``:

- ``intel.g2o`` (2D, the Intel Research Lab, Seattle): ``intel_optimized.g2o``, ``report.json``,
  ``intel.png``;
- ``sphere2500.g2o`` (3D, iSAM's synthetic sphere; its initial values are a tangle far from
  the sphere): ``sphere2500_optimized.g2o``, ``sphere2500_report.json``,
  ``sphere2500.png``.

Sources and licences: ``jaxgraph/data/README.md``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import error, exit_code, note, use_compile_cache
from .plot import MISSING, have_matplotlib
from .solve import run_solve

# (bundled file, optimised output, report) of each demo graph, in the order they are solved
GRAPHS = (("intel.g2o", "intel_optimized.g2o", "report.json"),
          ("sphere2500.g2o", "sphere2500_optimized.g2o", "sphere2500_report.json"))


def bundled_intel() -> Path:
    """Path of the bundled intel.g2o (:func:`jaxgraph.data.path`)."""
    from ..data import path

    return path("intel.g2o")


def demo_command(args: argparse.Namespace) -> int:
    """``jaxgraph demo``: create ``--out``, solve the demo graphs into it; the exit code (the
    first failing solve's)."""
    from ..data import path

    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return error(f"--out {out}: {exc.strerror or exc}")
    use_compile_cache(args.no_compile_cache)
    plots = have_matplotlib()
    if not plots:
        note(f"{MISSING}: no plots")
    for name, optimised, report in GRAPHS:
        # run_solve prints one "wrote" line per graph, naming only the files it wrote
        code = exit_code(run_solve, path(name), out / optimised, out / report,
                         plot=out / f"{Path(name).stem}.png" if plots else None,
                         max_iterations=args.max_iterations, overwrite=True)
        if code:
            return code
    return 0
