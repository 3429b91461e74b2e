"""Real spherical harmonics (degrees 0-3) for view-dependent colour, 3DGS/gsplat convention."""

from __future__ import annotations

import jax.numpy as jnp

# degree-0 basis value 1 / (2 sqrt(pi)): colour c is stored as (c - 0.5) / SH_C0
SH_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005,
       -1.0925484305920792, 0.5462742152960396)
_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
       -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def num_sh_bases(degree: int) -> int:
    """Number of SH coefficients per channel for a degree: (degree + 1)^2."""
    return (degree + 1) ** 2


def eval_sh(degree: int, coeffs, dirs):
    """Evaluate SH of ``degree`` (0..3).

    coeffs: [..., K, D] with K >= (degree + 1)^2 (extra bases ignored); dirs: [..., 3]
    view directions (need not be normalised; zero vectors are safe). Returns [..., D]
    (without the +0.5 offset that :func:`sh_to_colors` applies).
    """
    if not 0 <= degree <= 3:
        raise ValueError(f"sh_degree must be in 0..3, got {degree}")
    k_needed = num_sh_bases(degree)
    if coeffs.shape[-2] < k_needed:
        raise ValueError(
            f"sh_degree={degree} needs {k_needed} SH bases, colors has {coeffs.shape[-2]}")
    dt = coeffs.dtype
    res = SH_C0 * coeffs[..., 0, :]
    if degree == 0:
        return res
    n2 = jnp.sum(dirs * dirs, axis=-1, keepdims=True)
    ok = n2 > 0
    d = jnp.where(ok, dirs / jnp.sqrt(jnp.where(ok, n2, jnp.ones_like(n2))), 0).astype(dt)
    x, y, z = d[..., 0:1], d[..., 1:2], d[..., 2:3]
    res = res - _C1 * y * coeffs[..., 1, :] + _C1 * z * coeffs[..., 2, :] - _C1 * x * coeffs[..., 3, :]
    if degree == 1:
        return res
    xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    res = (res + _C2[0] * xy * coeffs[..., 4, :] + _C2[1] * yz * coeffs[..., 5, :]
           + _C2[2] * (2 * zz - xx - yy) * coeffs[..., 6, :]
           + _C2[3] * xz * coeffs[..., 7, :] + _C2[4] * (xx - yy) * coeffs[..., 8, :])
    if degree == 2:
        return res
    res = (res
           + _C3[0] * y * (3 * xx - yy) * coeffs[..., 9, :]
           + _C3[1] * xy * z * coeffs[..., 10, :]
           + _C3[2] * y * (4 * zz - xx - yy) * coeffs[..., 11, :]
           + _C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * coeffs[..., 12, :]
           + _C3[4] * x * (4 * zz - xx - yy) * coeffs[..., 13, :]
           + _C3[5] * z * (xx - yy) * coeffs[..., 14, :]
           + _C3[6] * x * (xx - 3 * yy) * coeffs[..., 15, :])
    return res


def sh_to_colors(degree: int, coeffs, means, viewmats):
    """Per-camera colours from SH coefficients, as gsplat does: max(SH(dir) + 0.5, 0).

    coeffs: [N, K, D]; means: [N, 3] world; viewmats: [C, 4, 4] world-to-camera.
    The view direction is from the camera centre to the Gaussian. Returns [C, N, D].
    """
    rot = viewmats[:, :3, :3]
    t = viewmats[:, :3, 3]
    campos = -jnp.einsum("cji,cj->ci", rot, t)  # R^T (-t)
    campos = jnp.where(jnp.isfinite(campos), campos, 0)
    dirs = means[None, :, :] - campos[:, None, :]
    dirs = jnp.where(jnp.isfinite(dirs), dirs, 0)
    vals = eval_sh(degree, coeffs[None], dirs)
    return jnp.maximum(vals + 0.5, 0)
