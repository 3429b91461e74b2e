"""SO(3): exponential and logarithm maps, quaternions and Jacobians, and the group class ``SO3``.

Conventions: tangent vectors ``w[..., 3]`` (axis times angle, radians); rotation
matrices ``R[..., 3, 3]``; quaternions ``q[..., 4]`` in (w, x, y, z) order. Batch
dimensions lead. Jacobians use right perturbations, ``Exp(w + d) ~= Exp(w) Exp(Jr(w) d)``.

Every map is a ``jax.custom_jvp`` whose rule is the closed-form Lie-group derivative,
computed from coefficients that are smooth at every angle (``_series``), so values and
derivatives of every order are finite at the identity, at tiny angles and at pi.

Derivatives with respect to a matrix treat it as a rotation: a tangent ``dR`` enters as
``delta = vee(skew(R^T dR))``. Components of ``dR`` that leave SO(3) (scale, shear) are
ignored, which is the derivative of "project to the nearest rotation, then apply".

``SO3`` is jaxlie's class: parameters ``wxyz[..., 4]``, a unit quaternion.
"""

from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp

from . import _series, hints
from ._base import SOBase, resolve_dtype
from ._ops import (as_float, check_trailing, cross, custom_jvp_with, dot, hat3, matmul, quaternion_conjugate,
                   quaternion_multiply, trailing_shapes)
from .utils import register_lie_group

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
    "SO3",
]


def _eye(dtype) -> jnp.ndarray:
    return jnp.eye(3, dtype=dtype)


