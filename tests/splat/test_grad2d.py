"""value_and_grad_2d: the probes' gradients without retain_grad()."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import splat

from .scenes import random_scene


# slow: finite differences per mean; test_pallas's per-pixel-definition test checks the
# same means2d gradients in the fast suite
@pytest.mark.slow
def test_value_and_grad_2d_matches_finite_differences_on_means2d():
    sc = random_scene(6, seed=3, dtype=np.float64, width=20, height=14, scale=(0.2, 0.5))
    w = jnp.asarray(np.random.default_rng(0).uniform(size=(1, 14, 20, 3)))

    def loss(means, opacities, means2d_probe, absgrad_probe):
        img, _, _ = splat.rasterization(means, sc["quats"], sc["scales"], opacities, sc["colors"],
                                        sc["viewmats"], sc["Ks"], 20, 14, backend="reference",
                                        isect_capacity=64, means2d_probe=means2d_probe,
                                        absgrad_probe=absgrad_probe)
        return jnp.sum(img * w)

    f = jax.jit(splat.value_and_grad_2d(loss, probe_shape=(1, 6), argnums=(0, 1),
                                         dtype=jnp.float64))
    means, opac = jnp.asarray(sc["means"]), jnp.asarray(sc["opacities"])
    value, (g_means, g_opac), g2d = f(means, opac)
    assert g_means.shape == (6, 3) and g_opac.shape == (6,)
    assert float(jnp.abs(g_means).max()) > 0 and float(jnp.abs(g_opac).max()) > 0

    # dL/dmeans2d by central differences on the probe (pixels).
    lf = jax.jit(lambda p: loss(means, opac, p, None))
    np.testing.assert_allclose(float(value), float(lf(jnp.zeros((1, 6, 2)))), rtol=1e-12)
    # The user gradients are plain autodiff: check one against central differences.
    e = np.zeros((6,))
    e[2] = 1e-6
    lo = jax.jit(lambda o: loss(means, o, None, None))
    fd_o = (lo(opac + e) - lo(opac - e)) / 2e-6
    np.testing.assert_allclose(float(g_opac[2]), float(fd_o), rtol=1e-5)
    h = 1e-6
    fd = np.zeros((1, 6, 2))
    for i in range(6):
        for k in range(2):
            e = np.zeros((1, 6, 2))
            e[0, i, k] = h
            fd[0, i, k] = (lf(jnp.asarray(e)) - lf(jnp.asarray(-e))) / (2 * h)
    np.testing.assert_allclose(np.asarray(g2d["means2d"]), fd, rtol=1e-5, atol=1e-7)
    assert np.abs(fd).max() > 0.1
    # |sum over pixels| <= sum over pixels of |.|, strictly for a spread-out Gaussian.
    assert np.all(np.asarray(g2d["absgrad"]) >= np.abs(fd) - 1e-7)
    assert np.any(np.asarray(g2d["absgrad"]) > np.abs(fd) + 1e-3)
