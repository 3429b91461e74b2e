"""Noise-model whitening equivalences and robust-loss weights against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgraph import noise, robust


def test_whitening_equivalences():
    # One covariance written five ways must whiten to the same cost r^T Sigma^-1 r.
    rng = np.random.default_rng(0)
    sig = 0.3
    r = jnp.asarray(rng.normal(size=(5, 3)))
    J = jnp.asarray(rng.normal(size=(5, 3, 4)))
    models = [
        noise.isotropic(sig),
        noise.diagonal(jnp.full((3,), sig)),
        noise.sqrt_information(jnp.eye(3) / sig),
        noise.information(jnp.eye(3) / sig**2),
        noise.covariance(jnp.eye(3) * sig**2),
    ]
    for m in models:
        np.testing.assert_allclose(m.whiten(r), r / sig, rtol=1e-12)
        np.testing.assert_allclose(m.whiten_jacobian(J), J / sig, rtol=1e-12)


def test_full_information_cost_is_quadratic_form():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(4, 6, 6))
    info = A @ np.swapaxes(A, 1, 2) + 0.1 * np.eye(6)
    r = rng.normal(size=(4, 6))
    expected = np.einsum("mi,mij,mj->m", r, info, r)
    for m in (noise.information(jnp.asarray(info)), noise.covariance(jnp.asarray(np.linalg.inv(info)))):
        e = m.prepare().whiten(jnp.asarray(r))
        np.testing.assert_allclose(jnp.sum(e * e, -1), expected, rtol=1e-9)


def test_per_factor_parameters_broadcast():
    r = jnp.ones((3, 2))
    np.testing.assert_allclose(noise.isotropic(jnp.asarray([1.0, 2.0, 4.0])).whiten(r)[:, 0], [1, 0.5, 0.25])
    np.testing.assert_allclose(noise.diagonal(jnp.asarray([[1.0, 2.0]] * 3)).whiten(r)[0], [1, 0.5])


def test_float32_preserved():
    r = jnp.ones((2, 3), jnp.float32)
    for m in (noise.isotropic(0.5), noise.diagonal(np.full(3, 0.5)), noise.information(np.eye(3) * 4.0)):
        assert m.prepare().whiten(r).dtype == jnp.float32


# Closed forms (GTSAM's mEstimator definitions), s = norm of the whitened residual.
CLOSED = {
    robust.Huber: (
        lambda s, k: np.where(s <= k, 0.5 * s**2, k * s - 0.5 * k**2),
        lambda s, k: np.where(s <= k, 1.0, k / s),
    ),
    robust.Cauchy: (
        lambda s, k: 0.5 * k**2 * np.log(1 + s**2 / k**2),
        lambda s, k: 1 / (1 + s**2 / k**2),
    ),
    robust.Tukey: (
        lambda s, k: np.where(s <= k, k**2 / 6 * (1 - (1 - s**2 / k**2) ** 3), k**2 / 6),
        lambda s, k: np.where(s <= k, (1 - s**2 / k**2) ** 2, 0.0),
    ),
    robust.GemanMcClure: (
        lambda s, k: 0.5 * k**2 * s**2 / (k**2 + s**2),
        lambda s, k: k**4 / (k**2 + s**2) ** 2,
    ),
}


@pytest.mark.parametrize("cls", list(CLOSED))
def test_robust_rho_and_weight(cls):
    k = 1.3
    s = np.array([0.0, 0.1, 0.9, 1.3, 2.0, 7.5])
    loss = cls(k)
    rho, w = CLOSED[cls]
    np.testing.assert_allclose(loss.rho(jnp.asarray(s)), rho(s, k), rtol=1e-12, atol=1e-15)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref_w = np.nan_to_num(w(s, k), nan=1.0)
    np.testing.assert_allclose(loss.weight(jnp.asarray(s)), ref_w, rtol=1e-12)
    # IRLS weight is rho'(s)/s: check against autodiff of rho away from s = 0 and the kink.
    pts = jnp.asarray([0.1, 0.9, 2.0, 7.5])
    drho = jax.vmap(jax.grad(loss.rho))(pts)
    np.testing.assert_allclose(loss.weight(pts), drho / pts, rtol=1e-10)
    # Small residuals: quadratic cost.
    np.testing.assert_allclose(loss.rho(jnp.asarray(1e-4)), 0.5e-8, rtol=1e-6)
