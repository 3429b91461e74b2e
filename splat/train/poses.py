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

import jax
import jax.numpy as jnp
import numpy as np

from jaxgraph import lie


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


def camera_centres(viewmats) -> np.ndarray:
    """Camera centres ``-R^T t`` [M, 3] (float64 numpy) of world-to-camera [M, 4, 4]."""
    vm = np.asarray(viewmats, np.float64)
    return -np.einsum("mji,mj->mi", vm[:, :3, :3], vm[:, :3, 3])


def mean_camera_distance(viewmats) -> float:
    """Mean distance of the camera centres from their centroid (world units): the scale of
    translation noise and errors (an inward-facing capture circles its object)."""
    c = camera_centres(viewmats)
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
    c_new = camera_centres(vm) + dirs * trans_frac * scale
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
    cos = np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)
    rot = np.rad2deg(np.arccos(cos))
    trans = np.linalg.norm(camera_centres(a) - camera_centres(b), axis=1) / scale
    return rot, trans


def corrected_viewmats(viewmats, tangents) -> np.ndarray:
    """Numpy float64 [M, 4, 4] of :func:`apply_correction` (for reports and export); the
    product is taken in the tangents' dtype (float32 unless x64 is enabled)."""
    tg = jnp.asarray(tangents)
    vm = jnp.asarray(np.asarray(viewmats), tg.dtype)
    return np.asarray(apply_correction(vm, tg), np.float64)
