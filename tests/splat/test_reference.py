"""Projection, SH, tiling and the plain-JAX rasteriser against closed forms and oracles."""

import functools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import splat
from splat.raster import reference
from splat.projection import project_gaussians, quat_scale_to_covar
from splat.sh import eval_sh
from splat.tiling import intersect

from .scenes import random_scene


def test_covariance_matches_scipy_rotation():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(5, 4))
    s = rng.uniform(0.1, 2, (5, 3))
    cov = np.asarray(quat_scale_to_covar(jnp.asarray(q), jnp.asarray(s)))
    rot = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()  # scipy is (x, y, z, w)
    want = rot @ np.einsum("ni,nij->nij", s**2, np.broadcast_to(np.eye(3), (5, 3, 3))) @ rot.transpose(0, 2, 1)
    np.testing.assert_allclose(cov, want, rtol=1e-10, atol=1e-12)
    # Unnormalised quaternions give the same rotation; a zero quaternion acts as identity.
    cov7 = quat_scale_to_covar(jnp.asarray(7.0 * q), jnp.asarray(s))
    np.testing.assert_allclose(np.asarray(cov7), want, rtol=1e-10, atol=1e-12)
    cov0 = quat_scale_to_covar(jnp.zeros((1, 4)), jnp.asarray(s[:1]))
    np.testing.assert_allclose(np.asarray(cov0)[0], np.diag(s[0] ** 2), rtol=1e-12)


@pytest.mark.parametrize("antialiased", [False, True])
def test_projection_isotropic_closed_form(antialiased):
    # An isotropic Gaussian of std s on the optical axis at depth z projects to a
    # circle of variance (f s / z)^2 (+ eps2d); compensation = var / (var + eps2d).
    f, s, z, eps = 50.0, 0.1, 2.0, 0.3
    k = jnp.asarray([[[f, 0, 20.0], [0, f, 15.0], [0, 0, 1]]])
    out = project_gaussians(
        jnp.asarray([[0.0, 0.0, z]]), jnp.eye(3)[None] * s**2, jnp.asarray([0.9]), jnp.eye(4)[None],
        k, 40, 30, near_plane=0.01, far_plane=1e10, radius_clip=0.0, eps2d=eps,
        antialiased=antialiased)
    var = (f * s / z) ** 2
    np.testing.assert_allclose(np.asarray(out["means2d"])[0, 0], [20.0, 15.0], atol=1e-12)
    np.testing.assert_allclose(np.asarray(out["conics"])[0, 0], [1 / (var + eps), 0, 1 / (var + eps)], rtol=1e-12)
    comp = var / (var + eps)
    np.testing.assert_allclose(float(out["compensations"][0, 0]), comp, rtol=1e-12)
    o = 0.9 * comp if antialiased else 0.9
    np.testing.assert_allclose(float(out["opacities"][0, 0]), o, rtol=1e-12)
    # Radius: alpha = o exp(-r^2 / (2 var')) reaches 1/255 at r = sqrt(2 var' log(255 o)).
    r = np.sqrt(2 * (var + eps) * np.log(255 * o))
    rad = np.asarray(out["radii"])[0, 0]
    assert np.all(rad >= r) and np.all(rad <= np.ceil(r * 1.001 + 0.01))


def test_sh_degree1_closed_form_and_orthonormal_bases():
    rng = np.random.default_rng(1)
    coeffs = rng.normal(size=(4, 2))
    d = rng.normal(size=3)
    x, y, z = d / np.linalg.norm(d)
    c0, c1 = 0.28209479177387814, 0.4886025119029199
    want = c0 * coeffs[0] - c1 * y * coeffs[1] + c1 * z * coeffs[2] - c1 * x * coeffs[3]
    np.testing.assert_allclose(np.asarray(eval_sh(1, jnp.asarray(coeffs), jnp.asarray(3 * d))), want, rtol=1e-12)
    # Degree-3 bases are orthonormal on the sphere: integral of Y_i Y_j = delta_ij.
    pts = rng.normal(size=(100000, 3))
    basis = np.asarray(eval_sh(3, jnp.eye(16)[None], jnp.asarray(pts)[:, None, :])).reshape(-1, 16)
    gram = 4 * np.pi * basis.T @ basis / len(pts)
    np.testing.assert_allclose(gram, np.eye(16), atol=0.03)


