"""Gaussian projection: covariance from quaternion/scale, EWA splatting, culling, radii.

All functions are dtype-preserving (float32 in, float32 out) and NaN-free for any
input, including zero/huge scales, zero quaternions, Gaussians behind the camera and
non-finite values: such Gaussians are culled (radius 0) and receive zero gradients.
The "double where" pattern is used throughout: unsafe values are replaced *before*
the risky operation so that the masked branch cannot produce NaN cotangents.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from jaxgraph import lie

from .constants import ALPHA_MIN, COMPENSATION_MIN

# Relative safety margin on the bounding-box half-widths so that float rounding of
# the conic never lets a pixel outside the box reach ALPHA_MIN.
_RADIUS_MARGIN = 1.001
# Radii are clipped to this many pixels before the integer cast (keeps int32 sane for
# enormous Gaussians; anything this big covers the whole image anyway).
_RADIUS_MAX = 1.0e7


def quat_scale_to_covar(quats, scales):
    """World-space covariances Sigma = R S S^T R^T.

    quats: [N, 4] (w, x, y, z), any norm; scales: [N, 3] standard deviations (world
    units). Returns [N, 3, 3].
    """
    m = lie.matrix_from_quaternion(quats) * scales[..., None, :]
    return m @ jnp.swapaxes(m, -1, -2)


def project_gaussians(
    means, covars, opacities, viewmats, Ks, width, height, *, near_plane, far_plane,
    radius_clip, eps2d, antialiased, valid_in=None,
):
    """EWA projection of N Gaussians into C pinhole cameras.

    means: [N, 3] world; covars: [N, 3, 3]; opacities: [N]; viewmats: [C, 4, 4]
    world-to-camera; Ks: [C, 3, 3]. width/height in pixels (Python ints).

    Returns a dict of [C, N, ...] arrays: ``means2d`` (pixels; pixel (i, j) has its
    centre at (j + 0.5, i + 0.5)), ``depths`` (camera z), ``conics`` (upper triangle
    (a, b, c) of the inverse 2D covariance, sigma = 0.5 (a dx^2 + c dy^2) + b dx dy),
    ``opacities`` (times the antialiasing compensation when ``antialiased``),
    ``compensations``, ``radii`` int32 [C, N, 2] (x and y half-widths of the box outside
    which alpha < 1/255; 0 means culled) and ``valid`` bool [C, N].
    """
    dt = means.dtype
    p_cam = jnp.einsum("cij,nj->cni", viewmats[:, :3, :3], means) + viewmats[:, None, :3, 3]
    x, y, z = p_cam[..., 0], p_cam[..., 1], p_cam[..., 2]
    cov_cam = jnp.einsum("cij,njk,clk->cnil", viewmats[:, :3, :3], covars, viewmats[:, :3, :3])

    finite = (
        jnp.all(jnp.isfinite(p_cam), axis=-1)
        & jnp.all(jnp.isfinite(cov_cam), axis=(-1, -2))
        & jnp.isfinite(opacities)[None, :]
        & jnp.all(jnp.isfinite(Ks.reshape(Ks.shape[0], -1)), axis=-1)[:, None]
    )
    valid = finite & (z > near_plane) & (z < far_plane)
    if valid_in is not None:
        valid = valid & valid_in[None, :]

    one = jnp.ones((), dt)
    zs = jnp.where(valid, z, one)
    xs = jnp.where(valid, x, 0 * one)
    ys = jnp.where(valid, y, 0 * one)
    cov_cam = jnp.where(valid[..., None, None], cov_cam, jnp.eye(3, dtype=dt))

    fx = Ks[:, 0, 0][:, None]
    fy = Ks[:, 1, 1][:, None]
    cx = Ks[:, 0, 2][:, None]
    cy = Ks[:, 1, 2][:, None]
    fx = jnp.where(jnp.isfinite(fx) & (fx != 0), fx, one)
    fy = jnp.where(jnp.isfinite(fy) & (fy != 0), fy, one)
    cx = jnp.where(jnp.isfinite(cx), cx, 0 * one)
    cy = jnp.where(jnp.isfinite(cy), cy, 0 * one)

    # The Jacobian is evaluated at a point clamped to 1.3x the field of view: far
    # off-screen Gaussians otherwise get absurd 2D footprints (as in 3DGS/gsplat).
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    tx = zs * jnp.clip(xs / zs, -lim_x_neg, lim_x_pos)
    ty = zs * jnp.clip(ys / zs, -lim_y_neg, lim_y_pos)

    zero = jnp.zeros_like(zs)
    jac = jnp.stack(
        [
            jnp.stack([fx / zs, zero, -fx * tx / (zs * zs)], axis=-1),
            jnp.stack([zero, fy / zs, -fy * ty / (zs * zs)], axis=-1),
        ],
        axis=-2,
    )  # [C, N, 2, 3]
    cov2d = jac @ cov_cam @ jnp.swapaxes(jac, -1, -2)
    a0, b0, c0 = cov2d[..., 0, 0], cov2d[..., 0, 1], cov2d[..., 1, 1]
    det_orig = a0 * c0 - b0 * b0
    a = a0 + eps2d
    c = c0 + eps2d
    b = b0
    det = a * c - b * b
    valid = valid & jnp.isfinite(det) & (det > 0) & jnp.isfinite(a) & jnp.isfinite(c)
    det_s = jnp.where(valid, det, one)
    a = jnp.where(valid, a, one)
    c = jnp.where(valid, c, one)
    b = jnp.where(valid, b, 0 * one)
    conics = jnp.stack([c / det_s, -b / det_s, a / det_s], axis=-1)

    # gsplat's floor: sqrt(max(0.005^2, det / det_blur)); below it the gradient is zero
    ratio = jnp.where(valid, det_orig, 0 * one) / det_s
    comp = jnp.sqrt(jnp.maximum(ratio, jnp.asarray(COMPENSATION_MIN ** 2, dt)))

    means2d = jnp.stack([fx * xs / zs + cx, fy * ys / zs + cy], axis=-1)
    opac = jnp.broadcast_to(jnp.where(jnp.isfinite(opacities), opacities, 0 * one), z.shape)
    if antialiased:
        opac = opac * comp

    # Opacity-aware extent: alpha = o exp(-sigma) >= 1/255 needs sigma <= log(255 o);
    # the exact bounding box of that ellipse has half-widths sqrt(2 log(255 o) Sigma_xx).
    o_sg = lax.stop_gradient(opac)
    visible = valid & (o_sg >= ALPHA_MIN)
    log_term = jnp.log(jnp.where(visible, o_sg / ALPHA_MIN, 2 * one))
    ext2 = 2 * jnp.maximum(log_term, 0 * one)
    rx = _RADIUS_MARGIN * jnp.sqrt(ext2 * lax.stop_gradient(a)) + 0.01
    ry = _RADIUS_MARGIN * jnp.sqrt(ext2 * lax.stop_gradient(c)) + 0.01
    rx = jnp.ceil(jnp.clip(rx, 0, _RADIUS_MAX))
    ry = jnp.ceil(jnp.clip(ry, 0, _RADIUS_MAX))
    m2 = lax.stop_gradient(means2d)
    on_screen = (
        (m2[..., 0] + rx > 0) & (m2[..., 0] - rx < width)
        & (m2[..., 1] + ry > 0) & (m2[..., 1] - ry < height)
    )
    visible = visible & on_screen & (jnp.maximum(rx, ry) > radius_clip)
    radii = jnp.where(visible[..., None], jnp.stack([rx, ry], axis=-1), 0).astype(jnp.int32)

    zero_f = 0 * one
    return dict(
        means2d=jnp.where(visible[..., None], means2d, zero_f),
        depths=jnp.where(visible, z, zero_f),
        conics=jnp.where(visible[..., None], conics, zero_f),
        opacities=jnp.where(visible, opac, zero_f),
        compensations=jnp.where(visible, comp, zero_f),
        radii=radii,
        valid=visible,
    )
