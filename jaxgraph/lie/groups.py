"""Group classes SO2, SE2, SO3, SE3: drop-in replacements for jaxlie's, built on our maps.

Each class is a pytree holding one parameter array with leading batch axes, in jaxlie's
layout: ``SO2.unit_complex[...,2]`` (cos, sin), ``SE2.unit_complex_xy[...,4]``,
``SO3.wxyz[...,4]``, ``SE3.wxyz_xyz[...,7]``. ``to_jaxlie()`` / ``from_jaxlie()`` convert.
"""

from __future__ import annotations

from typing import ClassVar, Tuple, TypeVar, Union, overload

import jax
import jax.numpy as jnp

from . import se2 as _se2
from . import se3 as _se3
from . import so2 as _so2
from . import so3 as _so3
from ._ops import cross, quaternion_conjugate, quaternion_multiply

G = TypeVar("G", bound="MatrixLieGroup")


class MatrixLieGroup:
    """Shared behaviour; subclasses define the parameter layout and the maps."""

    matrix_dim: ClassVar[int]
    parameters_dim: ClassVar[int]
    tangent_dim: ClassVar[int]
    space_dim: ClassVar[int]
    _field: ClassVar[str]
    _jaxlie_name: ClassVar[str]

    def __init__(self, parameters: jnp.ndarray):
        object.__setattr__(self, self._field, parameters)

    def parameters(self) -> jnp.ndarray:
        """The parameter array [..., parameters_dim]."""
        return getattr(self, self._field)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._field}={self.parameters()!r})"

    def tree_flatten(self):
        return (self.parameters(),), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0])

    def get_batch_axes(self) -> Tuple[int, ...]:
        return tuple(self.parameters().shape[:-1])

    @overload
    def __matmul__(self: G, other: G) -> G: ...

    @overload
    def __matmul__(self, other: jnp.ndarray) -> jnp.ndarray: ...

    def __matmul__(self, other):
        if isinstance(other, MatrixLieGroup):
            return self.multiply(other)
        return self.apply(other)

    @classmethod
    def from_jaxlie(cls: type[G], other) -> G:
        """Convert a jaxlie group object of the same type."""
        return cls(jnp.asarray(other.parameters()))

    def to_jaxlie(self):
        """Convert to the jaxlie object with the same parameters."""
        import jaxlie

        return getattr(jaxlie, self._jaxlie_name)(self.parameters())

    @classmethod
    def identity(cls: type[G], batch_axes: Tuple[int, ...] = (), dtype=jnp.float32) -> G:
        """The identity element, broadcast to ``batch_axes``."""
        return cls(jnp.broadcast_to(cls._identity_parameters(dtype), tuple(batch_axes) + (cls.parameters_dim,)))

    def rplus(self: G, delta: jnp.ndarray) -> G:
        """self @ exp(delta): retraction with a right perturbation."""
        return self @ type(self).exp(delta)

    def rminus(self: G, other: G) -> jnp.ndarray:
        """log(self^-1 @ other): the tangent that takes self to other."""
        return (self.inverse() @ other).log()


def _register(cls):
    return jax.tree_util.register_pytree_node_class(cls)


@_register
class SO2(MatrixLieGroup):
    """Planar rotations, parameters ``unit_complex[...,2] = (cos, sin)``."""

    matrix_dim, parameters_dim, tangent_dim, space_dim = 2, 2, 1, 2
    _field, _jaxlie_name = "unit_complex", "SO2"
    unit_complex: jnp.ndarray

    @staticmethod
    def _identity_parameters(dtype):
        return jnp.asarray([1.0, 0.0], dtype=dtype)

    @classmethod
    def from_radians(cls, theta) -> "SO2":
        theta = jnp.asarray(theta)
        return cls(jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1))

    def as_radians(self) -> jnp.ndarray:
        return self.log()[..., 0]

    @classmethod
    def exp(cls, tangent) -> "SO2":
        R = _so2.so2_exp(tangent)
        return cls(R[..., :, 0])

    def log(self) -> jnp.ndarray:
        return _so2.so2_log(self.as_matrix())

    @classmethod
    def from_matrix(cls, matrix) -> "SO2":
        return cls(jnp.asarray(matrix)[..., :, 0])

    def as_matrix(self) -> jnp.ndarray:
        c, s = self.unit_complex[..., 0], self.unit_complex[..., 1]
        return jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2)

    def multiply(self, other: "SO2") -> "SO2":
        a, b = self.unit_complex, other.unit_complex
        return SO2(jnp.stack([a[..., 0] * b[..., 0] - a[..., 1] * b[..., 1], a[..., 0] * b[..., 1] + a[..., 1] * b[..., 0]], -1))

    def inverse(self) -> "SO2":
        return SO2(self.unit_complex * jnp.asarray([1.0, -1.0], dtype=self.unit_complex.dtype))

    def apply(self, target) -> jnp.ndarray:
        return jnp.einsum("...ij,...j->...i", self.as_matrix(), target)

    def adjoint(self) -> jnp.ndarray:
        return jnp.ones(self.get_batch_axes() + (1, 1), dtype=self.unit_complex.dtype)

    def normalize(self) -> "SO2":
        return SO2(self.unit_complex / jnp.linalg.norm(self.unit_complex, axis=-1, keepdims=True))

    @classmethod
    def sample_uniform(cls, key, batch_axes: Tuple[int, ...] = (), dtype=jnp.float32) -> "SO2":
        return cls.from_radians(jax.random.uniform(key, batch_axes, dtype, -jnp.pi, jnp.pi))


