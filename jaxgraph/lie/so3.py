"""SO(3): exponential and logarithm maps, quaternions and Jacobians.

Conventions: tangent vectors ``w[..., 3]`` (axis times angle, radians); rotation
matrices ``R[..., 3, 3]``; quaternions ``q[..., 4]`` in (w, x, y, z) order. Batch
dimensions lead. Jacobians use right perturbations, ``Exp(w + d) ~= Exp(w) Exp(Jr(w) d)``.

Every map is a ``jax.custom_jvp`` whose rule is the closed-form Lie-group derivative,
computed from coefficients that are smooth at every angle (``_series``), so values and
derivatives of every order are finite at the identity, at tiny angles and at pi.

Derivatives with respect to a matrix treat it as a rotation: a tangent ``dR`` enters as
``delta = vee(skew(R^T dR))``. Components of ``dR`` that leave SO(3) (scale, shear) are
ignored, which is the derivative of "project to the nearest rotation, then apply".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _series
from ._ops import cross, dot, float_dtype, hat3, matmul, matvec, quaternion_conjugate, quaternion_multiply, transpose, vee3


def _as_float(x) -> jnp.ndarray:
    x = jnp.asarray(x)
    return x.astype(float_dtype(x))


def _eye(dtype) -> jnp.ndarray:
    return jnp.eye(3, dtype=dtype)


# ----------------------------------------------------------------------------------------
# Jacobians (smooth compositions of safe coefficients: plain autodiff is exact here)


def so3_right_jacobian(w: jnp.ndarray) -> jnp.ndarray:
    """Right Jacobian Jr(w)[...,3,3] = I - B W + C W^2 of SO(3)'s exponential."""
    w = _as_float(w)
    t = dot(w, w)
    W = hat3(w)
    b = _series.one_minus_cos_over_theta2(t)[..., None, None]
    c = _series.theta_minus_sin_over_theta3(t)[..., None, None]
    return _eye(w.dtype) - b * W + c * matmul(W, W)


def so3_left_jacobian(w: jnp.ndarray) -> jnp.ndarray:
    """Left Jacobian Jl(w)[...,3,3] = Jr(-w) = I + B W + C W^2 (also SE(3)'s V matrix)."""
    return so3_right_jacobian(-_as_float(w))


def so3_right_jacobian_inverse(w: jnp.ndarray) -> jnp.ndarray:
    """Jr(w)^-1 [...,3,3] = I + W/2 + D W^2, finite up to |w| = pi (and beyond, below 2 pi)."""
    w = _as_float(w)
    t = dot(w, w)
    W = hat3(w)
    d = _series.inverse_jacobian_coefficient(t)[..., None, None]
    return _eye(w.dtype) + 0.5 * W + d * matmul(W, W)


def so3_left_jacobian_inverse(w: jnp.ndarray) -> jnp.ndarray:
    """Jl(w)^-1 [...,3,3] = Jr(-w)^-1."""
    return so3_right_jacobian_inverse(-_as_float(w))


def _right_jacobian_apply(w, v):
    t = dot(w, w)
    b = _series.one_minus_cos_over_theta2(t)[..., None]
    c = _series.theta_minus_sin_over_theta3(t)[..., None]
    wv = cross(w, v)
    return v - b * wv + c * cross(w, wv)


def _right_jacobian_inverse_apply(w, v):
    t = dot(w, w)
    d = _series.inverse_jacobian_coefficient(t)[..., None]
    wv = cross(w, v)
    return v + 0.5 * wv + d * cross(w, wv)


# ----------------------------------------------------------------------------------------
# exp


@jax.custom_jvp
def _so3_exp(w):
    t = dot(w, w)
    a = _series.sin_over_theta(t)[..., None, None]
    b = _series.one_minus_cos_over_theta2(t)[..., None, None]
    # W^2 = w w^T - t I, so R = (1 - b t) I + a W + b w w^T.
    outer = w[..., :, None] * w[..., None, :]
    return (1.0 - b * t[..., None, None]) * _eye(w.dtype) + a * hat3(w) + b * outer


@_so3_exp.defjvp
def _so3_exp_jvp(primals, tangents):
    (w,), (dw,) = primals, tangents
    R = _so3_exp(w)
    return R, matmul(R, hat3(_right_jacobian_apply(w, dw)))


def so3_exp(w: jnp.ndarray) -> jnp.ndarray:
    """Rotation matrix R[...,3,3] = Exp(w) of axis-angle w[...,3] (radians)."""
    return _so3_exp(_as_float(w))


# ----------------------------------------------------------------------------------------
# quaternions


