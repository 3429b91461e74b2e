"""rasterize_mode="antialiased": gsplat's floored compensation
sqrt(max(0.005^2, det(S) / det(S + eps2d I))), against an independent float64 numpy
implementation of gsplat's projection (values, and gradients by central differences),
and its effect on the rendered image in both backends."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import splat

W, H = 32, 24
EPS2D = 0.3
K = np.array([[30.0, 0, 15.3], [0, 28.0, 11.7], [0, 0, 1]])
VIEWMAT = np.eye(4)
VIEWMAT[:3, 3] = [0.1, -0.05, 0.2]
# Gaussians 0-2 are pixel-sized (compensation well above the floor), 3-4 are far below a
# pixel (floored), 5 is a needle (one large axis, two tiny ones: floored too).
MEANS = np.array([[0.0, 0.0, 3.0], [0.4, -0.3, 4.0], [-0.5, 0.2, 2.5], [0.3, 0.3, 3.0],
                  [-0.2, -0.4, 5.0], [0.1, -0.1, 3.5]])
SCALES = np.array([[0.1, 0.05, 0.08], [0.2, 0.1, 0.15], [0.04, 0.06, 0.05],
                   [1e-3, 2e-3, 1.5e-3], [5e-4, 1e-3, 8e-4], [0.5, 1e-4, 2e-4]])
QUATS = np.array([[1.0, 0.2, -0.1, 0.3], [0.5, 0.5, 0.1, -0.2], [0.9, -0.3, 0.4, 0.1],
                  [0.7, 0.1, 0.2, 0.3], [1.0, 0, 0, 0], [0.8, -0.2, 0.5, 0.1]])
OPACITIES = np.array([0.9, 0.8, 0.7, 1.0, 0.95, 0.9])
FLOORED = np.array([False, False, False, True, True, True])


def gsplat_compensation(means, quats, scales):
    """gsplat's EWA projection and floored compensation, float64 numpy, per Gaussian."""
    out = []
    rv, tv = VIEWMAT[:3, :3], VIEWMAT[:3, 3]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    for m, q, s in zip(means, quats, scales):
        w, v = q[0] / np.linalg.norm(q), q[1:] / np.linalg.norm(q)
        vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
        rot = np.eye(3) + 2 * w * vx + 2 * vx @ vx  # Rodrigues form of the unit quaternion
        cov = rv @ rot @ np.diag(s ** 2) @ rot.T @ rv.T
        x, y, z = rv @ m + tv
        tan_x, tan_y = 0.5 * W / fx, 0.5 * H / fy
        tx = z * np.clip(x / z, -(cx / fx + 0.3 * tan_x), (W - cx) / fx + 0.3 * tan_x)
        ty = z * np.clip(y / z, -(cy / fy + 0.3 * tan_y), (H - cy) / fy + 0.3 * tan_y)
        jac = np.array([[fx / z, 0, -fx * tx / z ** 2], [0, fy / z, -fy * ty / z ** 2]])
        cov2d = jac @ cov @ jac.T
        det_orig = np.linalg.det(cov2d)
        det_blur = np.linalg.det(cov2d + EPS2D * np.eye(2))
        out.append(np.sqrt(max(0.005 ** 2, det_orig / det_blur)))
    return np.array(out)


def _meta(means, quats, scales, backend="reference"):
    return splat.rasterization(
        means, quats, scales, jnp.asarray(OPACITIES), jnp.ones((6, 3)), VIEWMAT[None],
        K[None], W, H, eps2d=EPS2D, rasterize_mode="antialiased", backend=backend,
        isect_capacity=256)


def test_compensation_values_match_gsplat_formula_float64():
    want = gsplat_compensation(MEANS, QUATS, SCALES)
    assert (want[FLOORED] == 0.005).all() and (want[~FLOORED] > 0.05).all()
    _, _, meta = _meta(*(jnp.asarray(a) for a in (MEANS, QUATS, SCALES)))
    np.testing.assert_allclose(np.asarray(meta["compensations"][0]), want, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(meta["opacities"][0]), OPACITIES * want, rtol=1e-12)
    # floored Gaussians stay visible (o * 0.005 >= 1/255) instead of vanishing
    assert (np.asarray(meta["radii"][0]) > 0).all()


