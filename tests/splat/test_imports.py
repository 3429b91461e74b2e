"""splat depends on jaxgraph's Lie groups only: importing it must not load the solver."""

import os
import subprocess
import sys

import pytest

SOLVER_MODULES = ("jaxgraph.solver", "jaxgraph.graph", "jaxgraph.linear", "jaxgraph.runtime",
                  "jaxgraph.algorithms")


def loaded_after_import(module: str) -> list:
    """Names in sys.modules after ``import module`` in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", f"import {module}, sys; print('\\n'.join(sys.modules))"],
        capture_output=True, text=True, check=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu")).stdout
    return out.split()


@pytest.mark.parametrize("module", ["splat", "splat.train"])
def test_import_splat_loads_no_solver_module(module):
    loaded = loaded_after_import(module)
    assert "jaxgraph.lie" in loaded
    solver = [m for m in loaded if any(m == s or m.startswith(s + ".") for s in SOLVER_MODULES)]
    assert solver == [], f"import {module} loaded {solver}"
