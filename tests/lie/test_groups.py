"""Group axioms and round trips (hypothesis), jaxlie agreement, dtypes, jit/vmap."""

import jax
import jax.numpy as jnp
import jaxlie
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxgraph import lie
from jaxgraph.lie import SE2, SE3, SO2, SO3

GROUPS = [SO2, SE2, SO3, SE3]
SETTINGS = settings(max_examples=15, deadline=None)


def _sample(group, seed, batch=(4,)):
    return group.sample_uniform(jax.random.PRNGKey(seed), batch, jnp.float64)


def _close(a, b, atol=1e-9):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol)


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.__name__)
@SETTINGS
@given(seed=st.integers(0, 2**31 - 1))
def test_axioms(group, seed):
    a, b, c = (_sample(group, seed + i) for i in range(3))
    ident = group.identity((4,), jnp.float64)
    _close((a @ b) @ c .as_matrix() if False else ((a @ b) @ c).as_matrix(), (a @ (b @ c)).as_matrix())
    _close((a @ ident).as_matrix(), a.as_matrix())
    _close((a @ a.inverse()).as_matrix(), ident.as_matrix())
    _close(group.exp(a.log()).as_matrix(), a.as_matrix())
    _close(group.from_matrix(a.as_matrix()).as_matrix(), a.as_matrix())
    _close((a @ b).as_matrix(), a.as_matrix() @ b.as_matrix())
    # Adjoint: a exp(x) a^-1 = exp(Ad(a) x).
    x = jax.random.normal(jax.random.PRNGKey(seed % 1000), (4, group.tangent_dim), jnp.float64)
    _close((a @ group.exp(x) @ a.inverse()).as_matrix(), group.exp(jnp.einsum("...ij,...j->...i", a.adjoint(), x)).as_matrix())
    # rplus / rminus are inverse to each other.
    _close(a.rminus(a.rplus(0.1 * x)), 0.1 * x, atol=1e-9)
    # apply agrees with the matrix.
    p = jax.random.normal(jax.random.PRNGKey(seed % 997), (4, group.space_dim), jnp.float64)
    homogeneous = group.matrix_dim != group.space_dim
    m = a.as_matrix()
    expected = jnp.einsum("...ij,...j->...i", m[..., : group.space_dim, : group.space_dim], p)
    if homogeneous:
        expected = expected + m[..., : group.space_dim, -1]
    _close(a @ p, expected)


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.__name__)
@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1e-9, 1e-3, 0.5, 2.0, 3.1]))
def test_matches_jaxlie_away_from_pi(group, seed, scale):
    x = jax.random.normal(jax.random.PRNGKey(seed), (4, group.tangent_dim), jnp.float64)
    x = x * scale / jnp.maximum(jnp.linalg.norm(x[..., -min(3, group.tangent_dim):], axis=-1, keepdims=True), 1.0)
    ours = group.exp(x)
    theirs = getattr(jaxlie, group.__name__).exp(x)
    _close(ours.as_matrix(), theirs.as_matrix())
    _close(ours.log(), theirs.log(), atol=1e-8)
    _close(ours.to_jaxlie().parameters(), theirs.parameters(), atol=1e-9) if group is not SO3 else None
    back = group.from_jaxlie(theirs)
    _close(back.as_matrix(), ours.as_matrix())
    # Gradients agree where jaxlie is right (away from pi).
    g_ours = jax.grad(lambda v: jnp.sum(group.exp(v).log() ** 2))(x)
    g_theirs = jax.grad(lambda v: jnp.sum(getattr(jaxlie, group.__name__).exp(v).log() ** 2))(x)
    _close(g_ours, g_theirs, atol=1e-6)


def test_function_api_matches_jaxlie():
    R = SO3.sample_uniform(jax.random.PRNGKey(3), (16,), jnp.float64).as_matrix()
    theirs = jaxlie.SO3.from_matrix(R)
    ours_q = lie.quaternion_from_matrix(R)
    sign = jnp.sign(theirs.wxyz[..., :1])
    _close(ours_q, theirs.wxyz * sign)
    _close(lie.so3_log(R), theirs.log(), atol=1e-8)
    T = SE3.sample_uniform(jax.random.PRNGKey(4), (16,), jnp.float64).as_matrix()
    _close(lie.se3_log(T), jaxlie.SE3.from_matrix(T).log(), atol=1e-8)
    _close(lie.se3_exp(lie.se3_log(T)), T)


# float64 slow: the float32 case runs the same code paths in the fast suite
@pytest.mark.parametrize("dtype", [jnp.float32, pytest.param(jnp.float64, marks=pytest.mark.slow)])
def test_dtypes_jit_vmap(dtype):
    w = jnp.asarray(np.random.default_rng(0).normal(size=(5, 6)), dtype)
    for f in (lie.se3_exp, lambda x: lie.se3_log(lie.se3_exp(x)), lie.se3_right_jacobian_inverse, lambda x: lie.so3_exp(x[..., 3:])):
        eager = f(w)
        assert eager.dtype == dtype
        np.testing.assert_allclose(np.asarray(jax.jit(f)(w)), np.asarray(eager), atol=1e-5 if dtype == jnp.float32 else 1e-12)
        np.testing.assert_allclose(np.asarray(jax.vmap(f)(w)), np.asarray(eager), atol=1e-5 if dtype == jnp.float32 else 1e-12)
    # Integer input is promoted to float32, never to an integer result.
    assert lie.so3_exp(jnp.zeros(3, jnp.int32)).dtype == jnp.float32
    g = SE3.exp(w)
    assert g.wxyz_xyz.dtype == dtype
    leaves = jax.tree_util.tree_leaves(jax.jit(lambda t: t.inverse())(g))
    assert len(leaves) == 1 and leaves[0].dtype == dtype


def test_manifold_helpers_on_pytrees():
    tree = {"pose": SE3.identity((2,), jnp.float64), "point": jnp.zeros((2, 3))}
    delta = {"pose": jnp.ones((2, 6)) * 0.1, "point": jnp.ones((2, 3))}
    moved = lie.rplus(tree, delta)
    back = lie.rminus(tree, moved)
    _close(back["pose"], delta["pose"])
    _close(back["point"], delta["point"])
