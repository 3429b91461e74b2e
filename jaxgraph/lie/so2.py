"""SO(2): exponential and logarithm of planar rotations, and the group class ``SO2``.

Tangent ``theta[..., 1]`` (radians), matrices ``R[..., 2, 2]``. ``so2_log`` returns the
angle in (-pi, pi]; its derivative treats the input as a rotation (``dR`` projected on
the tangent, like SO(3)). ``SO2`` is jaxlie's class: parameters ``unit_complex[..., 2] =
(cos, sin)``.
"""

from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp

from . import hints
from ._base import SOBase, resolve_dtype
from ._ops import as_float, check_trailing, custom_jvp_with, matmul, trailing_shapes
from .utils import register_lie_group

__all__ = ["so2_exp", "so2_log", "SO2"]


def _rotation(c, s):
    return jnp.stack([jnp.stack([c, -s], axis=-1), jnp.stack([s, c], axis=-1)], axis=-2)


def _hat2(theta):
    zero = jnp.zeros_like(theta)
    return _rotation(zero, theta)  # [[0, -theta], [theta, 0]]


@custom_jvp_with(lambda theta, R, d: matmul(R, _hat2(d[..., 0])))
def _so2_exp(theta):
    return _rotation(jnp.cos(theta[..., 0]), jnp.sin(theta[..., 0]))


@trailing_shapes((1,))
def so2_exp(theta: jnp.ndarray) -> jnp.ndarray:
    """Rotation matrix R[...,2,2] of angle theta[...,1] (radians)."""
    return _so2_exp(as_float(theta))


def _tangent(R, dR):
    m = matmul(jnp.swapaxes(R, -1, -2), dR)
    return 0.5 * (m[..., 1, 0] - m[..., 0, 1])


@custom_jvp_with(lambda R, theta, dR: _tangent(R, dR)[..., None])
def _so2_log(R):
    return jnp.arctan2(R[..., 1, 0] - R[..., 0, 1], R[..., 0, 0] + R[..., 1, 1])[..., None]


@trailing_shapes((2, 2))
def so2_log(R: jnp.ndarray) -> jnp.ndarray:
    """Angle theta[...,1] in (-pi, pi] of rotation matrix R[...,2,2]."""
    return _so2_log(as_float(R))


@register_lie_group(matrix_dim=2, parameters_dim=2, tangent_dim=1, space_dim=2)
class SO2(SOBase):
    """Planar rotations, parameters ``unit_complex[...,2] = (cos, sin)``."""

    unit_complex: jax.Array

    @classmethod
    def _identity_parameters(cls):
        return (1.0, 0.0)

    @classmethod
    def from_radians(cls, theta: hints.Scalar) -> "SO2":
        """Rotation by angle ``theta[...]`` (radians; batch axes are theta's)."""
        theta = as_float(theta)
        return cls(jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1))

    def as_radians(self) -> jax.Array:
        """Angle [...] in (-pi, pi], the parameters' dtype."""
        return self.log()[..., 0]

    @classmethod
    def exp(cls, tangent) -> "SO2":
        check_trailing(tangent, (1,), "SO2.exp", "tangent")
        return cls.from_radians(as_float(tangent)[..., 0])

    def log(self) -> jax.Array:
        return so2_log(self.as_matrix())

    @classmethod
    def from_matrix(cls, matrix) -> "SO2":
        check_trailing(matrix, (2, 2), "SO2.from_matrix", "matrix")
        return cls(as_float(matrix)[..., :, 0])

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
        check_trailing(target, (2,), "SO2.apply", "target")
        target = jnp.asarray(target)
        c, s = self.unit_complex[..., 0], self.unit_complex[..., 1]
        x, y = target[..., 0], target[..., 1]
        return jnp.stack([c * x - s * y, s * x + c * y], axis=-1)

    def adjoint(self) -> jax.Array:
        return jnp.ones(self.get_batch_axes() + (1, 1), dtype=self.unit_complex.dtype)

    @classmethod
    def adjoint_of_matrix(cls, matrix) -> jax.Array:
        matrix = as_float(matrix)
        return jnp.ones(matrix.shape[:-2] + (1, 1), dtype=matrix.dtype)

    def normalize(self) -> "SO2":
        return SO2(self.unit_complex / jnp.linalg.norm(self.unit_complex, axis=-1, keepdims=True))

    @classmethod
    def right_jacobian(cls, tangent) -> jax.Array:
        tangent = as_float(tangent)
        return jnp.ones(tangent.shape[:-1] + (1, 1), tangent.dtype)

    right_jacobian_inverse = right_jacobian

    def rplus_jacobian_parameters_wrt_delta(self) -> jax.Array:
        c, s = self.unit_complex[..., 0], self.unit_complex[..., 1]
        return jnp.stack([-s, c], axis=-1)[..., None]

    @classmethod
    def sample_uniform(cls, key, batch_axes: Tuple[int, ...] = (), dtype=None) -> "SO2":
        return cls.from_radians(jax.random.uniform(key, tuple(batch_axes), resolve_dtype(dtype), -jnp.pi, jnp.pi))
