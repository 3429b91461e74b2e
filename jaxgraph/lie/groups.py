"""Group classes SO2, SE2, SO3, SE3: drop-in replacements for jaxlie's, built on our maps.

Each class is a frozen dataclass pytree holding one parameter array with leading batch axes,
in jaxlie's layout and under jaxlie's field names: ``SO2.unit_complex[...,2]`` (cos, sin),
``SE2.unit_complex_xy[...,4]``, ``SO3.wxyz[...,4]``, ``SE3.wxyz_xyz[...,7]``.
``to_jaxlie()`` / ``from_jaxlie()`` convert.
"""

from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp

from . import hints
from . import se2 as _se2
from . import se3 as _se3
from . import so2 as _so2
from . import so3 as _so3
from ._base import MatrixLieGroup, SEBase, SOBase, resolve_dtype
from ._ops import quaternion_conjugate, quaternion_multiply
from .so3 import _as_float
from .utils import register_lie_group


@register_lie_group(matrix_dim=2, parameters_dim=2, tangent_dim=1, space_dim=2)
class SO2(SOBase):
    """Planar rotations, parameters ``unit_complex[...,2] = (cos, sin)``."""

    unit_complex: jax.Array

    @classmethod
    def _identity_parameters(cls):
        return (1.0, 0.0)

    @classmethod
    def from_radians(cls, theta: hints.Scalar) -> "SO2":
        theta = _as_float(theta)
        return cls(jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1))

    def as_radians(self) -> jax.Array:
        return self.log()[..., 0]

    @classmethod
    def exp(cls, tangent) -> "SO2":
        return cls.from_radians(_as_float(tangent)[..., 0])

    def log(self) -> jax.Array:
        return _so2.so2_log(self.as_matrix())

    @classmethod
    def from_matrix(cls, matrix) -> "SO2":
        return cls(_as_float(matrix)[..., :, 0])

    def as_matrix(self) -> jax.Array:
        c, s = self.unit_complex[..., 0], self.unit_complex[..., 1]
        return jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2)

    def multiply(self, other: "SO2") -> "SO2":
        a, b = self.unit_complex, other.unit_complex
        return SO2(
            jnp.stack([a[..., 0] * b[..., 0] - a[..., 1] * b[..., 1], a[..., 0] * b[..., 1] + a[..., 1] * b[..., 0]], -1)
        )

    def inverse(self) -> "SO2":
        return SO2(self.unit_complex * jnp.asarray([1.0, -1.0], dtype=self.unit_complex.dtype))

    def apply(self, target) -> jax.Array:
        target = jnp.asarray(target)
        c, s = self.unit_complex[..., 0], self.unit_complex[..., 1]
        x, y = target[..., 0], target[..., 1]
        return jnp.stack([c * x - s * y, s * x + c * y], axis=-1)

    def adjoint(self) -> jax.Array:
        return jnp.ones(self.get_batch_axes() + (1, 1), dtype=self.unit_complex.dtype)

    def normalize(self) -> "SO2":
        return SO2(self.unit_complex / jnp.linalg.norm(self.unit_complex, axis=-1, keepdims=True))

    @classmethod
    def right_jacobian(cls, tangent) -> jax.Array:
        tangent = _as_float(tangent)
        return jnp.ones(tangent.shape[:-1] + (1, 1), tangent.dtype)

    right_jacobian_inverse = right_jacobian

    def rplus_jacobian_parameters_wrt_delta(self) -> jax.Array:
        c, s = self.unit_complex[..., 0], self.unit_complex[..., 1]
        return jnp.stack([-s, c], axis=-1)[..., None]

    @classmethod
    def sample_uniform(cls, key, batch_axes: Tuple[int, ...] = (), dtype=None) -> "SO2":
        return cls.from_radians(jax.random.uniform(key, tuple(batch_axes), resolve_dtype(dtype), -jnp.pi, jnp.pi))


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
        x, y, theta = jnp.broadcast_arrays(_as_float(x), _as_float(y), _as_float(theta))
        return cls.from_rotation_and_translation(SO2.from_radians(theta), jnp.stack([x, y], axis=-1))

    @classmethod
    def exp(cls, tangent) -> "SE2":
        return cls.from_matrix(_se2.se2_exp(tangent))

    def log(self) -> jax.Array:
        return _se2.se2_log(self.as_matrix())

    def adjoint(self) -> jax.Array:
        return _se2.se2_adjoint(self.as_matrix())

    right_jacobian = staticmethod(_se2.se2_right_jacobian)
    right_jacobian_inverse = staticmethod(_se2.se2_right_jacobian_inverse)


