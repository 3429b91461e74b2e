"""Public selected inversion and conjugate gradients of jaxgraph.linear against dense float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgraph import linear

from .test_linear import dense_reference, random_system, union_pattern


def _blocks(S, d, rows, cols):
    return np.stack([S[i * d:(i + 1) * d, j * d:(j + 1) * d] for i, j in zip(rows, cols)])


def test_selected_inverse_matches_dense_inverse():
    d = 3
    n, r, c = union_pattern()
    diag, offd, _ = random_system(n, d, r, c, seed=2)
    S = np.linalg.inv(dense_reference(n, d, r, c, diag, offd))
    plan = linear.selected_inverse_plan(n, d, r, c)
    assert linear.selected_inverse_plan(n, d, r, c) is plan  # cached per pattern
    # every diagonal block, then the pattern's off-diagonal blocks in both orders
    rows = np.concatenate([np.arange(n), r, c])
    cols = np.concatenate([np.arange(n), c, r])
    blocks, info = jax.jit(lambda D, O: linear.selected_inverse(plan, D, O, pairs=(rows, cols)))(diag, offd)
    assert blocks.shape == (rows.size, d, d) and blocks.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(blocks), _blocks(S, d, rows, cols), rtol=0, atol=1e-10 * np.abs(S).max())
    assert not bool(info.clamped)
    assert info.pivot_ratio.shape == (n,) and float(info.pivot_ratio.min()) > 1e-3
    # leading batch axes: the same as one call per problem
    diag2, offd2, _ = random_system(n, d, r, c, seed=3)
    both, binfo = linear.selected_inverse(plan, np.stack([diag, diag2]), np.stack([offd, offd2]), pairs=(rows, cols))
    np.testing.assert_allclose(np.asarray(both[0]), np.asarray(blocks), rtol=0, atol=1e-12 * np.abs(S).max())
    S2 = np.linalg.inv(dense_reference(n, d, r, c, diag2, offd2))
    np.testing.assert_allclose(np.asarray(both[1]), _blocks(S2, d, rows, cols), rtol=0, atol=1e-10 * np.abs(S2).max())
    assert binfo.pivot_ratio.shape == (2, n)


def test_selected_inverse_flags_singular_and_refuses_pairs_off_the_pattern():
    d = 2
    n, r, c = union_pattern()
    diag, offd, _ = random_system(n, d, r, c, seed=4, prior=False)  # no prior: H singular
    plan = linear.selected_inverse_plan(n, d, r, c)
    ids = np.arange(n)
    _, info = linear.selected_inverse(plan, diag, offd, pairs=(ids, ids))
    eps = np.finfo(np.float64).eps
    assert bool(info.clamped) or float(info.pivot_ratio.min()) < 10 * np.sqrt(n * d) * eps
    with pytest.raises(ValueError, match="pattern"):  # block 0 (chain) and block 6 (tree) never meet
        linear.selected_inverse(plan, diag, offd, pairs=(np.array([0]), np.array([6])))
    with pytest.raises(ValueError, match="outside"):
        linear.selected_inverse(plan, diag, offd, pairs=(np.array([0]), np.array([n])))


@pytest.mark.parametrize("start", ["zero", "preconditioned"])
def test_conjugate_gradient_matches_dense_solve(start):
    d = 3
    n, r, c = union_pattern()
    diag, offd, rhs = random_system(n, d, r, c, seed=5)
    H = dense_reference(n, d, r, c, diag, offd)
    Hj = jnp.asarray(H)
    dinv = jnp.asarray(np.linalg.inv(np.diag(np.diag(H))))  # Jacobi preconditioner

    def apply_a(v):
        return (Hj @ v.reshape(-1)).reshape(n, d)

    def precondition(v):
        return (dinv @ v.reshape(-1)).reshape(n, d)

    b = jnp.asarray(rhs)
    x0 = precondition(b) if start == "preconditioned" else None
    x, k, rel = jax.jit(lambda b, x0: linear.conjugate_gradient(apply_a, b, precondition, max_iterations=500,
                                                                tolerance=1e-12, x0=x0))(b, x0)
    xr = np.linalg.solve(H, rhs.reshape(-1)).reshape(n, d)
    np.testing.assert_allclose(np.asarray(x), xr, rtol=0, atol=1e-9 * np.abs(xr).max())
    assert 0 < int(k) < 500 and float(rel) <= 1e-12
    assert k.dtype == jnp.int32 and rel.dtype == jnp.float64


def test_conjugate_gradient_side_output_is_the_linear_map_of_the_solution():
    """``side=True``: ``apply_a`` also returns ``S v`` (here a list of two arrays); CG returns
    ``S x`` summed over its steps, equal to ``S`` applied to numpy's solution."""
    d = 3
    n, r, c = union_pattern()
    diag, offd, rhs = random_system(n, d, r, c, seed=7)
    H = dense_reference(n, d, r, c, diag, offd)
    rng = np.random.default_rng(3)
    S1, S2 = rng.normal(size=(4, n * d)), rng.normal(size=(n * d,))
    Hj, S1j, S2j = map(jnp.asarray, (H, S1, S2))

    def apply_a(v):
        f = v.reshape(-1)
        return (Hj @ f).reshape(n, d), [S1j @ f, jnp.dot(S2j, f)]

    x, k, rel, sx = jax.jit(lambda b: linear.conjugate_gradient(apply_a, b, lambda v: v, max_iterations=500,
                                                                tolerance=1e-13, side=True))(jnp.asarray(rhs))
    xr = np.linalg.solve(H, rhs.reshape(-1))
    np.testing.assert_allclose(np.asarray(x).reshape(-1), xr, atol=1e-9 * np.abs(xr).max())
    np.testing.assert_allclose(np.asarray(sx[0]), S1 @ xr, rtol=1e-8)
    np.testing.assert_allclose(float(sx[1]), S2 @ xr, rtol=1e-8)
    with pytest.raises(ValueError, match="x0=None"):
        linear.conjugate_gradient(apply_a, jnp.asarray(rhs), lambda v: v, max_iterations=5, tolerance=1e-9,
                                  x0=jnp.zeros_like(jnp.asarray(rhs)), side=True)


def test_conjugate_gradient_stops_on_a_direction_of_negative_curvature():
    # A = diag(1, -1), b = (1, 1): p^T A p = 0 on the first direction, so no step is taken
    A = jnp.diag(jnp.array([1.0, -1.0]))
    x, k, rel = linear.conjugate_gradient(lambda v: A @ v, jnp.ones(2), lambda v: v, max_iterations=50,
                                          tolerance=1e-12)
    assert int(k) == 1 and np.all(np.asarray(x) == 0) and float(rel) == 1.0
