"""Camera-pose corrections, perturbations and pose errors (docs/poses.md).

Conventions: a pose is a world-to-camera matrix ``T_cw`` [4, 4] (OpenCV axes). A correction
is a tangent ``xi = (v, w)`` [6] of :class:`jaxgraph.lie.SE3` (translation first, as
jaxgraph's tangent) in the **camera frame**: ``T_cw' = Exp(xi) T_cw``, i.e. the right
correction ``T_cw Exp(Ad(T_cw^-1) xi)`` with its tangent expressed at the camera. ``w``
turns the camera about its own centre and ``v`` moves it along its own axes, whatever
the world origin is (a world-frame tangent turns the camera about the world origin, which
couples the coordinates by the camera's distance from it; docs/poses.md).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxgraph import lie

from ..datasets.scene import camera_centers, project_points

# how a Jacobian with respect to the 6 pose coordinates is taken (tangent_jacobian)
JACOBIAN_MODES = ("forward", "reverse")


def apply_correction(viewmats, tangents):
    """``Exp(tangents) @ viewmats`` (jit- and grad-compatible): camera-frame corrections.

    viewmats [..., 4, 4] world-to-camera; tangents [..., 6] SE(3) tangents (v, w) in world
    units and radians along the camera's axes, same leading shape and dtype.
    Returns [..., 4, 4].
    """
    return lie.SE3.exp(tangents).as_matrix().astype(viewmats.dtype) @ viewmats


def gauge_basis(viewmats) -> np.ndarray:
    """The training set's gauge: ``A_i = Ad(T_i)`` [V, 6, 6] (float64 numpy) of world-to-camera
    poses [V, 4, 4]. Moving the whole world by ``Exp(g)`` (every ``T_i Exp(g)``) equals the
    camera-frame corrections ``xi_i = A_i g``; the training images cannot see it."""
    return np.asarray(lie.SE3.adjoint_of_matrix(jnp.asarray(viewmats)), np.float64)


def remove_gauge(tangents, basis, normal_inv):
    """Corrections [V, 6] minus their least-squares world motion: ``xi_i - A_i g`` with
    ``g = (sum A_i^T A_i)^-1 sum A_i^T xi_i`` (first order in the corrections).

    basis [V, 6, 6] from :func:`gauge_basis`; normal_inv [6, 6] the inverse of
    ``sum A_i^T A_i`` (precomputed: no matrix solve inside a compiled step)."""
    g = normal_inv @ jnp.einsum("vji,vj->i", basis, tangents)
    return tangents - jnp.einsum("vij,j->vi", basis, g)


def mean_camera_distance(viewmats) -> float:
    """Mean distance of the camera centres from their centroid (world units): the scale of
    translation noise and errors (an inward-facing capture circles its object)."""
    c = camera_centers(viewmats)
    return float(np.linalg.norm(c - c.mean(0), axis=1).mean())


def _random_unit(rng, n):
    u = rng.normal(size=(n, 3))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def perturb_poses(viewmats, rot_deg: float, trans_frac: float, seed: int, scale=None):
    """Each camera rotated by exactly ``rot_deg`` degrees about a uniformly random axis (in
    the camera frame) and its centre moved by exactly ``trans_frac * scale`` in a uniformly
    random world direction (``scale``: default :func:`mean_camera_distance`).

    viewmats [M, 4, 4] world-to-camera. Returns float64 numpy [M, 4, 4]; a fixed ``seed``
    reproduces the draw.
    """
    vm = np.asarray(viewmats, np.float64)
    m = vm.shape[0]
    rng = np.random.default_rng(seed)
    scale = mean_camera_distance(vm) if scale is None else float(scale)
    axis = _random_unit(rng, m)
    dirs = _random_unit(rng, m)
    rot = np.asarray(lie.SO3.exp(jnp.asarray(axis * np.deg2rad(rot_deg))).as_matrix(),
                     np.float64)
    out = vm.copy()
    r_new = rot @ vm[:, :3, :3]  # camera-frame rotation: R' = dR R
    c_new = camera_centers(vm) + dirs * trans_frac * scale
    out[:, :3, :3] = r_new
    out[:, :3, 3] = -np.einsum("mij,mj->mi", r_new, c_new)
    return out


def pose_errors(estimated, reference, scale=None):
    """Rotation error (degrees, angle of ``R_est R_ref^T``) and camera-centre error
    (``|c_est - c_ref| / scale``; default scale: :func:`mean_camera_distance` of
    ``reference``), each float64 numpy [M], of world-to-camera poses [M, 4, 4]."""
    a = np.asarray(estimated, np.float64).reshape(-1, 4, 4)
    b = np.asarray(reference, np.float64).reshape(-1, 4, 4)
    scale = mean_camera_distance(b) if scale is None else float(scale)
    rel = np.einsum("mij,mkj->mik", a[:, :3, :3], b[:, :3, :3])
    # the angle from both its cosine (trace) and its sine (the skew part's norm): arccos of
    # the trace alone loses small angles (float32 matrices read 0 below about 0.03 deg)
    cos = (np.trace(rel, axis1=1, axis2=2) - 1) / 2
    skew = np.stack([rel[:, 2, 1] - rel[:, 1, 2], rel[:, 0, 2] - rel[:, 2, 0],
                     rel[:, 1, 0] - rel[:, 0, 1]], axis=1)
    rot = np.rad2deg(np.arctan2(np.linalg.norm(skew, axis=1) / 2, cos))
    trans = np.linalg.norm(camera_centers(a) - camera_centers(b), axis=1) / scale
    return rot, trans


def image_shift(estimated, reference, Ks, points, width: int, height: int) -> np.ndarray:
    """How far each pose error moves the scene in its image: the median over ``points``
    [N, 3] (world) seen by the reference pose (in front of both poses and inside the
    reference's ``width`` x ``height`` image) of the distance in pixels between their
    projections with the estimated and with the reference world-to-camera pose ([M, 4, 4]
    each; Ks [M, 3, 3] or [3, 3]); float64 numpy [M] (NaN for a view that sees none of the
    points).

    A rotation about the camera centre and a sideways move of it look alike up to parallax
    (docs/poses.md): a pose can be a large angle from the reference and still move the
    image by a fraction of a pixel; this measures what the images can tell apart."""
    a = np.asarray(estimated, np.float64).reshape(-1, 4, 4)
    b = np.asarray(reference, np.float64).reshape(-1, 4, 4)
    Ks = np.broadcast_to(np.asarray(Ks, np.float64), (len(b), 3, 3))
    ua, va, za = project_points(a, Ks, points)
    ub, vb, zb = project_points(b, Ks, points)
    seen = (za > 0) & (zb > 0) & (ub >= 0) & (ub < width) & (vb >= 0) & (vb < height)
    with np.errstate(invalid="ignore"):  # behind a camera: masked out by ``seen``
        dist = np.where(seen, np.hypot(ua - ub, va - vb), np.nan)
    out = np.full(len(b), np.nan)
    some = seen.any(axis=1)
    out[some] = np.nanmedian(dist[some], axis=1)
    return out


def corrected_viewmats(viewmats, tangents) -> np.ndarray:
    """Numpy float64 [M, 4, 4] of :func:`apply_correction` (for reports and export); the
    product is taken in the tangents' dtype (float32 unless x64 is enabled)."""
    tg = jnp.asarray(tangents)
    vm = jnp.asarray(np.asarray(viewmats), tg.dtype)
    return np.asarray(apply_correction(vm, tg), np.float64)


def tangent_jacobian(image_fn, cfg, dtype, mode: str = "forward", with_value: bool = False):
    """Exact ``d image_fn(d, cfg) / d d`` at ``d = 0`` for a pose tangent ``d`` [6]: [..., 6].

    image_fn(d [6], cfg) -> image [...] renders with the :class:`TrainConfig` it is given;
    dtype: the tangent's dtype. mode "forward": 6 forward tangents (``jax.jvp`` vmapped over
    the basis, as ``jax.jacfwd``) through ``cfg.backend`` (Pallas: its tangent kernel,
    ``pallas_autodiff="forward"``); "reverse": one reverse pass per image value (``jax.vjp``
    vmapped over the image's basis, as ``jax.jacrev``) through ``cfg.backend``.
    ``with_value``: return ``(image, Jacobian)``, the image being the one both modes render
    on the way (no second render). Traceable (used inside the training step by the
    Gauss-Newton pose update and by :func:`splat.tracking.pose_jacobian`).
    """
    if mode not in JACOBIAN_MODES:
        raise ValueError(f"mode must be one of {JACOBIAN_MODES}, got {mode!r}")
    rcfg = dataclasses.replace(cfg, pallas_autodiff=mode)
    zero = jnp.zeros((6,), dtype)

    def f(d):
        return image_fn(d, rcfg)

    if mode == "forward":
        # the primal does not depend on the tangent: it stays unbatched (out_axes None)
        value, jac = jax.vmap(lambda v: jax.jvp(f, (zero,), (v,)), out_axes=(None, -1))(
            jnp.eye(6, dtype=dtype))
    else:
        value, pull = jax.vjp(f, zero)
        basis = jnp.eye(value.size, dtype=value.dtype).reshape((value.size,) + value.shape)
        (jac,) = jax.vmap(pull)(basis)
        jac = jac.reshape(value.shape + (6,))
    return (value, jac) if with_value else jac


def image_motion_jacobian(image, depth, K):
    """Direct image alignment's ``d image / d xi`` [H, W, D, 6] for a camera-frame correction
    ``Exp(xi) T_cw`` (xi = (v, w), first order): each pixel sees a surface point at its
    ``depth`` [H, W] (camera z, world units) that moves in the image by ``du/dxi`` [2, 6]
    (pinhole K [3, 3], pixel centres at +0.5), so the image there changes by minus its
    spatial gradient (central differences of ``image`` [H, W, D], one-sided at the border)
    times that motion. Ignores the change of the Gaussians' shapes, view-dependent colours
    and occlusions (the exact Jacobian: :func:`tangent_jacobian`)."""
    h, w = image.shape[:2]
    dt = image.dtype
    gy, gx = jnp.gradient(image, axis=(0, 1))
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    x = ((jnp.arange(w, dtype=dt) + 0.5 - cx) / fx)[None, :]
    y = ((jnp.arange(h, dtype=dt) + 0.5 - cy) / fy)[:, None]
    x, y = jnp.broadcast_to(x, (h, w)), jnp.broadcast_to(y, (h, w))
    iz = 1.0 / depth
    zero = jnp.zeros_like(x)
    du = fx * jnp.stack([iz, zero, -x * iz, -x * y, 1 + x * x, -y], -1)  # [H, W, 6]
    dv = fy * jnp.stack([zero, iz, -y * iz, -(1 + y * y), x * y, x], -1)
    return -(gx[..., None] * du[:, :, None, :] + gy[..., None] * dv[:, :, None, :])


def solve_spd(a, b):
    """``a^-1 b`` for a small symmetric positive definite ``a`` [n, n] and ``b`` [n] by an
    unrolled Cholesky factorisation (plain array operations, static n: no linear-algebra
    library call in a compiled step, so the CUDA program has no solver custom call)."""
    n = a.shape[0]
    L = [[None] * n for _ in range(n)]
    for j in range(n):
        s = a[j, j] - sum(L[j][k] * L[j][k] for k in range(j))
        L[j][j] = jnp.sqrt(s)
        for i in range(j + 1, n):
            L[i][j] = (a[i, j] - sum(L[i][k] * L[j][k] for k in range(j))) / L[j][j]
    y = []
    for i in range(n):
        y.append((b[i] - sum(L[i][k] * y[k] for k in range(i))) / L[i][i])
    x = [None] * n
    for i in reversed(range(n)):
        x[i] = (y[i] - sum(L[k][i] * x[k] for k in range(i + 1, n))) / L[i][i]
    return jnp.stack(x)


def gauss_newton_step(jac, residual, damping: float, max_rot: float, max_trans: float):
    """Levenberg-Marquardt step ``d`` [6] of a pose tangent for the residual ``residual`` [M]
    with Jacobian ``jac`` [M, 6]: ``(J^T J + damping diag(J^T J)) d = -J^T r``, then scaled
    down as a whole (direction kept) so that ``|d_rot| <= max_rot`` (radians) and
    ``|d_trans| <= max_trans`` (world units). Coordinates the image does not see (a zero
    column) get a zero step: the diagonal is floored at 1e-9 of its mean."""
    jac = jac.reshape(-1, 6)
    r = residual.reshape(-1).astype(jac.dtype)
    a = jac.T @ jac
    g = jac.T @ r
    diag = jnp.diagonal(a)
    floor = 1e-9 * jnp.mean(diag) + jnp.finfo(jac.dtype).tiny
    a = a + jnp.diag(damping * diag + floor)
    d = -solve_spd(a, g)
    nv = jnp.linalg.norm(d[:3])
    nw = jnp.linalg.norm(d[3:])
    scale = jnp.minimum(1.0, jnp.minimum(max_trans / jnp.maximum(nv, 1e-30),
                                         max_rot / jnp.maximum(nw, 1e-30)))
    return d * scale.astype(d.dtype)