@register_lie_group(matrix_dim=3, parameters_dim=4, tangent_dim=3, space_dim=3)
class SO3(SOBase):
    """3D rotations, parameters ``wxyz[...,4]`` (unit quaternion)."""

    wxyz: jax.Array

    @classmethod
    def _identity_parameters(cls):
        return (1.0, 0.0, 0.0, 0.0)

    @classmethod
    def exp(cls, tangent) -> "SO3":
        return cls(_so3.quaternion_exp(tangent))

    def log(self) -> jax.Array:
        return _so3.quaternion_log(self.wxyz)

    @classmethod
    def from_matrix(cls, matrix) -> "SO3":
        return cls(_so3.quaternion_from_matrix(matrix))

    def as_matrix(self) -> jax.Array:
        return _so3.matrix_from_quaternion(self.wxyz)

    @classmethod
    def _about_axis(cls, theta, axis: int) -> "SO3":
        theta = _as_float(theta)
        zero = jnp.zeros_like(theta)
        return cls.exp(jnp.stack([theta if i == axis else zero for i in range(3)], axis=-1))

    @classmethod
    def from_x_radians(cls, theta: hints.Scalar) -> "SO3":
        return cls._about_axis(theta, 0)

    @classmethod
    def from_y_radians(cls, theta: hints.Scalar) -> "SO3":
        return cls._about_axis(theta, 1)

    @classmethod
    def from_z_radians(cls, theta: hints.Scalar) -> "SO3":
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
        w, x, y, z = (self.wxyz[..., i] for i in range(4))
        return jnp.arctan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))

    def compute_pitch_radians(self) -> jax.Array:
        w, x, y, z = (self.wxyz[..., i] for i in range(4))
        # Rounding can push |sin(pitch)| past 1 near gimbal lock; clip instead of returning NaN.
        return jnp.arcsin(jnp.clip(2.0 * (w * y - z * x), -1.0, 1.0))

    def compute_yaw_radians(self) -> jax.Array:
        w, x, y, z = (self.wxyz[..., i] for i in range(4))
        return jnp.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))

    @classmethod
    def from_quaternion_xyzw(cls, xyzw: hints.Array) -> "SO3":
        """Rotation of an (x, y, z, w) quaternion [..., 4] (the field ``wxyz`` is w first)."""
        return cls(jnp.roll(jnp.asarray(xyzw), shift=1, axis=-1))

    def as_quaternion_xyzw(self) -> jax.Array:
        return jnp.roll(self.wxyz, shift=-1, axis=-1)

    def multiply(self, other: "SO3") -> "SO3":
        return SO3(quaternion_multiply(self.wxyz, other.wxyz))

    def inverse(self) -> "SO3":
        return SO3(quaternion_conjugate(self.wxyz))

    def apply(self, target) -> jax.Array:
        return _so3.so3_apply_quaternion(self.wxyz, jnp.asarray(target))

    def adjoint(self) -> jax.Array:
        return self.as_matrix()

    def normalize(self) -> "SO3":
        return SO3(self.wxyz / jnp.linalg.norm(self.wxyz, axis=-1, keepdims=True))

    right_jacobian = staticmethod(_so3.so3_right_jacobian)
    right_jacobian_inverse = staticmethod(_so3.so3_right_jacobian_inverse)

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
        tangent = _as_float(tangent)
        v, w = tangent[..., :3], tangent[..., 3:]
        return cls.from_rotation_and_translation(SO3.exp(w), _se3._left_jacobian_apply(w, v))

    def log(self) -> jax.Array:
        w = self.rotation().log()
        return jnp.concatenate([_se3._left_jacobian_inverse_apply(w, self.translation()), w], axis=-1)

    def adjoint(self) -> jax.Array:
        return _se3.se3_adjoint(self.as_matrix())

    right_jacobian = staticmethod(_se3.se3_right_jacobian)
    right_jacobian_inverse = staticmethod(_se3.se3_right_jacobian_inverse)


__all__ = ["MatrixLieGroup", "SOBase", "SEBase", "SO2", "SE2", "SO3", "SE3"]