def test_tiling_counts_and_order():
    n = 40  # same scene as the dense-oracle test: one compilation for both
    sc = random_scene(n, n_cams=2, seed=4, dtype=np.float64, width=40, height=30)
    _, _, meta = splat.rasterization(**sc, backend="reference")
    isect = jax.jit(functools.partial(intersect, tile_size=16, width=40, height=30,
                                      capacity=int(meta["isect_count"]) + 5))(
        meta["means2d"], meta["radii"], meta["depths"])
    assert int(isect.count) == int(np.sum(meta["tiles_per_gauss"]))
    m = int(isect.count)
    tid, gid = np.asarray(isect.tile_ids[:m]), np.asarray(isect.gauss_ids[:m])
    depth = np.asarray(meta["depths"]).reshape(-1)[gid]
    same = tid[1:] == tid[:-1]
    assert np.all(np.diff(tid) >= 0)
    assert np.all(depth[1:][same] >= depth[:-1][same])
    assert np.all(np.asarray(isect.tile_ids[m:]) == 2 * 6)
    # Brute force: every Gaussian is listed in exactly the tiles its box overlaps.
    m2, r = np.asarray(meta["means2d"]), np.asarray(meta["radii"])
    for c in range(2):
        for g in range(n):
            if r[c, g, 0] == 0:
                continue
            want = {ty * 3 + tx + c * 6 for tx in range(3) for ty in range(2)
                    if (tx + 1) * 16 > m2[c, g, 0] - r[c, g, 0] and tx * 16 < m2[c, g, 0] + r[c, g, 0]
                    and (ty + 1) * 16 > m2[c, g, 1] - r[c, g, 1] and ty * 16 < m2[c, g, 1] + r[c, g, 1]}
            got = set(tid[gid == c * n + g].tolist())
            assert got == want


def _dense_render(sc, meta, colors):
    return reference.rasterize_dense(meta["means2d"], meta["conics"], colors, meta["opacities"],
                                     meta["radii"], meta["depths"], width=sc["width"],
                                     height=sc["height"])


@pytest.mark.parametrize("dtype", [np.float64])
def test_tiled_reference_matches_dense_oracle(dtype):
    sc = random_scene(40, n_cams=2, seed=4, dtype=dtype, width=40, height=30)
    img, alpha, meta = splat.rasterization(**sc, backend="reference")
    assert img.dtype == dtype and alpha.dtype == dtype
    cols = jnp.broadcast_to(jnp.asarray(sc["colors"]), (2, 40, 3))
    d_img, d_alpha = _dense_render(sc, meta, cols)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(np.asarray(img), np.asarray(d_img), atol=tol)
    np.testing.assert_allclose(np.asarray(alpha), np.asarray(d_alpha), atol=tol)
    assert 0.2 < float(alpha.mean()) < 0.9  # a non-trivial scene


# Two configurations share the compile budget: each backend gets one, together they cover
# classic/antialiased, plain/SH colours and RGB/RGB+D (4 kernel channels).
FD_CONFIGS = {
    "reference": dict(sh_degree=None, kw=dict()),
    "pallas": dict(sh_degree=2, kw=dict(sh_degree=2, rasterize_mode="antialiased",
                                        render_mode="RGB+D")),
}


# the reference's finite differences are slow; the Pallas case (tested against the
# reference elsewhere) stays in the fast suite
@pytest.mark.parametrize("backend", [pytest.param("reference", marks=pytest.mark.slow), "pallas"])
def test_gradients_match_finite_differences(backend):
    """All parameter gradients (autodiff for the reference, the custom VJP for Pallas)
    against float64 central differences."""
    cfg = FD_CONFIGS[backend]
    sc = random_scene(5, seed=5, dtype=np.float64, width=20, height=14, scale=(0.2, 0.5),
                      sh_degree=cfg["sh_degree"])
    n_chan = 4 if cfg["kw"].get("render_mode") == "RGB+D" else 3
    w = np.random.default_rng(6).uniform(size=(1, 14, 20, n_chan))
    names = ("means", "quats", "scales", "opacities", "colors")
    rest = {k: v for k, v in sc.items() if k not in names}

    @jax.jit
    def loss(params):
        img, alpha, _ = splat.rasterization(**dict(zip(names, params)), **rest,
                                            backgrounds=jnp.asarray([0.2, 0.5, 0.1]),
                                            backend=backend, isect_capacity=64, **cfg["kw"])
        return jnp.sum(img * w) + jnp.sum(alpha**2)

    params = tuple(jnp.asarray(sc[k]) for k in names)
    grads = jax.grad(loss)(params)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    g_flat = jax.flatten_util.ravel_pytree(grads)[0]
    f = jax.jit(lambda x: loss(unravel(x)))
    h = 1e-6
    eye = np.eye(flat.size)
    fd = np.array([(f(flat + h * e) - f(flat - h * e)) / (2 * h) for e in eye])
    np.testing.assert_allclose(np.asarray(g_flat), fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max())
    assert np.abs(fd).max() > 1.0


def test_depth_mode_is_composited_camera_depth():
    """render_mode="D" is sum_k z_k alpha_k T_k, i.e. the dense oracle fed depths as colour."""
    sc = random_scene(40, n_cams=2, seed=4, dtype=np.float64, width=40, height=30)
    img, alpha, meta = splat.rasterization(**sc, backend="reference", render_mode="D",
                                           backgrounds=None)
    assert img.shape == (2, 30, 40, 1)
    d_img, d_alpha = _dense_render(sc, meta, meta["depths"][..., None])
    np.testing.assert_allclose(np.asarray(img), np.asarray(d_img), atol=1e-12)
    # Means lie in [-1, 1]^3; cameras at distance e (3.5 <= e < 3.52) look at the origin,
    # so every depth, hence every expected depth (a convex combination), is e -+ sqrt(3).
    ed = np.asarray(img / np.maximum(alpha, 1e-10))[np.asarray(alpha) > 0.05]
    assert ed.min() >= 3.5 - np.sqrt(3) and ed.max() <= 3.52 + np.sqrt(3)
