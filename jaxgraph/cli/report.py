"""The JSON report of ``jaxgraph solve`` (one solve or ``--batch``): the keys both write, in
one place, and writing it as strict JSON (docs/solver.md lists the keys)."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path

from .common import Input, Options


def finite_or_none(x: float):
    """``x``, or None when it is not finite (JSON has no NaN or infinity)."""
    return x if math.isfinite(x) else None


def build_report(inp: Input, results: dict, options: Options, compile_seconds: float, solve_seconds: float) -> dict:
    """The report dict: ``input``, then the command's own ``results``, then the keys every run reports.

    ``inp``: the graph read; ``options``: the run's settings. The common keys: ``compile_seconds`` and ``solve_seconds`` (wall-clock seconds of the
    ahead-of-time compilation and of the one compiled call), ``poses``, ``edges``, ``format`` (the
    input's), ``variables`` (group name -> count), ``diagonal_damping``, ``method``,
    ``linear_solver``, ``dtype``, ``device`` (JAX's first device), ``platform`` (the host's)
    and ``jax_version``.
    """
    import jax

    return {
        "input": os.fspath(inp.path),
        **results,
        "compile_seconds": compile_seconds,
        "solve_seconds": solve_seconds,
        "poses": inp.poses,
        "edges": inp.edges,
        "format": inp.format,
        "variables": inp.variables,
        "diagonal_damping": bool(options.solver_settings()["diagonal_damping"]),
        "method": options.method,
        "linear_solver": options.linear_solver,
        "dtype": str(inp.dtype),
        "device": str(jax.devices()[0]),
        "platform": platform.platform(),
        "jax_version": jax.__version__,
    }


def write_report(path, report: dict) -> None:
    """Write ``report`` to ``path`` as indented strict JSON (a NaN raises); nothing when ``path`` is None."""
    if path:
        Path(path).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
