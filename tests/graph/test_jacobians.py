"""Analytic Jacobians of the built-in factors against forward-mode autodiff (float64).

The reference differentiates the residual through the retraction X <- X Exp(d) at d = 0,
which is the definition of the right-perturbation Jacobian; the analytic formulas use
adjoints and inverse right Jacobians, so agreement checks the derivation.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgraph import factors, noise
from jaxgraph.graph import kind_of


def _random_params(kind, n, rng, big_angles=False):
    if kind.name == "SE2":
        th = rng.uniform(-np.pi, np.pi, n)
        if big_angles:
            th[:2] = [np.pi - 1e-9, -np.pi + 1e-7]
        return np.stack([rng.normal(size=n), rng.normal(size=n), th], 1)
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return np.concatenate([q, rng.normal(size=(n, 3))], 1)


def _autodiff_jacobians(make_group, kinds, params, z):
    """Per-factor jacfwd through the retraction, vmapped over factors and jitted once."""

    def one(z1, *ps):
        g = make_group(z1[None])

        def res(*qs):
            return g.residual_and_jacobians(kinds, [q[None] for q in qs], False)[0][0]

        out = []
        for a in range(len(ps)):
            def f(d, a=a):
                qs = list(ps)
                qs[a] = kinds[a].retract(ps[a], d)
                return res(*qs)

            out.append(jax.jacfwd(f)(jnp.zeros(kinds[a].tangent_dim, ps[a].dtype)))
        return tuple(out)

    return jax.jit(jax.vmap(one))(z, *params)


@pytest.mark.parametrize("kind_name", ["SE2", "SE3"])
def test_between_and_prior_jacobians_match_autodiff(kind_name):
    kind = kind_of(kind_name)
    rng = np.random.default_rng(0)
    n = 6
    xi = jnp.asarray(_random_params(kind, n, rng, big_angles=True))
    xj = jnp.asarray(_random_params(kind, n, rng))
    z = jnp.asarray(_random_params(kind, n, rng))
    eye = noise.isotropic(1.0)
    g = factors.between("x", np.arange(n), np.arange(n), z, eye)
    r, (Ji, Jj) = g.residual_and_jacobians([kind, kind], [xi, xj])
    pr = factors.prior("x", np.arange(n), z, eye)
    rp, (Jp,) = pr.residual_and_jacobians([kind], [xi])
    ai, aj = _autodiff_jacobians(lambda z1: factors.between("x", [0], [1], z1, eye), [kind, kind], [xi, xj], z)
    np.testing.assert_allclose(Ji, ai, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(Jj, aj, rtol=1e-7, atol=1e-8)
    (ap,) = _autodiff_jacobians(lambda z1: factors.prior("x", [0], z1, eye), [kind], [xi], z)
    np.testing.assert_allclose(Jp, ap, rtol=1e-7, atol=1e-8)


def test_between_residual_is_identity_for_exact_measurement():
    # Z = Xi^-1 Xj exactly -> zero residual; Z = identity on equal poses -> zero too.
    kind = kind_of("SE3")
    rng = np.random.default_rng(1)
    xi = jnp.asarray(_random_params(kind, 4, rng))
    xj = jnp.asarray(_random_params(kind, 4, rng))
    T = jnp.linalg.inv(kind.to_matrix(xi)) @ kind.to_matrix(xj)
    z = kind.from_matrix(T)
    g = factors.between("x", np.arange(4), np.arange(4), z, noise.isotropic(1.0))
    r, _ = g.residual_and_jacobians([kind, kind], [xi, xj], False)
    np.testing.assert_allclose(r, 0, atol=1e-12)


def test_custom_factor_jacobian_matches_finite_differences():
    # Range measurement between an SE2 pose and an R2 landmark.
    se2, r2 = kind_of("SE2"), kind_of("R2")

    def rng_res(ps, data):
        pose, lm = ps
        d = lm - pose[:2]
        return jnp.sqrt(jnp.sum(d * d))[None] - data

    g = factors.custom(rng_res, [("p", [0]), ("l", [0])], jnp.asarray([[1.0]]), None, 1)
    pose = jnp.asarray([0.3, -0.2, 0.7])
    lm = jnp.asarray([2.0, 1.5])
    _, (Jp, Jl) = g.residual_and_jacobians([se2, r2], [pose[None], lm[None]])
    eps = 1e-6
    for kind, p, J, slot in ((se2, pose, Jp, 0), (r2, lm, Jl, 1)):
        for c in range(kind.tangent_dim):
            d = jnp.zeros(kind.tangent_dim).at[c].set(eps)
            ps = [pose, lm]
            ps_p, ps_m = list(ps), list(ps)
            ps_p[slot] = kind.retract(p, d)
            ps_m[slot] = kind.retract(p, -d)
            fd = (rng_res(ps_p, 1.0) - rng_res(ps_m, 1.0)) / (2 * eps)
            np.testing.assert_allclose(J[0, :, c], fd, rtol=1e-6, atol=1e-8)
