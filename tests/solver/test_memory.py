"""Peak memory of a batched solve is linear in the batch size and within a documented bound.

XLA's compiled memory analysis gives, without running, the bytes a compiled program needs
for its arguments, outputs and temporaries: an exact, machine-independent upper bound on the
peak of that program. The bound documented in docs/batching.md is
``BYTES_PER_PROBLEM_EDGE * batch * edges`` for the vmapped LM solve of sphere2500-sized graphs.
"""

from pathlib import Path

import jax
import pytest

import jaxgraph

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "posegraph"
BYTES_PER_PROBLEM_EDGE = 60_000  # documented bound (docs/batching.md), float64, sphere2500


def _compiled_bytes(problem, values, batch):
    spec = {k: jax.ShapeDtypeStruct((batch,) + v.shape, v.dtype) for k, v in values.items()}
    compiled = jax.jit(jax.vmap(lambda v: jaxgraph.solve(problem, v))).lower(spec).compile()
    stats = compiled.memory_analysis()
    return stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes


@pytest.mark.slow
@pytest.mark.skipif(not DATA.exists(), reason="shared pose-graph data not present")
def test_batch_of_64_sphere2500_problems_memory_bound():
    problem, values = jaxgraph.io.read_g2o(DATA / "sphere2500.g2o")
    edges = sum(g.count for g in problem.factors)
    small, large = _compiled_bytes(problem, values, 8), _compiled_bytes(problem, values, 64)
    print(f"sphere2500 batched solve: batch 8 -> {small / 2**20:.1f} MiB, batch 64 -> {large / 2**20:.1f} MiB")
    assert large <= BYTES_PER_PROBLEM_EDGE * 64 * edges
    # Linear in the batch: 8x the problems needs at most ~8x the memory (plus shared constants).
    assert large <= 8.5 * small