@_register
class SE2(MatrixLieGroup):
    """Planar rigid transforms, parameters ``unit_complex_xy[...,4] = (cos, sin, x, y)``."""

    matrix_dim, parameters_dim, tangent_dim, space_dim = 3, 4, 3, 2
    _field, _jaxlie_name = "unit_complex_xy", "SE2"
    unit_complex_xy: jnp.ndarray

    @staticmethod
    def _identity_parameters(dtype):
        return jnp.asarray([1.0, 0.0, 0.0, 0.0], dtype=dtype)

    @classmethod
    def from_xy_theta(cls, x, y, theta) -> "SE2":
        x, y, theta = jnp.asarray(x), jnp.asarray(y), jnp.asarray(theta)
        return cls(jnp.stack([jnp.cos(theta), jnp.sin(theta), x, y], axis=-1))

    @classmethod
    def from_rotation_and_translation(cls, rotation: SO2, translation) -> "SE2":
        return cls(jnp.concatenate([rotation.unit_complex, jnp.asarray(translation)], axis=-1))

    @classmethod
    def from_rotation(cls, rotation: SO2) -> "SE2":
        return cls.from_rotation_and_translation(rotation, jnp.zeros_like(rotation.unit_complex))

    @classmethod
    def from_translation(cls, translation) -> "SE2":
        translation = jnp.asarray(translation)
        return cls.from_rotation_and_translation(SO2.identity(translation.shape[:-1], translation.dtype), translation)

    def rotation(self) -> SO2:
        return SO2(self.unit_complex_xy[..., :2])

    def translation(self) -> jnp.ndarray:
        return self.unit_complex_xy[..., 2:]

    @classmethod
    def exp(cls, tangent) -> "SE2":
        return cls.from_matrix(_se2.se2_exp(tangent))

    def log(self) -> jnp.ndarray:
        return _se2.se2_log(self.as_matrix())

    @classmethod
    def from_matrix(cls, matrix) -> "SE2":
        matrix = jnp.asarray(matrix)
        return cls(jnp.concatenate([matrix[..., :2, 0], matrix[..., :2, 2]], axis=-1))

    def as_matrix(self) -> jnp.ndarray:
        R = self.rotation().as_matrix()
        top = jnp.concatenate([R, self.translation()[..., :, None]], axis=-1)
        bottom = jnp.broadcast_to(jnp.asarray([0.0, 0.0, 1.0], dtype=R.dtype), top.shape[:-2] + (1, 3))
        return jnp.concatenate([top, bottom], axis=-2)

    def multiply(self, other: "SE2") -> "SE2":
        return SE2.from_rotation_and_translation(
            self.rotation() @ other.rotation(), self.rotation() @ other.translation() + self.translation()
        )

    def inverse(self) -> "SE2":
        r_inv = self.rotation().inverse()
        return SE2.from_rotation_and_translation(r_inv, -(r_inv @ self.translation()))

    def apply(self, target) -> jnp.ndarray:
        return self.rotation() @ target + self.translation()

    def adjoint(self) -> jnp.ndarray:
        return _se2.se2_adjoint(self.as_matrix())

    def normalize(self) -> "SE2":
        return SE2.from_rotation_and_translation(self.rotation().normalize(), self.translation())

    @classmethod
    def sample_uniform(cls, key, batch_axes: Tuple[int, ...] = (), dtype=jnp.float32) -> "SE2":
        k1, k2 = jax.random.split(key)
        return cls.from_rotation_and_translation(
            SO2.sample_uniform(k1, batch_axes, dtype), jax.random.uniform(k2, tuple(batch_axes) + (2,), dtype, -1.0, 1.0)
        )