def _quaternion_from_rotation(R):
    """Unit quaternion (w >= 0) of a rotation matrix, without any square root near zero.

    Each of the four cases builds the vector 4 q_k q (k = x, y, z or w) from the skew and
    symmetric parts of R; its squared norm is 4 t with t = 4 q_k^2, so it is scaled by
    1 / (2 sqrt(t)). The case is chosen by Day's comparisons (r22 < 0, r00 > r11,
    r00 < -r11; "Converting a rotation matrix to a quaternion", 2015), which guarantee
    t >= 1 for every rotation: the identity and angle pi are as safe as any rotation.
    The sign of each case is fixed before the selection so that w >= 0. For slightly
    non-orthonormal input the result is unit to within that deviation.
    """
    r00, r11, r22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    r01, r02, r10, r12, r20, r21 = R[..., 0, 1], R[..., 0, 2], R[..., 1, 0], R[..., 1, 2], R[..., 2, 0], R[..., 2, 1]
    wx, wy, wz = r21 - r12, r02 - r20, r10 - r01
    xy, xz, yz = r01 + r10, r02 + r20, r12 + r21
    tx, ty, tz, tw = 1.0 + r00 - r11 - r22, 1.0 - r00 + r11 - r22, 1.0 - r00 - r11 + r22, 1.0 + r00 + r11 + r22
    sx, sy, sz = (jnp.where(c < 0, -1.0, 1.0).astype(R.dtype) for c in (wx, wy, wz))
    case_x = jnp.stack([wx * sx, tx * sx, xy * sx, xz * sx], axis=-1)
    case_y = jnp.stack([wy * sy, xy * sy, ty * sy, yz * sy], axis=-1)
    case_z = jnp.stack([wz * sz, xz * sz, yz * sz, tz * sz], axis=-1)
    case_w = jnp.stack([tw, wx, wy, wz], axis=-1)
    c0, c1, c2 = r22 < 0, r00 > r11, r00 < -r11
    t = jnp.where(c0, jnp.where(c1, tx, ty), jnp.where(c2, tz, tw))
    q = jnp.where(
        c0[..., None], jnp.where(c1[..., None], case_x, case_y), jnp.where(c2[..., None], case_z, case_w)
    )
    # t >= 1 for rotations; the floor only keeps garbage input (e.g. zeros) finite.
    return q * (0.5 * jax.lax.rsqrt(jnp.maximum(t, jnp.finfo(R.dtype).tiny)))[..., None]


def _vee_rt(R, dR):
    """vee(R^T dR) without forming the product: the right tangent of a matrix motion."""
    def col_dot(i, j):
        return R[..., 0, i] * dR[..., 0, j] + R[..., 1, i] * dR[..., 1, j] + R[..., 2, i] * dR[..., 2, j]

    return 0.5 * jnp.stack(
        [col_dot(2, 1) - col_dot(1, 2), col_dot(0, 2) - col_dot(2, 0), col_dot(1, 0) - col_dot(0, 1)], axis=-1
    )


def _normalize_positive(q):
    q = q / jnp.sqrt(dot(q, q))[..., None]
    return jnp.where(q[..., :1] < 0, -q, q)


@jax.custom_jvp
def _quaternion_from_matrix(R):
    return _quaternion_from_rotation(R)


@_quaternion_from_matrix.defjvp
def _quaternion_from_matrix_jvp(primals, tangents):
    (R,), (dR,) = primals, tangents
    q = _quaternion_from_matrix(R)
    delta = _vee_rt(R, dR)
    pure = jnp.concatenate([jnp.zeros_like(delta[..., :1]), delta], axis=-1)
    return q, 0.5 * quaternion_multiply(q, pure)


def quaternion_from_matrix(R: jnp.ndarray) -> jnp.ndarray:
    """Unit quaternion q[...,4] (w, x, y, z; w >= 0) of rotation matrix R[...,3,3].

    Four-case (Shepperd/Day) conversion: no square root near zero, so the identity is as
    safe as any other rotation. Slightly non-orthonormal input is accepted.
    """
    return _quaternion_from_matrix(_as_float(R))


def _safe_unit(q):
    """q / |q|, with the zero quaternion mapped to the identity (never NaN)."""
    n2 = dot(q, q)
    ok = n2 > jnp.finfo(q.dtype).tiny
    identity = jnp.zeros_like(q).at[..., 0].set(1.0)
    inv = 1.0 / jnp.sqrt(jnp.where(ok, n2, 1.0))
    return jnp.where(ok[..., None], q * inv[..., None], identity), jnp.where(ok, inv, 0.0)


def _matrix_from_unit_quaternion(q):
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz, wx, wy, wz = x * y, x * z, y * z, w * x, w * y, w * z
    return jnp.stack(
        [
            jnp.stack([1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy)], axis=-1),
            jnp.stack([2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx)], axis=-1),
            jnp.stack([2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy)], axis=-1),
        ],
        axis=-2,
    )


