"""SE(3): exponential and logarithm maps, Jacobians and adjoint, and the group class ``SE3``.

Tangent vectors ``xi[..., 6] = (v, w)``: translation part first, then rotation (jaxlie's
order). Homogeneous matrices ``T[..., 4, 4]``. Right Jacobian convention:
``Exp(xi + d) ~= Exp(xi) Exp(Jr(xi) d)``.

The maps are compositions of the SO(3) ``custom_jvp`` maps with coefficients that are
smooth at every angle, so their derivatives of every order are exact and finite.

``SE3`` is jaxlie's class: parameters ``wxyz_xyz[..., 7]``, the rotation's unit quaternion
then the translation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _series
from ._base import SEBase
from ._ops import as_float, check_trailing, cross, dot, hat3, matmul, matvec, trailing_shapes, vee3
from .so3 import SO3, hat3_squared, so3_exp, so3_left_jacobian, so3_log, so3_right_jacobian_inverse
from .utils import register_lie_group

__all__ = [
    "se3_exp",
    "se3_log",
    "se3_hat",
    "se3_vee",
    "se3_inverse",
    "se3_adjoint",
    "se3_left_jacobian",
    "se3_right_jacobian",
    "se3_left_jacobian_inverse",
    "se3_right_jacobian_inverse",
    "SE3",
]


def _split(xi):
    return xi[..., :3], xi[..., 3:]


def _homogeneous(R, t):
    top = jnp.concatenate([R, t[..., :, None]], axis=-1)
    bottom = jnp.broadcast_to(jnp.asarray([0.0, 0.0, 0.0, 1.0], dtype=R.dtype), top.shape[:-2] + (1, 4))
    return jnp.concatenate([top, bottom], axis=-2)


def _left_jacobian_apply(w, v):
    t = dot(w, w)
    b = _series.one_minus_cos_over_theta2(t)[..., None]
    c = _series.theta_minus_sin_over_theta3(t)[..., None]
    wv = cross(w, v)
    return v + b * wv + c * cross(w, wv)


def _left_jacobian_inverse_apply(w, v):
    t = dot(w, w)
    d = _series.inverse_jacobian_coefficient(t)[..., None]
    wv = cross(w, v)
    return v - 0.5 * wv + d * cross(w, wv)


@trailing_shapes((6,))
def se3_exp(xi: jnp.ndarray) -> jnp.ndarray:
    """Homogeneous T[...,4,4] = Exp(xi) of xi[...,6] = (v, w) (translation units, radians)."""
    xi = as_float(xi)
    v, w = _split(xi)
    return _homogeneous(so3_exp(w), _left_jacobian_apply(w, v))


@trailing_shapes((4, 4))
def se3_log(T: jnp.ndarray) -> jnp.ndarray:
    """xi[...,6] = (v, w) = Log(T) of T[...,4,4], with the coupled translation v = Jl(w)^-1 t."""
    T = as_float(T)
    w = so3_log(T[..., :3, :3])
    v = _left_jacobian_inverse_apply(w, T[..., :3, 3])
    return jnp.concatenate([v, w], axis=-1)


@trailing_shapes((6,))
def se3_hat(xi: jnp.ndarray) -> jnp.ndarray:
    """The 4x4 Lie-algebra matrix of xi[...,6] = (v, w)."""
    xi = as_float(xi)
    v, w = _split(xi)
    top = jnp.concatenate([hat3(w), v[..., :, None]], axis=-1)
    return jnp.concatenate([top, jnp.zeros(top.shape[:-2] + (1, 4), dtype=xi.dtype)], axis=-2)


@trailing_shapes((4, 4))
def se3_vee(X: jnp.ndarray) -> jnp.ndarray:
    """xi[...,6] of a 4x4 Lie-algebra matrix (the rotation block's skew part is used)."""
    return jnp.concatenate([X[..., :3, 3], vee3(X[..., :3, :3])], axis=-1)


@trailing_shapes((4, 4))
def se3_inverse(T: jnp.ndarray) -> jnp.ndarray:
    """Inverse of homogeneous T[...,4,4] (R^T, -R^T t)."""
    T = as_float(T)
    Rt = jnp.swapaxes(T[..., :3, :3], -1, -2)
    return _homogeneous(Rt, -matvec(Rt, T[..., :3, 3]))


@trailing_shapes((4, 4))
def se3_adjoint(T: jnp.ndarray) -> jnp.ndarray:
    """Adjoint [...,6,6] of T[...,4,4] for (v, w) tangents: [[R, hat(t) R], [0, R]]."""
    T = as_float(T)
    R, t = T[..., :3, :3], T[..., :3, 3]
    # hat(t) R column by column, t x R[:, j]: elementwise, no batched dot (see so3.hat3_squared)
    tR = jnp.swapaxes(cross(t[..., None, :], jnp.swapaxes(R, -1, -2)), -1, -2)
    return _block_upper(R, tR)


def _q_left(v, w):
    """Barfoot's Q(rho, phi): the coupling block of SE(3)'s left Jacobian,

    ``Q = V/2 + c1 (WV + VW + WVW) + c2 (W^2 V + V W^2 - 3 WVW) + c3 (WVW W + W WVW)``
    (``V = hat(v)``, ``W = hat(w)``), with the products written as outer products:
    ``hat(a) hat(b) = b a^T - (a.b) I`` and ``W w = 0`` give ``WVW = -s W``,
    ``W^2 V = w u^T - t V``, ``V W^2 = -u w^T - t V`` (``s = w.v``, ``t = w.w``,
    ``u = w x v``). Elementwise, so XLA fuses it instead of compiling seven batched dots."""
    t, s = dot(w, w), dot(w, v)
    c1 = _series.theta_minus_sin_over_theta3(t)[..., None, None]
    c2 = _series.se3_q_c2(t)[..., None, None]
    c3 = _series.se3_q_c3(t)[..., None, None]
    V, W = hat3(v), hat3(w)
    u = cross(w, v)
    eye = jnp.eye(3, dtype=w.dtype)
    ss, tt = s[..., None, None], t[..., None, None]
    vw = v[..., :, None] * w[..., None, :]  # v w^T
    wu = w[..., :, None] * u[..., None, :]  # w u^T
    return (0.5 * V + c1 * (vw + jnp.swapaxes(vw, -1, -2) - 2.0 * ss * eye - ss * W)
            + c2 * (wu - jnp.swapaxes(wu, -1, -2) - 2.0 * tt * V + 3.0 * ss * W)
            - 2.0 * c3 * ss * hat3_squared(w, t))


def _block_upper(A, Q):
    zero = jnp.zeros_like(A)
    return jnp.concatenate(
        [jnp.concatenate([A, Q], axis=-1), jnp.concatenate([zero, A], axis=-1)], axis=-2
    )


@trailing_shapes((6,))
def se3_left_jacobian(xi: jnp.ndarray) -> jnp.ndarray:
    """Left Jacobian [...,6,6] of SE(3)'s exponential: [[Jl(w), Q(v,w)], [0, Jl(w)]]."""
    xi = as_float(xi)
    v, w = _split(xi)
    return _block_upper(so3_left_jacobian(w), _q_left(v, w))


@trailing_shapes((6,))
def se3_right_jacobian(xi: jnp.ndarray) -> jnp.ndarray:
    """Right Jacobian [...,6,6]: Jr(xi) = Jl(-xi)."""
    return se3_left_jacobian(-as_float(xi))


def _block_upper_inverse(A_inv, Q):
    return _block_upper(A_inv, -matmul(matmul(A_inv, Q), A_inv))


@trailing_shapes((6,))
def se3_left_jacobian_inverse(xi: jnp.ndarray) -> jnp.ndarray:
    """Jl(xi)^-1 [...,6,6], in closed form (block triangular)."""
    xi = as_float(xi)
    v, w = _split(xi)
    return _block_upper_inverse(so3_right_jacobian_inverse(-w), _q_left(v, w))


@trailing_shapes((6,))
def se3_right_jacobian_inverse(xi: jnp.ndarray) -> jnp.ndarray:
    """Jr(xi)^-1 [...,6,6] = Jl(-xi)^-1."""
    return se3_left_jacobian_inverse(-as_float(xi))


@register_lie_group(matrix_dim=4, parameters_dim=7, tangent_dim=6, space_dim=3)
class SE3(SEBase[SO3]):
    """3D rigid transforms, parameters ``wxyz_xyz[...,7]`` (quaternion, then translation);
    tangents ``(v, w)``, translation part first."""

    wxyz_xyz: jax.Array
    _rotation_type = SO3

    @classmethod
    def _identity_parameters(cls):
        return (1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)

    @classmethod
    def exp(cls, tangent) -> "SE3":
        check_trailing(tangent, (6,), "SE3.exp", "tangent")
        tangent = as_float(tangent)
        v, w = _split(tangent)
        return cls.from_rotation_and_translation(SO3.exp(w), _left_jacobian_apply(w, v))

    def log(self) -> jax.Array:
        w = self.rotation().log()
        return jnp.concatenate([_left_jacobian_inverse_apply(w, self.translation()), w], axis=-1)

    def adjoint(self) -> jax.Array:
        return se3_adjoint(self.as_matrix())

    @classmethod
    def adjoint_of_matrix(cls, matrix) -> jax.Array:
        return se3_adjoint(matrix)

    right_jacobian = staticmethod(se3_right_jacobian)
    right_jacobian_inverse = staticmethod(se3_right_jacobian_inverse)