def hat3_squared(w: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
    """``hat3(w) @ hat3(w) = w w^T - t I`` [...,3,3] (``t = w . w``), elementwise: one fused
    kernel instead of a batched dot, which XLA:CPU compiles as a kernel of its own (a 3D
    solve's Jacobians held a dozen, 20-30 ms of compile time each)."""
    return w[..., :, None] * w[..., None, :] - t[..., None, None] * _eye(w.dtype)


# ----------------------------------------------------------------------------------------
# Jacobians (smooth compositions of safe coefficients: plain autodiff is exact here)


@trailing_shapes((3,))
def so3_right_jacobian(w: jnp.ndarray) -> jnp.ndarray:
    """Right Jacobian Jr(w)[...,3,3] = I - B W + C W^2 of SO(3)'s exponential."""
    w = as_float(w)
    t = dot(w, w)
    W = hat3(w)
    b = _series.one_minus_cos_over_theta2(t)[..., None, None]
    c = _series.theta_minus_sin_over_theta3(t)[..., None, None]
    return _eye(w.dtype) - b * W + c * hat3_squared(w, t)


@trailing_shapes((3,))
def so3_left_jacobian(w: jnp.ndarray) -> jnp.ndarray:
    """Left Jacobian Jl(w)[...,3,3] = Jr(-w) = I + B W + C W^2 (also SE(3)'s V matrix)."""
    return so3_right_jacobian(-as_float(w))


@trailing_shapes((3,))
def so3_right_jacobian_inverse(w: jnp.ndarray) -> jnp.ndarray:
    """Jr(w)^-1 [...,3,3] = I + W/2 + D W^2, finite up to |w| = pi (and beyond, below 2 pi)."""
    w = as_float(w)
    t = dot(w, w)
    W = hat3(w)
    d = _series.inverse_jacobian_coefficient(t)[..., None, None]
    return _eye(w.dtype) + 0.5 * W + d * hat3_squared(w, t)


@trailing_shapes((3,))
def so3_left_jacobian_inverse(w: jnp.ndarray) -> jnp.ndarray:
    """Jl(w)^-1 [...,3,3] = Jr(-w)^-1."""
    return so3_right_jacobian_inverse(-as_float(w))


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


@custom_jvp_with(lambda w, R, dw: matmul(R, hat3(_right_jacobian_apply(w, dw))))
def _so3_exp(w):
    t = dot(w, w)
    a = _series.sin_over_theta(t)[..., None, None]
    b = _series.one_minus_cos_over_theta2(t)[..., None, None]
    # W^2 = w w^T - t I, so R = (1 - b t) I + a W + b w w^T.
    outer = w[..., :, None] * w[..., None, :]
    return (1.0 - b * t[..., None, None]) * _eye(w.dtype) + a * hat3(w) + b * outer


@trailing_shapes((3,))
def so3_exp(w: jnp.ndarray) -> jnp.ndarray:
    """Rotation matrix R[...,3,3] = Exp(w) of axis-angle w[...,3] (radians)."""
    return _so3_exp(as_float(w))


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


def _quaternion_from_matrix_tangent(R, q, dR):
    delta = _vee_rt(R, dR)
    pure = jnp.concatenate([jnp.zeros_like(delta[..., :1]), delta], axis=-1)
    return 0.5 * quaternion_multiply(q, pure)


_quaternion_from_matrix = custom_jvp_with(_quaternion_from_matrix_tangent)(_quaternion_from_rotation)


@trailing_shapes((3, 3))
def quaternion_from_matrix(R: jnp.ndarray) -> jnp.ndarray:
    """Unit quaternion q[...,4] (w, x, y, z; w >= 0) of rotation matrix R[...,3,3].

    Four-case (Shepperd/Day) conversion: no square root near zero, so the identity is as
    safe as any other rotation. Slightly non-orthonormal input is accepted.
    """
    return _quaternion_from_matrix(as_float(R))


def _safe_unit(q):
    """q / |q|, with the zero quaternion mapped to the identity (never NaN)."""
    n2 = dot(q, q)
    ok = n2 > jnp.finfo(q.dtype).tiny
    # an indexed update, though XLA:CPU makes it a loop kernel: a broadcast constant in its
    # place made sphere2500's solve 9 % slower (quiet A/B) and its compile no faster
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


@custom_jvp_with(lambda q, R, dq: matmul(R, hat3(_unit_tangent(q, dq)[1])))
def _matrix_from_quaternion(q):
    return _matrix_from_unit_quaternion(_safe_unit(q)[0])


@trailing_shapes((4,))
def matrix_from_quaternion(q: jnp.ndarray) -> jnp.ndarray:
    """Rotation matrix R[...,3,3] of quaternion q[...,4] (w, x, y, z), normalised first.

    The zero quaternion maps to the identity (with zero derivative) rather than NaN.
    """
    return _matrix_from_quaternion(as_float(q))


@trailing_shapes((3,))
def quaternion_exp(w: jnp.ndarray) -> jnp.ndarray:
    """Unit quaternion q[...,4] = (cos(theta/2), sin(theta/2) w/theta) of w[...,3]."""
    w = as_float(w)
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


def _quaternion_log_tangent(q, w, dq):
    _, delta = _unit_tangent(q, dq)
    # q and -q are the same rotation; the sign flip inside the primal does not change delta.
    return _right_jacobian_inverse_apply(w, delta)


_quaternion_log = custom_jvp_with(_quaternion_log_tangent)(_quaternion_log_value)


@trailing_shapes((4,))
def quaternion_log(q: jnp.ndarray) -> jnp.ndarray:
    """Axis-angle w[...,3] (|w| <= pi) of quaternion q[...,4] (w, x, y, z), normalised first."""
    return _quaternion_log(as_float(q))


# ----------------------------------------------------------------------------------------
# log


def _so3_log_tangent(R, w, dR):
    # At |w| = pi this is the one-sided limit: D -> 1/pi^2 (the (1+cos)/(2 theta sin) term -> 0).
    return _right_jacobian_inverse_apply(w, _vee_rt(R, dR))


@custom_jvp_with(_so3_log_tangent)
def _so3_log(R):
    return _quaternion_log_value(_quaternion_from_rotation(R))


@trailing_shapes((3, 3))
def so3_log(R: jnp.ndarray) -> jnp.ndarray:
    """Axis-angle w[...,3] (|w| <= pi, radians) of rotation matrix R[...,3,3].

    Computed through the quaternion (Shepperd + atan2), accurate at every angle. At exactly
    pi either of the two valid vectors may be returned; the derivative is the one-sided limit
    ``Jr(w)^-1`` for that vector.
    """
    return _so3_log(as_float(R))


@trailing_shapes((4,), (3,))
def so3_apply_quaternion(q: jnp.ndarray, p: jnp.ndarray) -> jnp.ndarray:
    """Rotate points p[...,3] by unit quaternion q[...,4] (w, x, y, z)."""
    u = q[..., 1:]
    uv = cross(u, p)
    return p + 2.0 * (q[..., :1] * uv + cross(u, uv))


@register_lie_group(matrix_dim=3, parameters_dim=4, tangent_dim=3, space_dim=3)
class SO3(SOBase):
    """3D rotations, parameters ``wxyz[...,4]`` (unit quaternion)."""

    wxyz: jax.Array

    @classmethod
    def _identity_parameters(cls):
        return (1.0, 0.0, 0.0, 0.0)

    @classmethod
    def exp(cls, tangent) -> "SO3":
        check_trailing(tangent, (3,), "SO3.exp", "tangent")
        return cls(quaternion_exp(tangent))

    def log(self) -> jax.Array:
        return quaternion_log(self.wxyz)

    @classmethod
    def from_matrix(cls, matrix) -> "SO3":
        check_trailing(matrix, (3, 3), "SO3.from_matrix", "matrix")
        return cls(quaternion_from_matrix(matrix))

    def as_matrix(self) -> jax.Array:
        return matrix_from_quaternion(self.wxyz)

    @classmethod
    def _about_axis(cls, theta, axis: int) -> "SO3":
        theta = as_float(theta)
        zero = jnp.zeros_like(theta)
        return cls.exp(jnp.stack([theta if i == axis else zero for i in range(3)], axis=-1))

    @classmethod
    def from_x_radians(cls, theta: hints.Scalar) -> "SO3":
        """Rotation by ``theta[...]`` radians about the x axis."""
        return cls._about_axis(theta, 0)

    @classmethod
    def from_y_radians(cls, theta: hints.Scalar) -> "SO3":
        """Rotation by ``theta[...]`` radians about the y axis."""
        return cls._about_axis(theta, 1)

    @classmethod
    def from_z_radians(cls, theta: hints.Scalar) -> "SO3":
        """Rotation by ``theta[...]`` radians about the z axis."""
        return cls._about_axis(theta, 2)

    @classmethod
    def from_rpy_radians(cls, roll: hints.Scalar, pitch: hints.Scalar, yaw: hints.Scalar) -> "SO3":
        """``Rz(yaw) Ry(pitch) Rx(roll)`` (ZYX convention: roll applied first)."""
        return cls.from_z_radians(yaw) @ cls.from_y_radians(pitch) @ cls.from_x_radians(roll)

    def as_rpy_radians(self) -> hints.RollPitchYaw:
        """Euler angles of ``from_rpy_radians``; pitch in [-pi/2, pi/2]."""
        return hints.RollPitchYaw(
            roll=self.compute_roll_radians(), pitch=self.compute_pitch_radians(), yaw=self.compute_yaw_radians()
        )

    def compute_roll_radians(self) -> jax.Array:
        """Roll [...] (radians) of ``as_rpy_radians``."""
        w, x, y, z = (self.wxyz[..., i] for i in range(4))
        return jnp.arctan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))

    def compute_pitch_radians(self) -> jax.Array:
        """Pitch [...] in [-pi/2, pi/2] (radians) of ``as_rpy_radians``."""
        w, x, y, z = (self.wxyz[..., i] for i in range(4))
        # Rounding can push |sin(pitch)| past 1 near gimbal lock; clip instead of returning NaN.
        return jnp.arcsin(jnp.clip(2.0 * (w * y - z * x), -1.0, 1.0))

    def compute_yaw_radians(self) -> jax.Array:
        """Yaw [...] (radians) of ``as_rpy_radians``."""
        w, x, y, z = (self.wxyz[..., i] for i in range(4))
        return jnp.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))

    @classmethod
    def from_quaternion_xyzw(cls, xyzw: hints.Array) -> "SO3":
        """Rotation of an (x, y, z, w) quaternion [..., 4] (the field ``wxyz`` is w first)."""
        return cls(jnp.roll(jnp.asarray(xyzw), shift=1, axis=-1))

    def as_quaternion_xyzw(self) -> jax.Array:
        """The quaternion [..., 4] in (x, y, z, w) order."""
        return jnp.roll(self.wxyz, shift=-1, axis=-1)

    def multiply(self, other: "SO3") -> "SO3":
        return SO3(quaternion_multiply(self.wxyz, other.wxyz))

    def inverse(self) -> "SO3":
        return SO3(quaternion_conjugate(self.wxyz))

    def apply(self, target) -> jax.Array:
        check_trailing(target, (3,), "SO3.apply", "target")
        return so3_apply_quaternion(self.wxyz, jnp.asarray(target))

    def adjoint(self) -> jax.Array:
        return self.as_matrix()

    @classmethod
    def adjoint_of_matrix(cls, matrix) -> jax.Array:
        return as_float(matrix)

    def normalize(self) -> "SO3":
        return SO3(self.wxyz / jnp.linalg.norm(self.wxyz, axis=-1, keepdims=True))

    right_jacobian = staticmethod(so3_right_jacobian)
    right_jacobian_inverse = staticmethod(so3_right_jacobian_inverse)

    def rplus_jacobian_parameters_wrt_delta(self) -> jax.Array:
        # d(q * (1, d/2)) / dd at d = 0: half of q's left-multiplication matrix, columns x, y, z.
        w, x, y, z = (self.wxyz[..., i] for i in range(4))
        rows = [[-x, -y, -z], [w, -z, y], [z, w, -x], [-y, x, w]]
        return 0.5 * jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)

    @classmethod
    def sample_uniform(cls, key, batch_axes: Tuple[int, ...] = (), dtype=None) -> "SO3":
        # A normal 4-vector has a uniformly distributed direction: uniform rotations.
        q = jax.random.normal(key, tuple(batch_axes) + (4,), resolve_dtype(dtype))
        return cls(q / jnp.linalg.norm(q, axis=-1, keepdims=True))