def _unit_tangent(q, dq):
    """Right tangent delta[...,3] of a (possibly unnormalised) quaternion q moving by dq."""
    unit, inv_norm = _safe_unit(q)
    d_unit = (dq - unit * dot(unit, dq)[..., None]) * inv_norm[..., None]
    return unit, 2.0 * quaternion_multiply(quaternion_conjugate(unit), d_unit)[..., 1:]


@jax.custom_jvp
def _matrix_from_quaternion(q):
    return _matrix_from_unit_quaternion(_safe_unit(q)[0])


@_matrix_from_quaternion.defjvp
def _matrix_from_quaternion_jvp(primals, tangents):
    (q,), (dq,) = primals, tangents
    R = _matrix_from_quaternion(q)
    _, delta = _unit_tangent(q, dq)
    return R, matmul(R, hat3(delta))


def matrix_from_quaternion(q: jnp.ndarray) -> jnp.ndarray:
    """Rotation matrix R[...,3,3] of quaternion q[...,4] (w, x, y, z), normalised first.

    The zero quaternion maps to the identity (with zero derivative) rather than NaN.
    """
    return _matrix_from_quaternion(_as_float(q))


def quaternion_exp(w: jnp.ndarray) -> jnp.ndarray:
    """Unit quaternion q[...,4] = (cos(theta/2), sin(theta/2) w/theta) of w[...,3]."""
    w = _as_float(w)
    t = dot(w, w)
    return jnp.concatenate(
        [_series.cos_half_theta(t)[..., None], _series.half_sin_over_theta(t)[..., None] * w], axis=-1
    )


def _quaternion_log_value(q):
    q = _normalize_positive(_safe_unit(q)[0])
    v = q[..., 1:]
    n2 = dot(v, v)
    qw = q[..., 0]
    # 2 atan2(n, qw) / n; below the threshold use atan's series in s = n^2 / qw^2 (qw ~ 1 there).
    small = n2 < 1e-4
    n_safe = jnp.sqrt(jnp.where(small, 1.0, n2))
    exact = 2.0 * jnp.arctan2(n_safe, qw) / n_safe
    qw_safe = jnp.where(small, qw, 1.0)
    s = jnp.where(small, n2, 0.0) / (qw_safe * qw_safe)
    series = (2.0 / qw_safe) * (1.0 - s / 3.0 + s * s / 5.0 - s * s * s / 7.0)
    return jnp.where(small, series, exact)[..., None] * v


@jax.custom_jvp
def _quaternion_log(q):
    return _quaternion_log_value(q)


@_quaternion_log.defjvp
def _quaternion_log_jvp(primals, tangents):
    (q,), (dq,) = primals, tangents
    w = _quaternion_log(q)
    _, delta = _unit_tangent(q, dq)
    # q and -q are the same rotation; the sign flip inside the primal does not change delta.
    return w, _right_jacobian_inverse_apply(w, delta)


def quaternion_log(q: jnp.ndarray) -> jnp.ndarray:
    """Axis-angle w[...,3] (|w| <= pi) of quaternion q[...,4] (w, x, y, z), normalised first."""
    return _quaternion_log(_as_float(q))


# ----------------------------------------------------------------------------------------
# log


@jax.custom_jvp
def _so3_log(R):
    return _quaternion_log_value(_quaternion_from_rotation(R))


@_so3_log.defjvp
def _so3_log_jvp(primals, tangents):
    (R,), (dR,) = primals, tangents
    w = _so3_log(R)
    # At |w| = pi this is the one-sided limit: D -> 1/pi^2 (the (1+cos)/(2 theta sin) term -> 0).
    return w, _right_jacobian_inverse_apply(w, _vee_rt(R, dR))


def so3_log(R: jnp.ndarray) -> jnp.ndarray:
    """Axis-angle w[...,3] (|w| <= pi, radians) of rotation matrix R[...,3,3].

    Computed through the quaternion (Shepperd + atan2), accurate at every angle. At exactly
    pi either of the two valid vectors may be returned; the derivative is the one-sided limit
    ``Jr(w)^-1`` for that vector.
    """
    return _so3_log(_as_float(R))


def so3_apply_quaternion(q: jnp.ndarray, p: jnp.ndarray) -> jnp.ndarray:
    """Rotate points p[...,3] by unit quaternion q[...,4] (w, x, y, z)."""
    u = q[..., 1:]
    uv = cross(u, p)
    return p + 2.0 * (q[..., :1] * uv + cross(u, uv))


__all__ = [
    "so3_exp",
    "so3_log",
    "quaternion_from_matrix",
    "matrix_from_quaternion",
    "quaternion_exp",
    "quaternion_log",
    "so3_right_jacobian",
    "so3_left_jacobian",
    "so3_right_jacobian_inverse",
    "so3_left_jacobian_inverse",
    "so3_apply_quaternion",
    "matvec",
]
