"""The derivative rule of the linearisation's row-wise maps (``normal_equations._rowwise``):
``(r, Jr(r)^-1)`` of error matrices and the kinds' ``to_matrix``, whose tangents are one
contraction with precomputed partial derivatives. In float64 their JVPs and VJPs must equal
plain autodiff of the same maps and central finite differences, at the identity, at generic
points and at angles just below pi; second derivatives stay finite."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgraph import lie
from jaxgraph.graph.kinds import kind_of
from jaxgraph.graph.normal_equations import _log_and_jinv, _rowwise

KINDS = ["SE2", "SE3", "SO3", lie.SE2, lie.SO2, "R3"]


def _rows(kind, rng):
    """Parameter rows: the identity, generic points and rotations by pi - 1e-3."""
    t = kind.tangent_dim
    tangents = [np.zeros(t), rng.normal(size=t), 0.3 * rng.normal(size=t)]
    if kind.name not in ("R3",):
        # the rotation part (last coordinate of SE2 / SO2, last three of SE3 / SO3) at pi - 1e-3
        near_pi = np.zeros(t)
        rot = slice(t - 3, t) if t >= 3 and kind.name not in ("SE2", "lie.SE2") else slice(t - 1, t)
        axis = np.ones(rot.stop - rot.start) / np.sqrt(rot.stop - rot.start)
        near_pi[rot] = (np.pi - 1e-3) * axis
        near_pi[: rot.start] = 0.5
        tangents.append(near_pi)
    ident = kind.identity(len(tangents), jnp.float64)
    return kind.retract(ident, jnp.asarray(np.stack(tangents)))


def _check(f, x, dx, fd, rng, second=False):
    """``f``'s rule against plain autodiff (JVP, VJP) and ``fd`` (the finite-difference
    tangent along ``dx``); its Hessian along random cotangents is finite."""
    rule = jax.jit(lambda z, dz: jax.jvp(lambda w: _rowwise(f, w), (z,), (dz,)))
    plain = jax.jit(lambda z, dz: jax.jvp(f, (z,), (dz,)))
    y_rule, t_rule = rule(x, dx)
    y_plain, t_plain = plain(x, dx)
    for a, b in zip(jax.tree_util.tree_leaves((y_rule, t_rule)), jax.tree_util.tree_leaves((y_plain, t_plain))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(t_rule), jax.tree_util.tree_leaves(fd)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    ct = jax.tree_util.tree_map(lambda y: jnp.asarray(rng.normal(size=y.shape)), y_plain)

    def weighted(g, z):
        return sum(jnp.sum(c * y) for c, y in zip(jax.tree_util.tree_leaves(ct), jax.tree_util.tree_leaves(g(z))))

    # reverse mode: the transposed contraction
    g_rule = jax.jit(jax.grad(lambda z: weighted(lambda w: _rowwise(f, w), z)))(x)
    g_plain = jax.jit(jax.grad(lambda z: weighted(f, z)))(x)
    np.testing.assert_allclose(np.asarray(g_rule), np.asarray(g_plain), rtol=1e-12, atol=1e-12)
    if not second:
        return
    # second order goes through the rule's own derivative (a Hessian-vector product)
    hvp = jax.jit(lambda z, dz: jax.jvp(jax.grad(lambda w: weighted(lambda u: _rowwise(f, u), w)), (z,), (dz,))[1])
    assert np.isfinite(np.asarray(hvp(x, dx))).all()


def _group_tangent(kind, X, xi, h=1e-6):
    """``dX`` of the curve ``X Exp(s xi)`` at ``s = 0`` (central difference) and the curve."""
    ident = kind.identity(X.shape[0], jnp.float64)

    def curve(s):
        return X @ kind.to_matrix(kind.retract(ident, s * xi))

    return (curve(h) - curve(-h)) / (2 * h), curve


def _log_case(spec, second=False):
    kind = kind_of(spec)
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        E = kind.to_matrix(_rows(kind, rng))
        xi = jnp.asarray(rng.normal(size=(E.shape[0], kind.tangent_dim)))
        dE, curve = _group_tangent(kind, E, xi)  # along the group: the log ignores the rest
        f = functools.partial(_log_and_jinv, kind)
        h = 1e-6
        fd = jax.tree_util.tree_map(lambda a, b: (a - b) / (2 * h), f(curve(h)), f(curve(-h)))
        _check(f, E, dE, fd, rng, second)


# compiling the rule and plain autodiff of SE(3)'s log takes 10-30 s: the groups run in the slow
# set, the cheap kinds by default (the backward's FD tests cover the rule end to end)
@pytest.mark.parametrize("spec", [pytest.param(k, marks=pytest.mark.slow) if k in ("SE2", "SE3", "SO3", lie.SE2) else k
                                  for k in KINDS], ids=str)
def test_log_and_jacobian_inverse(spec):
    _log_case(spec)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["SE2", "SE3"])
def test_log_and_jacobian_inverse_second_order_is_finite(spec):
    _log_case(spec, second=True)


@pytest.mark.parametrize("spec", KINDS, ids=str)
def test_to_matrix(spec):
    kind = kind_of(spec)
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        x = _rows(kind, rng)
        dx = jnp.asarray(rng.normal(size=x.shape))
        h = 1e-6
        fd = (kind.to_matrix(x + h * dx) - kind.to_matrix(x - h * dx)) / (2 * h)
        _check(kind.to_matrix, x, dx, fd, rng)