@_register
class SO3(MatrixLieGroup):
    """3D rotations, parameters ``wxyz[...,4]`` (unit quaternion)."""

    matrix_dim, parameters_dim, tangent_dim, space_dim = 3, 4, 3, 3
    _field, _jaxlie_name = "wxyz", "SO3"
    wxyz: jnp.ndarray

    @staticmethod
    def _identity_parameters(dtype):
        return jnp.asarray([1.0, 0.0, 0.0, 0.0], dtype=dtype)

    @classmethod
    def exp(cls, tangent) -> "SO3":
        return cls(_so3.quaternion_exp(tangent))

    def log(self) -> jnp.ndarray:
        return _so3.quaternion_log(self.wxyz)

    @classmethod
    def from_matrix(cls, matrix) -> "SO3":
        return cls(_so3.quaternion_from_matrix(matrix))

    def as_matrix(self) -> jnp.ndarray:
        return _so3.matrix_from_quaternion(self.wxyz)

    @classmethod
    def from_x_radians(cls, theta) -> "SO3":
        return cls.exp(jnp.stack([theta, jnp.zeros_like(theta), jnp.zeros_like(theta)], -1))

    @classmethod
    def from_y_radians(cls, theta) -> "SO3":
        return cls.exp(jnp.stack([jnp.zeros_like(theta), theta, jnp.zeros_like(theta)], -1))

    @classmethod
    def from_z_radians(cls, theta) -> "SO3":
        return cls.exp(jnp.stack([jnp.zeros_like(theta), jnp.zeros_like(theta), theta], -1))

    def multiply(self, other: "SO3") -> "SO3":
        return SO3(quaternion_multiply(self.wxyz, other.wxyz))

    def inverse(self) -> "SO3":
        return SO3(quaternion_conjugate(self.wxyz))

    def apply(self, target) -> jnp.ndarray:
        return _so3.so3_apply_quaternion(self.wxyz, jnp.asarray(target))

    def adjoint(self) -> jnp.ndarray:
        return self.as_matrix()

    def normalize(self) -> "SO3":
        return SO3(self.wxyz / jnp.linalg.norm(self.wxyz, axis=-1, keepdims=True))

    @classmethod
    def sample_uniform(cls, key, batch_axes: Tuple[int, ...] = (), dtype=jnp.float32) -> "SO3":
        q = jax.random.normal(key, tuple(batch_axes) + (4,), dtype)
        return cls(q / jnp.linalg.norm(q, axis=-1, keepdims=True))


@_register
class SE3(MatrixLieGroup):
    """3D rigid transforms, parameters ``wxyz_xyz[...,7]`` (quaternion, then translation)."""

    matrix_dim, parameters_dim, tangent_dim, space_dim = 4, 7, 6, 3
    _field, _jaxlie_name = "wxyz_xyz", "SE3"
    wxyz_xyz: jnp.ndarray

    @staticmethod
    def _identity_parameters(dtype):
        return jnp.asarray([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], dtype=dtype)

    @classmethod
    def from_rotation_and_translation(cls, rotation: SO3, translation) -> "SE3":
        translation = jnp.asarray(translation)
        return cls(jnp.concatenate([rotation.wxyz, translation.astype(rotation.wxyz.dtype)], axis=-1))

    @classmethod
    def from_rotation(cls, rotation: SO3) -> "SE3":
        return cls.from_rotation_and_translation(rotation, jnp.zeros_like(rotation.wxyz[..., 1:]))

    @classmethod
    def from_translation(cls, translation) -> "SE3":
        translation = jnp.asarray(translation)
        return cls.from_rotation_and_translation(SO3.identity(translation.shape[:-1], translation.dtype), translation)

    def rotation(self) -> SO3:
        return SO3(self.wxyz_xyz[..., :4])

    def translation(self) -> jnp.ndarray:
        return self.wxyz_xyz[..., 4:]

    @classmethod
    def exp(cls, tangent) -> "SE3":
        tangent = jnp.asarray(tangent)
        v, w = tangent[..., :3], tangent[..., 3:]
        return cls.from_rotation_and_translation(SO3.exp(w), _se3._left_jacobian_apply(w, v))

    def log(self) -> jnp.ndarray:
        w = self.rotation().log()
        return jnp.concatenate([_se3._left_jacobian_inverse_apply(w, self.translation()), w], axis=-1)

    @classmethod
    def from_matrix(cls, matrix) -> "SE3":
        matrix = jnp.asarray(matrix)
        return cls.from_rotation_and_translation(SO3.from_matrix(matrix[..., :3, :3]), matrix[..., :3, 3])

    def as_matrix(self) -> jnp.ndarray:
        return _se3._homogeneous(self.rotation().as_matrix(), self.translation())

    def multiply(self, other: "SE3") -> "SE3":
        return SE3.from_rotation_and_translation(
            self.rotation() @ other.rotation(), self.rotation() @ other.translation() + self.translation()
        )

    def inverse(self) -> "SE3":
        r_inv = self.rotation().inverse()
        return SE3.from_rotation_and_translation(r_inv, -(r_inv @ self.translation()))

    def apply(self, target) -> jnp.ndarray:
        return self.rotation() @ jnp.asarray(target) + self.translation()

    def adjoint(self) -> jnp.ndarray:
        return _se3.se3_adjoint(self.as_matrix())

    def normalize(self) -> "SE3":
        return SE3.from_rotation_and_translation(self.rotation().normalize(), self.translation())

    @classmethod
    def sample_uniform(cls, key, batch_axes: Tuple[int, ...] = (), dtype=jnp.float32) -> "SE3":
        k1, k2 = jax.random.split(key)
        return cls.from_rotation_and_translation(
            SO3.sample_uniform(k1, batch_axes, dtype), jax.random.uniform(k2, tuple(batch_axes) + (3,), dtype, -1.0, 1.0)
        )


AnyGroup = Union[SO2, SE2, SO3, SE3]
del cross
