"""SE(2): exponential and logarithm, Jacobians and adjoint, and the group class ``SE2``.

Tangent ``xi[..., 3] = (x, y, theta)`` (translation part first, jaxlie's order),
matrices ``T[..., 3, 3]``. Right Jacobian convention ``Exp(xi + d) ~= Exp(xi) Exp(Jr d)``.
``SE2`` is jaxlie's class: parameters ``unit_complex_xy[..., 4] = (cos, sin, x, y)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _series, hints
from ._base import SEBase
from ._ops import as_float, check_trailing, matvec, trailing_shapes
from .so2 import SO2, so2_exp, so2_log
from .utils import register_lie_group

__all__ = [
    "se2_exp",
    "se2_log",
    "se2_inverse",
    "se2_adjoint",
    "se2_left_jacobian",
    "se2_right_jacobian",
    "se2_left_jacobian_inverse",
    "se2_right_jacobian_inverse",
    "SE2",
]


def _coefficients(theta):
    t = theta * theta
    a = _series.sin_over_theta(t)
    b = _series.one_minus_cos_over_theta2(t)
    c = theta * _series.theta_minus_sin_over_theta3(t)  # (theta - sin) / theta^2
    alpha = 1.0 - t * _series.inverse_jacobian_coefficient(t)  # (theta/2) cot(theta/2)
    return a, b, c, alpha


def _matrix3(rows):
    return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


@trailing_shapes((3,))
def se2_exp(xi: jnp.ndarray) -> jnp.ndarray:
    """Homogeneous T[...,3,3] = Exp(xi) of xi[...,3] = (x, y, theta)."""
    xi = as_float(xi)
    x, y, theta = xi[..., 0], xi[..., 1], xi[..., 2]
    a, b, _, _ = _coefficients(theta)
    tb = theta * b
    R = so2_exp(xi[..., 2:])
    tx = a * x - tb * y
    ty = tb * x + a * y
    zero, one = jnp.zeros_like(x), jnp.ones_like(x)
    return _matrix3([[R[..., 0, 0], R[..., 0, 1], tx], [R[..., 1, 0], R[..., 1, 1], ty], [zero, zero, one]])


@trailing_shapes((3, 3))
def se2_log(T: jnp.ndarray) -> jnp.ndarray:
    """xi[...,3] = (x, y, theta) = Log(T), with the coupled translation V(theta)^-1 t."""
    T = as_float(T)
    theta = so2_log(T[..., :2, :2])[..., 0]
    _, _, _, alpha = _coefficients(theta)
    tx, ty = T[..., 0, 2], T[..., 1, 2]
    half = 0.5 * theta
    return jnp.stack([alpha * tx + half * ty, -half * tx + alpha * ty, theta], axis=-1)


@trailing_shapes((3, 3))
def se2_inverse(T: jnp.ndarray) -> jnp.ndarray:
    """Inverse of homogeneous T[...,3,3]."""
    T = as_float(T)
    Rt = jnp.swapaxes(T[..., :2, :2], -1, -2)
    t = -matvec(Rt, T[..., :2, 2])
    zero, one = jnp.zeros_like(t[..., 0]), jnp.ones_like(t[..., 0])
    return _matrix3([[Rt[..., 0, 0], Rt[..., 0, 1], t[..., 0]], [Rt[..., 1, 0], Rt[..., 1, 1], t[..., 1]], [zero, zero, one]])


@trailing_shapes((3, 3))
def se2_adjoint(T: jnp.ndarray) -> jnp.ndarray:
    """Adjoint [...,3,3] of T[...,3,3] for (x, y, theta) tangents: [[R, (ty, -tx)], [0, 1]]."""
    T = as_float(T)
    zero, one = jnp.zeros_like(T[..., 0, 0]), jnp.ones_like(T[..., 0, 0])
    return _matrix3(
        [[T[..., 0, 0], T[..., 0, 1], T[..., 1, 2]], [T[..., 1, 0], T[..., 1, 1], -T[..., 0, 2]], [zero, zero, one]]
    )


def _jacobian(xi, sign):
    xi = as_float(xi)
    r1, r2, theta = xi[..., 0], xi[..., 1], sign * xi[..., 2]
    a, b, c, _ = _coefficients(theta)
    r1, r2 = sign * r1, sign * r2
    zero, one = jnp.zeros_like(a), jnp.ones_like(a)
    tb = theta * b
    # Left Jacobian of (r1, r2, theta); the right one is the left one at -xi.
    return _matrix3([[a, -tb, r1 * c + r2 * b], [tb, a, -r1 * b + r2 * c], [zero, zero, one]])


def _jacobian_inverse(xi, sign):
    xi = as_float(xi)
    r1, r2, theta = sign * xi[..., 0], sign * xi[..., 1], sign * xi[..., 2]
    _, b, c, alpha = _coefficients(theta)
    half = 0.5 * theta
    zero, one = jnp.zeros_like(b), jnp.ones_like(b)
    m1, m2 = r1 * c + r2 * b, -r1 * b + r2 * c
    # [[M, m], [0, 1]]^-1 = [[M^-1, -M^-1 m], [0, 1]], M^-1 = [[alpha, half], [-half, alpha]].
    return _matrix3(
        [
            [alpha, half, -(alpha * m1 + half * m2)],
            [-half, alpha, -(-half * m1 + alpha * m2)],
            [zero, zero, one],
        ]
    )


@trailing_shapes((3,))
def se2_left_jacobian(xi: jnp.ndarray) -> jnp.ndarray:
    """Left Jacobian [...,3,3] of SE(2)'s exponential."""
    return _jacobian(xi, 1.0)


