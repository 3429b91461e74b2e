"""Rotation conversions for the file readers, in float64 numpy (no JAX program to compile).

Quaternions are ``(w, x, y, z)``, the row layout of ``lie.SO3``/``lie.SE3``.
"""

from __future__ import annotations

import warnings

import numpy as np

from ._text import err

__all__ = [
    "PD_FLOOR_RELATIVE",
    "angle_axis_from_quaternion",
    "matrix_from_quaternion",
    "quaternion_from_angle_axis",
    "quaternion_from_matrix",
    "repair_information",
    "transform_points",
    "upper_to_full",
]

#: Repair rule for information matrices that are not positive definite: eigenvalues
#: are raised to at least ``PD_FLOOR_RELATIVE * max|eigenvalue|`` of the same matrix
#: (an all-zero matrix becomes ``PD_FLOOR_RELATIVE * I``), keeping the eigenvectors.
PD_FLOOR_RELATIVE = 1e-6


def quaternion_from_angle_axis(w) -> np.ndarray:
    """Unit quaternions ``[M, 4]`` of angle-axis vectors ``w[M, 3]`` (Ceres' ``AngleAxisToQuaternion``:
    ``(cos(t/2), sin(t/2) w/t)``, ``t = |w|``; ``(1, w/2)`` at ``t = 0``)."""
    w = np.asarray(w, np.float64)
    theta = np.sqrt(np.einsum("ij,ij->i", w, w))
    safe = np.where(theta > 0, theta, 1.0)
    k = np.where(theta > 0, np.sin(0.5 * theta) / safe, 0.5)
    return np.concatenate([np.cos(0.5 * theta)[:, None], w * k[:, None]], 1)


def angle_axis_from_quaternion(q) -> np.ndarray:
    """Angle-axis vectors ``[M, 3]`` (angle in ``[0, pi]``) of quaternions ``q[M, 4]`` of any
    non-zero norm (Ceres' ``QuaternionToAngleAxis``)."""
    q = np.asarray(q, np.float64)
    v = q[:, 1:]
    sin_theta = np.sqrt(np.einsum("ij,ij->i", v, v))
    cos_theta = q[:, 0]
    two_theta = 2.0 * np.where(cos_theta < 0, np.arctan2(-sin_theta, -cos_theta), np.arctan2(sin_theta, cos_theta))
    norm = np.sqrt(sin_theta**2 + cos_theta**2)
    k = np.where(sin_theta > 0, two_theta / np.where(sin_theta > 0, sin_theta, 1.0), 2.0 / np.where(norm > 0, norm, 1.0))
    return v * k[:, None]


def quaternion_from_matrix(R) -> np.ndarray:
    """Unit quaternions ``[M, 4]`` (``w >= 0``) of 3x3 matrices ``R[M, 3, 3]``, by Eigen's method
    (the one GTSAM's ``Rot3::toQuaternion`` uses), then normalised: a matrix that is not quite
    orthonormal (rounded file digits) gives the nearby rotation that GTSAM gives."""
    R = np.asarray(R, np.float64)
    M = R.shape[0]
    q = np.zeros((M, 4))
    t = np.trace(R, axis1=1, axis2=2)
    pos = t > 0
    s = np.sqrt(np.where(pos, t, 0.0) + 1.0)
    inv = 0.5 / s
    q[pos, 0] = 0.5 * s[pos]
    q[pos, 1] = ((R[:, 2, 1] - R[:, 1, 2]) * inv)[pos]
    q[pos, 2] = ((R[:, 0, 2] - R[:, 2, 0]) * inv)[pos]
    q[pos, 3] = ((R[:, 1, 0] - R[:, 0, 1]) * inv)[pos]
    for m in np.flatnonzero(~pos):
        d = np.diagonal(R[m])
        i = 0
        if d[1] > d[0]:
            i = 1
        if d[2] > d[i]:
            i = 2
        j, k = (i + 1) % 3, (i + 2) % 3
        s2 = np.sqrt(d[i] - d[j] - d[k] + 1.0)
        q[m, 1 + i] = 0.5 * s2
        s2 = 0.5 / s2
        q[m, 0] = (R[m, k, j] - R[m, j, k]) * s2
        q[m, 1 + j] = (R[m, j, i] + R[m, i, j]) * s2
        q[m, 1 + k] = (R[m, k, i] + R[m, i, k]) * s2
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q * np.where(q[:, :1] < 0, -1.0, 1.0)


def matrix_from_quaternion(q) -> np.ndarray:
    """Rotation matrices ``[M, 3, 3]`` of quaternions ``q[M, 4]`` (normalised first)."""
    q = np.asarray(q, np.float64)
    w, x, y, z = (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], 1)


def transform_points(R, t, p) -> np.ndarray:
    """``R p + t`` row by row: ``R[M, k, k]``, ``t[M, k]``, ``p[M, k]``."""
    return np.einsum("mij,mj->mi", R, p) + t


def upper_to_full(upper: np.ndarray, d: int) -> np.ndarray:
    """Symmetric ``[..., d, d]`` matrices from their upper triangles, row by row ``[..., d(d+1)/2]``."""
    iu = np.triu_indices(d)
    m = np.zeros(upper.shape[:-1] + (d, d))
    m[..., iu[0], iu[1]] = upper
    m[..., iu[1], iu[0]] = upper
    return m


def repair_information(path, info: np.ndarray, lines, strict: bool, error_cls) -> np.ndarray:
    """``info[M, d, d]`` with the matrices that are not positive definite repaired (one warning
    naming the count and the first line), or ``error_cls`` naming the first line with ``strict``.

    A matrix counts as positive definite when its smallest eigenvalue exceeds ``1e-12`` times
    its largest absolute eigenvalue; the others get their eigenvalues raised to
    ``PD_FLOOR_RELATIVE`` times that (eigenvectors kept). ``lines``: the file line of each matrix.
    """
    if not len(info):
        return info
    eig = np.linalg.eigvalsh(info)
    scale = np.max(np.abs(eig), axis=-1)
    bad = np.nonzero(~(eig[:, 0] > 1e-12 * scale))[0]
    if not bad.size:
        return info
    first = int(bad[0])
    if strict:
        raise err(path, lines[first], f"information matrix is not positive definite (smallest eigenvalue "
                                      f"{eig[first, 0]!r}); {bad.size} such edge(s) in the file", error_cls)
    info = info.copy()
    w, V = np.linalg.eigh(info[bad])
    floor = PD_FLOOR_RELATIVE * np.where(scale[bad] > 0, scale[bad], 1.0)
    w = np.maximum(w, floor[:, None])
    fixed = np.einsum("mij,mj,mkj->mik", V, w, V)
    info[bad] = 0.5 * (fixed + np.swapaxes(fixed, -1, -2))
    warnings.warn(
        f"{path}: {bad.size} information matrices are not positive definite (first on line {lines[first]}); "
        f"repaired by raising eigenvalues to {PD_FLOOR_RELATIVE:g} x the largest |eigenvalue| of each matrix "
        "(read_g2o(..., strict=True) rejects them instead)",
        stacklevel=4,
    )
    return info
