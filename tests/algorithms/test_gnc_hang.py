"""GNC must finish: the TLS flip scores' selected inversion used to deadlock XLA:CPU's pool.

Two batched LAPACK triangular solves of the selected inversion, ready side by side inside
GNC's compiled loop, each blocked one of the two pool threads waiting for chunks queued
behind the other (gdb: both in ``lapack_dtrsm_ffi`` -> ``ParallelBatchMap`` ->
``BlockingCounter::Wait``, the main thread in ``block_until_ready``, 0 % CPU).
``jaxgraph solve`` on intel's poses below id 300 with ``--gnc tls`` hung in 3 of 3 runs on
the loaded 2-core machine before ``jaxgraph.algorithms.serial_lapack.chained``, 0 of 15
after. The runs are in a subprocess with a timeout, as in tests/linear/test_smallmat.py:
a hang fails the test instead of stalling the suite.
"""

import subprocess
import sys
import textwrap
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.extend.core import Literal

import jaxgraph
from jaxgraph.algorithms.serial_lapack import chained

from ..shared_data import POSEGRAPH


def _run(code, timeout):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=timeout, check=False)
    assert out.returncode == 0 and "done" in out.stdout, (out.stdout[-2000:], out.stderr[-2000:])
    return out.stdout


def test_small_2d_graph_with_tls_finishes(tmp_path):
    # The small 2D graph: intel's first 300 poses (every edge between them), the
    # CLI's path (default linear solver, executable cache), solved three times in one
    # process (each execution of the compiled loop could deadlock).
    src = jaxgraph.data.path("intel.g2o")
    path = tmp_path / "intel300.g2o"
    keep = []
    with open(src) as fh:
        lines = fh.readlines()
    for line in lines:
        t = line.split()
        if t and ((t[0].startswith("VERTEX") and int(t[1]) < 300)
                  or (t[0].startswith("EDGE") and int(t[1]) < 300 and int(t[2]) < 300)):
            keep.append(line)
    path.write_text("".join(keep))
    stdout = _run(
        f"""
        import jax
        jax.config.update("jax_enable_x64", True)
        import jaxgraph
        problem, values = jaxgraph.io.read_g2o({str(path)!r})
        for _ in range(3):
            x, w, info = jaxgraph.gnc(problem, values, "tls")
            jax.block_until_ready(x)
        print("status", int(info.status), "cost", float(problem.cost(x)))
        print("done")
        """,
        timeout=300,
    )
    # the clean subgraph: every loop closure is an inlier, so GNC ends at the plain optimum
    cost = float(stdout.split("cost")[1].split()[0])
    problem, values = jaxgraph.io.read_g2o(path, dtype=jnp.float64)
    optimum = float(jaxgraph.solve(problem, values)[1].cost)
    assert cost <= optimum * (1 + 1e-6)


@pytest.mark.slow
def test_m3500_with_false_loop_closures_finishes():
    # The M3500 draw with 10 % random false loop closures stopped using the CPU
    # and ran for more than 15 minutes.
    path = POSEGRAPH / "input_M3500_g2o.g2o"
    if not path.exists():
        pytest.skip("shared data not available")
    _run(
        f"""
        import jax
        jax.config.update("jax_enable_x64", True)
        import jaxgraph
        from jaxgraph.io.synthetic import add_random_loop_closures
        clean, values = jaxgraph.io.read_g2o({str(path)!r})
        bad, _ = add_random_loop_closures(clean, values, 0.1, seed=0)
        x, w, info = jaxgraph.gnc(bad, values, "tls")
        jax.block_until_ready(x)
        print("done")
        """,
        timeout=900,
    )


def test_chained_keeps_values_and_orders_kernels():
    # Two independent triangular solves: chained gives the same numbers, and in its jaxpr
    # the second solve reads a value computed from the first one's result.
    rng = np.random.default_rng(0)
    L = np.tril(rng.standard_normal((8, 4, 4))) + 4 * np.eye(4)
    B = rng.standard_normal((8, 4, 4))

    def two(L, B):
        a = lax.linalg.triangular_solve(L, B, left_side=True, lower=True)
        b = lax.linalg.triangular_solve(L, jnp.eye(4) + 0 * B, left_side=True, lower=True)
        return a, b

    ref = jax.jit(two)(L, B)
    got = jax.jit(chained(two))(L, B)
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(np.asarray(r), np.asarray(g))
    eqns = jax.make_jaxpr(chained(two))(L, B).jaxpr.eqns
    solves = [i for i, e in enumerate(eqns) if e.primitive is lax.linalg.triangular_solve_p]
    assert len(solves) == 2
    first_out = eqns[solves[0]].outvars[0]
    # walk back from the second solve's operands: the first solve's output must be reached
    produced = {v: e for e in eqns for v in e.outvars}
    todo, seen = list(eqns[solves[1]].invars), set()
    while todo:
        v = todo.pop()
        if isinstance(v, Literal) or v in seen or v not in produced:
            continue
        seen.add(v)
        todo.extend(produced[v].invars)
    assert first_out in seen


# 27 s on intel: in the slow set for the suite's time; tests/linear/test_inverse.py checks the
# selected inverse against numpy's dense inverse by default.
@pytest.mark.slow
def test_chained_selected_inverse_matches_dense_inverse():
    # Through scans (the selected inversion's tiers): the blocks equal those of numpy's
    # dense inverse of the same normal equations.
    problem, values = jaxgraph.io.read_g2o(jaxgraph.data.path("intel.g2o"), dtype=jnp.float64)
    st = problem.structure
    lin = problem.prepared(jnp.float64).linearize(values)
    plan = jaxgraph.linear.selected_inverse_plan(st.num_blocks, st.block_dim, st.off_rows, st.off_cols)
    rows = np.arange(0, st.num_blocks, 97)
    fn = partial(jaxgraph.linear.selected_inverse, plan, pairs=(rows, rows))
    got, info = jax.jit(chained(fn))(lin.diag, lin.offdiag)
    assert not bool(info.clamped)
    d, n = st.block_dim, st.num_blocks
    H = np.zeros((n * d, n * d))
    for i, blk in enumerate(np.asarray(lin.diag)):
        H[i * d:(i + 1) * d, i * d:(i + 1) * d] = blk
    for r, c, blk in zip(st.off_rows, st.off_cols, np.asarray(lin.offdiag)):
        H[r * d:(r + 1) * d, c * d:(c + 1) * d] = blk
        H[c * d:(c + 1) * d, r * d:(r + 1) * d] = blk.T
    inv = np.linalg.inv(H)
    want = np.stack([inv[i * d:(i + 1) * d, i * d:(i + 1) * d] for i in rows])
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-8, atol=1e-12 * np.abs(want).max())