@trailing_shapes((3,))
def se2_right_jacobian(xi: jnp.ndarray) -> jnp.ndarray:
    """Right Jacobian [...,3,3] = Jl(-xi)."""
    return _jacobian(xi, -1.0)


@trailing_shapes((3,))
def se2_left_jacobian_inverse(xi: jnp.ndarray) -> jnp.ndarray:
    """Jl(xi)^-1 [...,3,3] in closed form."""
    return _jacobian_inverse(xi, 1.0)


@trailing_shapes((3,))
def se2_right_jacobian_inverse(xi: jnp.ndarray) -> jnp.ndarray:
    """Jr(xi)^-1 [...,3,3] = Jl(-xi)^-1."""
    return _jacobian_inverse(xi, -1.0)


@register_lie_group(matrix_dim=3, parameters_dim=4, tangent_dim=3, space_dim=2)
class SE2(SEBase[SO2]):
    """Planar rigid transforms, parameters ``unit_complex_xy[...,4] = (cos, sin, x, y)``;
    tangents ``(x, y, theta)``."""

    unit_complex_xy: jax.Array
    _rotation_type = SO2

    @classmethod
    def _identity_parameters(cls):
        return (1.0, 0.0, 0.0, 0.0)

    @classmethod
    def from_xy_theta(cls, x: hints.Scalar, y: hints.Scalar, theta: hints.Scalar) -> "SE2":
        """Transform of translation ``(x, y)`` and angle ``theta`` (radians); the three broadcast."""
        x, y, theta = jnp.broadcast_arrays(as_float(x), as_float(y), as_float(theta))
        return cls.from_rotation_and_translation(SO2.from_radians(theta), jnp.stack([x, y], axis=-1))

    @classmethod
    def exp(cls, tangent) -> "SE2":
        check_trailing(tangent, (3,), "SE2.exp", "tangent")
        return cls.from_matrix(se2_exp(tangent))

    def log(self) -> jax.Array:
        return se2_log(self.as_matrix())

    def adjoint(self) -> jax.Array:
        return se2_adjoint(self.as_matrix())

    @classmethod
    def adjoint_of_matrix(cls, matrix) -> jax.Array:
        return se2_adjoint(matrix)

    right_jacobian = staticmethod(se2_right_jacobian)
    right_jacobian_inverse = staticmethod(se2_right_jacobian_inverse)