def test_compensation_gradients_match_finite_differences_of_gsplat_formula():
    wts = np.linspace(0.5, 2.0, 6)

    def ours(means, quats, scales):
        return jnp.sum(_meta(means, quats, scales)[2]["compensations"][0] * wts)

    args = tuple(jnp.asarray(a) for a in (MEANS, QUATS, SCALES))
    grads = jax.jit(jax.grad(ours, argnums=(0, 1, 2)))(*args)
    h = 1e-7
    for k, (name, base) in enumerate(zip(("means", "quats", "scales"), (MEANS, QUATS, SCALES))):
        fd = np.zeros_like(base)
        for idx in np.ndindex(base.shape):
            hi, lo = [a.copy() for a in (MEANS, QUATS, SCALES)], [a.copy() for a in
                                                                   (MEANS, QUATS, SCALES)]
            hi[k][idx] += h
            lo[k][idx] -= h
            fd[idx] = (gsplat_compensation(*hi) @ wts - gsplat_compensation(*lo) @ wts) / (2 * h)
        g = np.asarray(grads[k])
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-7 * np.abs(fd).max(), err_msg=name)
        assert (g[FLOORED] == 0).all(), name  # flat below the floor
        assert np.abs(fd[~FLOORED]).max() > 1e-3, name


@pytest.mark.parametrize("backend", ["reference",
                                     pytest.param("pallas", marks=pytest.mark.slow)])
def test_floored_gaussian_image_gradients_match_finite_differences(backend):
    _floored_scene_check(backend, gradients=True)


def test_floored_gaussian_renders_in_pallas_backend():
    _floored_scene_check("pallas", gradients=False)


def _floored_scene_check(backend, gradients):
    """A sub-pixel Gaussian centred on a pixel centre composites alpha = o * 0.005 there
    (gsplat's floor; without it the Gaussian would be culled), and the image gradient
    matches central differences with floored and unfloored Gaussians present."""
    fx, cx, fy, cy = K[0, 0], K[0, 2], K[1, 1], K[1, 2]
    z = 3.0
    means = MEANS.copy()
    # put Gaussian 3 exactly on the centre of pixel (row 4, column 20)
    means[3] = [(20.5 - cx) * z / fx - VIEWMAT[0, 3], (4.5 - cy) * z / fy - VIEWMAT[1, 3],
                z - VIEWMAT[2, 3]]
    cols = np.random.default_rng(0).uniform(0.2, 1.0, (6, 3))
    args = [jnp.asarray(a) for a in (means, QUATS, SCALES, OPACITIES, cols)]

    def render(m, q, s):
        return splat.rasterization(m, q, s, args[3], args[4], VIEWMAT[None], K[None], W, H,
                                   eps2d=EPS2D, rasterize_mode="antialiased",
                                   backend=backend, isect_capacity=256)

    img, alpha, _ = render(*args[:3])
    comp = gsplat_compensation(means, QUATS, SCALES)[3]
    assert comp == 0.005
    # alpha = o * comp * exp(-sigma), sigma = 0 at the centre; nothing else covers it
    np.testing.assert_allclose(float(alpha[0, 4, 20, 0]), 1.0 * comp, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(img[0, 4, 20]), cols[3] * comp, rtol=1e-6)
    if not gradients:
        return

    wimg = np.random.default_rng(1).uniform(size=(1, H, W, 3))

    @jax.jit
    def loss(m, s):
        im, al, _ = render(m, args[1], s)
        return jnp.sum(im * wimg) + jnp.sum(al ** 2)

    gm, gs = jax.grad(loss, argnums=(0, 1))(args[0], args[2])
    h = 1e-6
    for g, base, is_scale in ((gm, means, False), (gs, SCALES, True)):
        fd = np.zeros_like(base)
        for idx in np.ndindex(base.shape):
            e = np.zeros_like(base)
            e[idx] = h * (base[idx] if is_scale else 1.0)  # relative steps for tiny scales
            if is_scale:
                fd[idx] = (float(loss(args[0], jnp.asarray(base + e)))
                           - float(loss(args[0], jnp.asarray(base - e)))) / (2 * e[idx])
            else:
                fd[idx] = (float(loss(jnp.asarray(base + e), args[2]))
                           - float(loss(jnp.asarray(base - e), args[2]))) / (2 * h)
        np.testing.assert_allclose(np.asarray(g), fd, rtol=2e-5, atol=1e-6 * np.abs(fd).max())
