"""The public data sets of ../shared/data (beside the repository) as the tests read them."""

from pathlib import Path

import jax.numpy as jnp
import pytest

import jaxgraph

POSEGRAPH = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "posegraph"


def read_posegraph(name: str):
    """``read_g2o`` of ``posegraph/<name>.g2o`` in float64; the test is skipped without the data."""
    path = POSEGRAPH / f"{name}.g2o"
    if not path.exists():
        pytest.skip("shared data not available")
    return jaxgraph.io.read_g2o(path, dtype=jnp.float64)
