"""The Lie-form derivative of the matrix factors' ``(log E, Jr(log E)^-1)``
(``jaxgraph.graph._log_rule``) against plain autodiff of the same closed forms and against
central finite differences along the group, in float64: at generic points, near the identity
and near a rotation by pi. The tangents ``dE`` are those of ``E(params)`` under arbitrary
parameter perturbations (what the linearisation differentiates), so they lie in ``E``'s
tangent space up to rounding."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgraph import lie
from jaxgraph.graph import kind_of
from jaxgraph.graph._log_rule import _has_rule, _plain, log_and_jinv

# 3D kinds compile the quaternion closed forms (5-10 s each under load): in the slow set; the
# default suite covers them end to end (tests/solver/test_backward.py's tinyGrid3D FD checks)
_SLOW = pytest.mark.slow
KINDS = ["SE2", lie.SO2, pytest.param("SE3", marks=_SLOW), pytest.param("SO3", marks=_SLOW),
         pytest.param(lie.SE2, marks=_SLOW)]


def _points(kind, rng, n=5):
    """Parameters of ``n`` random elements, one near the identity and one rotated by
    pi - 1e-3 (the log's and Jr^-1's hard cases), ``[n + 2, param_dim]`` float64."""
    p = kind.random_rows(rng, n, np.zeros((n, kind.param_dim)))
    t = kind.tangent_dim
    near_id = np.full((1, t), 1e-7)
    near_pi = np.zeros((1, t))
    rot = slice(t - 1, t) if kind.group.space_dim == 2 else slice(t - 3, t)
    axis = np.ones(rot.stop - rot.start) / np.sqrt(rot.stop - rot.start)
    near_pi[0, rot] = (np.pi - 1e-3) * axis
    near_pi[0, : rot.start] = 0.3
    ident = np.asarray(kind.identity(2, jnp.float64))
    special = np.asarray(kind.retract(jnp.asarray(ident), jnp.asarray(np.concatenate([near_id, near_pi]))))
    return jnp.asarray(np.concatenate([p, special]))


@pytest.mark.parametrize("spec", KINDS, ids=lambda s: s if isinstance(s, str) else "lie." + s.__name__)
def test_jvp_and_vjp_equal_plain_autodiff(spec):
    kind = kind_of(spec)
    assert _has_rule(kind)
    rng = np.random.default_rng(3)
    p = _points(kind, rng)
    dp = jnp.asarray(rng.normal(size=p.shape))
    cr = jnp.asarray(rng.normal(size=(p.shape[0], kind.tangent_dim)))
    cJ = jnp.asarray(rng.normal(size=(p.shape[0], kind.tangent_dim, kind.tangent_dim)))

    @functools.partial(jax.jit, static_argnums=0)  # one compile, not hundreds of eager dispatches
    def both(f):
        E, dE = jax.jvp(kind.to_matrix, (p,), (dp,))
        primal, tangent = jax.jvp(lambda E: f(kind, E), (E,), (dE,))
        # reverse mode (what the implicit backward and the unrolled trips use), through to_matrix
        grad = jax.vjp(lambda q: f(kind, kind.to_matrix(q)), p)[1]((cr, cJ))[0]
        return primal, tangent, grad

    (r, J), (dr, dJ), g = both(log_and_jinv)
    (r0, J0), (dr0, dJ0), g0 = both(_plain)
    np.testing.assert_allclose(r, r0, rtol=1e-14, atol=1e-15)  # the same closed forms
    np.testing.assert_allclose(J, J0, rtol=1e-14, atol=1e-15)
    scale = 1.0 + np.abs(np.asarray(dJ0)).max()
    np.testing.assert_allclose(dr, dr0, rtol=1e-9, atol=1e-9 * scale)
    np.testing.assert_allclose(dJ, dJ0, rtol=1e-9, atol=1e-9 * scale)
    np.testing.assert_allclose(g, g0, rtol=1e-9, atol=1e-9 * (1.0 + np.abs(np.asarray(g0)).max()))


@pytest.mark.parametrize("spec", ["SE2", pytest.param("SE3", marks=_SLOW)])
def test_jvp_equals_central_differences_along_the_group(spec):
    # d/dh log(E Exp(h delta)) at h = 0 is Jr^-1(log E) delta by definition, and the
    # derivative of Jr^-1 along it is the difference quotient of Jr^-1(log(E Exp(h delta)))
    kind = kind_of(spec)
    rng = np.random.default_rng(4)
    p = _points(kind, rng)[:-1]  # not the one near pi: its difference quotient is ill-conditioned
    delta = jnp.asarray(rng.normal(size=(p.shape[0], kind.tangent_dim)))
    step = lambda h: kind.to_matrix(kind.retract(p, h * delta))  # noqa: E731

    @jax.jit
    def run(h):
        E, dE = jax.jvp(step, (jnp.zeros(()),), (jnp.ones(()),))
        _, (dr, dJ) = jax.jvp(lambda E: log_and_jinv(kind, E), (E,), (dE,))
        return dr, dJ, _plain(kind, step(h)), _plain(kind, step(-h))

    h = 1e-6
    dr, dJ, (rp, Jp), (rm, Jm) = run(h)
    np.testing.assert_allclose(dr, (rp - rm) / (2 * h), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dJ, (Jp - Jm) / (2 * h), rtol=1e-5, atol=1e-6)


def test_vector_kinds_keep_plain_autodiff():
    kind = kind_of(3)
    assert not _has_rule(kind)
    E = kind.to_matrix(jnp.asarray(np.arange(6.0).reshape(2, 3)))
    r, J = log_and_jinv(kind, E)
    np.testing.assert_array_equal(r, np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(J, np.broadcast_to(np.eye(3), (2, 3, 3)))
