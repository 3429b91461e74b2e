"""Schur complement (jaxgraph.linear.analyze_schur): eliminating independent variables first
gives the solution of the whole system (numpy's dense float64 solve), for every method of the
reduced system, under vmap and through reverse mode; a pattern that couples two eliminated
variables is refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgraph import linear


def _system(seed, kept=5, elim=12, b=2, d=3):
    """A random SPD block system: ``kept`` blocks (cameras) coupled among themselves, and
    ``elim`` eliminated variables of ``b`` blocks each (points), each seen by 2-3 kept blocks."""
    rng = np.random.default_rng(seed)
    n = kept + elim * b
    eliminate = kept + np.arange(elim * b).reshape(elim, b)
    rows, cols = [], []
    for i in range(kept - 1):
        rows.append(i)
        cols.append(i + 1)
    for j in range(elim):
        for c in rng.choice(kept, size=rng.integers(2, 4), replace=False):
            for s in range(b):
                if rng.random() < 0.5:  # either orientation is stored
                    rows.append(c)
                    cols.append(eliminate[j, s])
                else:
                    rows.append(eliminate[j, s])
                    cols.append(c)
        for s in range(b):
            for t in range(s + 1, b):
                rows.append(eliminate[j, s])
                cols.append(eliminate[j, t])
    rows, cols = np.asarray(rows), np.asarray(cols)
    off = rng.normal(size=(rows.size, d, d))
    dense = np.zeros((n * d, n * d))
    for k, (r, c) in enumerate(zip(rows, cols)):
        dense[r * d:(r + 1) * d, c * d:(c + 1) * d] += off[k]
        dense[c * d:(c + 1) * d, r * d:(r + 1) * d] += off[k].T
    # diagonal blocks making H diagonally dominant (positive definite)
    diag = np.zeros((n, d, d))
    for i in range(n):
        A = rng.normal(size=(d, d))
        diag[i] = A @ A.T + (np.abs(dense[i * d:(i + 1) * d]).sum() + 1) * np.eye(d)
        dense[i * d:(i + 1) * d, i * d:(i + 1) * d] += diag[i]
    rhs = rng.normal(size=(n, d))
    return n, d, rows, cols, eliminate, diag, off, rhs, dense


@pytest.mark.parametrize("method", ["dense", "cholesky", "host", "pcg"])
@pytest.mark.parametrize("b", [1, 2])
def test_schur_solve_equals_the_dense_solve(method, b):
    n, d, rows, cols, eliminate, diag, off, rhs, dense = _system(0, b=b)
    plan = linear.analyze_schur(n, d, rows, cols, eliminate, method=method)
    assert plan.reduced.num_blocks == 5
    x, info = linear.solve_with_info(plan, jnp.asarray(diag), jnp.asarray(off), jnp.asarray(rhs))
    ref = np.linalg.solve(dense, rhs.reshape(-1)).reshape(n, d)
    tol = 1e-8 if method == "pcg" else 1e-11
    np.testing.assert_allclose(np.asarray(x), ref, rtol=0, atol=tol * np.abs(ref).max())
    assert not bool(info.clamped)
    # a factorisation reused for another right-hand side (the implicit backward mode's use)
    fac = linear.factor(plan, jnp.asarray(diag), jnp.asarray(off))
    x2 = linear.solve_factored(plan, fac, jnp.asarray(2 * rhs))
    np.testing.assert_allclose(np.asarray(x2), 2 * ref, rtol=0, atol=2 * tol * np.abs(ref).max())


def test_schur_solve_under_vmap_and_grad():
    n, d, rows, cols, eliminate, diag, off, rhs, dense = _system(1)
    plan = linear.analyze_schur(n, d, rows, cols, eliminate, method="dense")
    scales = jnp.asarray([1.0, 3.0])
    xs = jax.vmap(lambda s: linear.solve(plan, jnp.asarray(diag) * s, jnp.asarray(off) * s, jnp.asarray(rhs)))(scales)
    for k, s in enumerate([1.0, 3.0]):
        ref = np.linalg.solve(dense * s, rhs.reshape(-1)).reshape(n, d)
        np.testing.assert_allclose(np.asarray(xs[k]), ref, rtol=0, atol=1e-11 * np.abs(ref).max())
    # d/d rhs of w . x = H^-1 w (H symmetric): reverse mode through the Schur solve
    w = np.random.default_rng(2).normal(size=(n, d))
    g = jax.grad(lambda b: jnp.sum(jnp.asarray(w) * linear.solve(plan, jnp.asarray(diag), jnp.asarray(off), b)))(
        jnp.asarray(rhs))
    ref = np.linalg.solve(dense, w.reshape(-1)).reshape(n, d)
    np.testing.assert_allclose(np.asarray(g), ref, rtol=0, atol=1e-10 * np.abs(ref).max())


def test_coupled_eliminated_variables_are_refused():
    n, d, rows, cols, eliminate, *_ = _system(3, b=1)
    rows = np.append(rows, eliminate[0, 0])
    cols = np.append(cols, eliminate[1, 0])
    with pytest.raises(ValueError, match="of different variables"):
        linear.analyze_schur(n, d, rows, cols, eliminate)
