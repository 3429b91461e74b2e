"""Schur complement (jaxgraph.linear.analyze_schur): eliminating independent variables first
gives the solution of the whole system (numpy's dense float64 solve), for every method of the
reduced system (the iterative one too, whose Schur-Jacobi blocks are the dense S's own), under
vmap and through reverse mode; a pattern that couples two eliminated variables is refused."""

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
    # pcg: the iterative Schur solve, to a tolerance the comparison can see
    options = {"pcg_tolerance": 1e-13} if method == "pcg" else {}
    plan = linear.analyze_schur(n, d, rows, cols, eliminate, method=method, **options)
    assert plan.reduced.num_blocks == 5
    assert plan.method == ("iterative" if method == "pcg" else method)
    x, info = linear.solve_with_info(plan, jnp.asarray(diag), jnp.asarray(off), jnp.asarray(rhs))
    ref = np.linalg.solve(dense, rhs.reshape(-1)).reshape(n, d)
    tol = 1e-8 if method == "pcg" else 1e-11
    np.testing.assert_allclose(np.asarray(x), ref, rtol=0, atol=tol * np.abs(ref).max())
    assert not bool(info.clamped)
    # a factorisation reused for another right-hand side (the implicit backward mode's use)
    fac = linear.factor(plan, jnp.asarray(diag), jnp.asarray(off))
    x2 = linear.solve_factored(plan, fac, jnp.asarray(2 * rhs))
    np.testing.assert_allclose(np.asarray(x2), 2 * ref, rtol=0, atol=2 * tol * np.abs(ref).max())


# 29 s: in the slow set for the suite's time; the default set keeps vmap and reverse mode
# through a Schur plan in test_iterative_schur_under_vmap_and_reverse_mode.
@pytest.mark.slow
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


def _dense_schur(dense, kept, eliminate, d):
    """``S = C - E P^-1 E^T`` in numpy float64 over the kept blocks."""
    k = np.concatenate([np.arange(b * d, (b + 1) * d) for b in kept])
    e = np.concatenate([np.arange(b * d, (b + 1) * d) for b in eliminate.reshape(-1)])
    return dense[np.ix_(k, k)] - dense[np.ix_(k, e)] @ np.linalg.solve(dense[np.ix_(e, e)], dense[np.ix_(e, k)])


def test_iterative_schur_preconditions_whole_kept_variables():
    from jaxgraph.linear import _schur

    n, d, rows, cols, eliminate, diag, off, rhs, dense = _system(4, kept=6, b=2)
    kept_vars = [np.arange(6).reshape(3, 2)]  # the kept blocks as 3 variables of 2 blocks
    plan = linear.analyze_schur(n, d, rows, cols, eliminate, method="pcg", kept_variables=kept_vars,
                                pcg_tolerance=1e-13)
    fac = linear.factor(plan, jnp.asarray(diag), jnp.asarray(off))
    S = _dense_schur(dense, np.arange(6), eliminate, d)
    L = fac[4]
    for v in range(3):
        np.testing.assert_allclose(np.asarray(L[v] @ L[v].T), S[v * 2 * d:(v + 1) * 2 * d, v * 2 * d:(v + 1) * 2 * d],
                                   rtol=1e-12, atol=1e-12 * np.abs(S).max())
    x, info = linear.solve_with_info(plan, jnp.asarray(diag), jnp.asarray(off), jnp.asarray(rhs))
    ref = np.linalg.solve(dense, rhs.reshape(-1)).reshape(n, d)
    np.testing.assert_allclose(np.asarray(x), ref, rtol=0, atol=1e-10 * np.abs(ref).max())
    assert 0 < int(info.iterations) <= 6 * d and float(info.residual_norm) <= 1e-13
    # the matrix-free operator is the dense S
    v = np.random.default_rng(5).normal(size=(6, d))
    np.testing.assert_allclose(np.asarray(_schur._apply_s(plan, fac, jnp.asarray(v))).reshape(-1),
                               S @ v.reshape(-1), rtol=1e-12, atol=1e-12 * np.abs(S).max())
    # the explicit S summed per unit of 2 blocks, for the factorising methods
    for method in ("dense", "host", "cholesky"):
        explicit = linear.analyze_schur(n, d, rows, cols, eliminate, method=method, kept_variables=kept_vars)
        assert explicit.units.shape == (3, 2)
        xe = linear.solve(explicit, jnp.asarray(diag), jnp.asarray(off), jnp.asarray(rhs))
        np.testing.assert_allclose(np.asarray(xe), ref, rtol=0, atol=1e-11 * np.abs(ref).max())
    with pytest.raises(ValueError, match="leaves 2 kept blocks out"):
        linear.analyze_schur(n, d, rows, cols, eliminate, method="pcg", kept_variables=[np.arange(4).reshape(2, 2)])
    with pytest.raises(ValueError, match="must list kept blocks, each once"):
        linear.analyze_schur(n, d, rows, cols, eliminate, method="pcg", kept_variables=[eliminate[:3]])


def test_iterative_schur_under_vmap_and_reverse_mode():
    n, d, rows, cols, eliminate, diag, off, rhs, dense = _system(6)
    plan = linear.analyze_schur(n, d, rows, cols, eliminate, method="pcg", pcg_tolerance=1e-13)
    D, O, b = jnp.asarray(diag), jnp.asarray(off), jnp.asarray(rhs)
    xs = jax.vmap(lambda s: linear.solve(plan, D * s, O * s, b))(jnp.asarray([1.0, 2.0]))
    for k, s in enumerate([1.0, 2.0]):
        ref = np.linalg.solve(dense * s, rhs.reshape(-1)).reshape(n, d)
        np.testing.assert_allclose(np.asarray(xs[k]), ref, rtol=0, atol=1e-10 * np.abs(ref).max())
    w = jnp.asarray(np.random.default_rng(7).normal(size=(n, d)))

    def loss(D, O, b):
        return jnp.sum(w * linear.solve(plan, D, O, b))

    gD, gO, gb = jax.grad(loss, argnums=(0, 1, 2))(D, O, b)
    np.testing.assert_allclose(np.asarray(gb), np.linalg.solve(dense, np.asarray(w).reshape(-1)).reshape(n, d),
                               rtol=0, atol=1e-9 * np.abs(np.asarray(gb)).max())
    # the blocks' cotangents against central differences (float64)
    for name, arr, g, idx in (("diag", D, gD, (3, 0, 1)), ("offdiag", O, gO, (2, 1, 0))):
        e = jnp.zeros_like(arr).at[idx].set(1e-6)
        args = [D, O, b]
        k = 0 if name == "diag" else 1
        plus, minus = list(args), list(args)
        plus[k], minus[k] = arr + e, arr - e
        fd = (float(loss(*plus)) - float(loss(*minus))) / 2e-6
        # a diagonal block stands for its symmetric part: the FD of one entry sees half of each side
        assert abs(float(g[idx]) - fd) <= 1e-6 * max(1.0, abs(fd)), (name, float(g[idx]), fd)


def test_auto_solves_large_reduced_systems_iteratively(monkeypatch):
    from jaxgraph.linear import _schur

    n, d, rows, cols, eliminate, *_ = _system(8)
    assert linear.analyze_schur(n, d, rows, cols, eliminate).method != "iterative"
    monkeypatch.setattr(_schur, "ITERATIVE_MIN_UNKNOWNS", 5 * d)  # the 5 kept blocks
    assert linear.analyze_schur(n, d, rows, cols, eliminate).method == "iterative"
