"""Base classes of the group objects: the shared interface, and the SE(n) = SO(n) x R^n layout.

A group object is a frozen dataclass holding one parameter array with leading batch axes
(registered as a pytree by ``utils.register_lie_group``). Operations broadcast batch axes
and keep the parameters' dtype; constructors without an input array (``identity``,
``sample_uniform``) use JAX's default float unless given a dtype.
"""

from __future__ import annotations

import abc
from typing import ClassVar, Generic, Tuple, Type, TypeVar, Union, overload

import jax
import jax.numpy as jnp

from . import hints
from ._ops import check_trailing, default_float, float_dtype

G = TypeVar("G", bound="MatrixLieGroup")
Rotation = TypeVar("Rotation", bound="SOBase")


def resolve_dtype(dtype) -> jnp.dtype:
    """``dtype``, or JAX's default float when it is None."""
    return jnp.dtype(default_float() if dtype is None else dtype)


class MatrixLieGroup(abc.ABC):
    """Interface of SO2, SE2, SO3 and SE3 (jaxlie's ``MatrixLieGroup``)."""

    matrix_dim: ClassVar[int]
    """Size of the matrix representation (square)."""
    parameters_dim: ClassVar[int]
    """Length of the parameter array's last axis."""
    tangent_dim: ClassVar[int]
    """Dimension of the tangent space."""
    space_dim: ClassVar[int]
    """Dimension of the points the group acts on."""
    _parameters_field: ClassVar[str]

    def parameters(self) -> jax.Array:
        """The parameter array [..., parameters_dim]."""
        return getattr(self, self._parameters_field)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._parameters_field}={self.parameters()!r})"

    def get_batch_axes(self) -> Tuple[int, ...]:
        """Leading (batch) axes of the parameter array."""
        return tuple(self.parameters().shape[:-1])

    @overload
    def __matmul__(self: G, other: G) -> G: ...

    @overload
    def __matmul__(self, other: hints.Array) -> jax.Array: ...

    def __matmul__(self, other):
        """``a @ b`` composes two group elements; ``a @ points`` applies ``a`` to points."""
        if isinstance(other, MatrixLieGroup):
            return self.multiply(other)
        return self.apply(other)

    # Constructors ----------------------------------------------------------------------

    @classmethod
    @abc.abstractmethod
    def _identity_parameters(cls) -> Tuple[float, ...]:
        """Parameters of the identity element."""

    @classmethod
    def identity(cls: Type[G], batch_axes: Tuple[int, ...] = (), dtype=None) -> G:
        """The identity element, broadcast to ``batch_axes``; dtype defaults to JAX's float."""
        params = jnp.asarray(cls._identity_parameters(), dtype=resolve_dtype(dtype))
        return cls(jnp.broadcast_to(params, tuple(batch_axes) + (cls.parameters_dim,)))

    @classmethod
    @abc.abstractmethod
    def from_matrix(cls: Type[G], matrix: hints.Array) -> G:
        """The element of a matrix [..., matrix_dim, matrix_dim]."""

    @classmethod
    @abc.abstractmethod
    def exp(cls: Type[G], tangent: hints.Array) -> G:
        """Exponential map of a tangent vector [..., tangent_dim]."""

    @classmethod
    @abc.abstractmethod
    def sample_uniform(cls: Type[G], key: jax.Array, batch_axes: Tuple[int, ...] = (), dtype=None) -> G:
        """Random elements (uniform rotations; translations uniform in [-1, 1])."""

    @classmethod
    def from_jaxlie(cls: Type[G], other) -> G:
        """Convert a jaxlie group object of the same type."""
        return cls(jnp.asarray(other.parameters()))

    def to_jaxlie(self):
        """Convert to the jaxlie object with the same parameters."""
        import jaxlie

        return getattr(jaxlie, type(self).__name__)(self.parameters())

    # Operations ------------------------------------------------------------------------

    @abc.abstractmethod
    def as_matrix(self) -> jax.Array:
        """Matrix representation [..., matrix_dim, matrix_dim]."""

    @abc.abstractmethod
    def apply(self, target: hints.Array) -> jax.Array:
        """Act on points [..., space_dim]."""

    @abc.abstractmethod
    def multiply(self: G, other: G) -> G:
        """Composition ``self @ other``."""

    @abc.abstractmethod
    def log(self) -> jax.Array:
        """Logarithm map: tangent vector [..., tangent_dim]."""

    @abc.abstractmethod
    def adjoint(self) -> jax.Array:
        """Adjoint [..., tangent_dim, tangent_dim]: ``self @ exp(x) = exp(Ad x) @ self``."""

    @classmethod
    def adjoint_of_matrix(cls, matrix: hints.Array) -> jax.Array:
        """Adjoint [..., tangent_dim, tangent_dim] of the element with matrix
        ``matrix[..., matrix_dim, matrix_dim]``; the groups here read it off the matrix
        directly, without the round trip through the parameters that this default takes."""
        return cls.from_matrix(matrix).adjoint()

    @abc.abstractmethod
    def inverse(self: G) -> G:
        """Group inverse."""

    @abc.abstractmethod
    def normalize(self: G) -> G:
        """Project the parameters back onto the group (unit quaternion / complex number)."""

    @classmethod
    @abc.abstractmethod
    def right_jacobian(cls, tangent: hints.Array) -> jax.Array:
        """Right Jacobian Jr [..., tangent_dim, tangent_dim]: ``exp(x + d) ~= exp(x) @ exp(Jr(x) d)``."""

    @classmethod
    @abc.abstractmethod
    def right_jacobian_inverse(cls, tangent: hints.Array) -> jax.Array:
        """``Jr(x)^-1`` [..., tangent_dim, tangent_dim], in closed form."""

    def jlog(self) -> jax.Array:
        """Jacobian [..., tangent_dim, tangent_dim] of ``log(self @ exp(d))`` at ``d = 0``,
        the inverse right Jacobian ``Jr(log self)^-1``."""
        return self.right_jacobian_inverse(self.log())

    @abc.abstractmethod
    def rplus_jacobian_parameters_wrt_delta(self) -> jax.Array:
        """Jacobian [..., parameters_dim, tangent_dim] of ``(self @ exp(d)).parameters()`` at d = 0."""

    def rplus(self: G, delta: hints.Array) -> G:
        """``self @ exp(delta)`` for ``delta [..., tangent_dim]`` (the group's tangent units):
        retraction with a right perturbation."""
        return self @ type(self).exp(delta)

    def rminus(self: G, other: G) -> jax.Array:
        """``log(self^-1 @ other)``: the tangent that takes self to other."""
        return (self.inverse() @ other).log()


class SOBase(MatrixLieGroup):
    """Rotation groups (SO2, SO3)."""


class SEBase(Generic[Rotation], MatrixLieGroup):
    """Rigid transforms: parameters are the rotation's, then the translation [..., space_dim];
    tangents are the translation part, then the rotation part."""

    _rotation_type: ClassVar[Type[SOBase]]

    @classmethod
    def from_rotation_and_translation(cls, rotation: Rotation, translation: hints.Array):
        """Element of a rotation and a translation [..., space_dim]; batch axes broadcast,
        dtypes promote (a float64 translation is never cast down to a float32 rotation)."""
        translation = jnp.asarray(translation)
        r = rotation.parameters()
        dtype = jnp.result_type(r.dtype, float_dtype(translation))
        rotation, translation = broadcast_leading_axes((type(rotation)(r.astype(dtype)), translation.astype(dtype)))
        return cls(jnp.concatenate([rotation.parameters(), translation], axis=-1))

    @classmethod
    def from_rotation(cls, rotation: Rotation):
        r = rotation.parameters()
        return cls.from_rotation_and_translation(rotation, jnp.zeros(r.shape[:-1] + (cls.space_dim,), r.dtype))

    @classmethod
    def from_translation(cls, translation: hints.Array):
        translation = jnp.asarray(translation)
        rotation = cls._rotation_type.identity(translation.shape[:-1], float_dtype(translation))
        return cls.from_rotation_and_translation(rotation, translation)

    @classmethod
    def from_matrix(cls, matrix: hints.Array):
        """Element of homogeneous matrices [..., space_dim + 1, space_dim + 1]."""
        n = cls.space_dim
        check_trailing(matrix, (n + 1, n + 1), f"{cls.__name__}.from_matrix", "matrix")
        matrix = jnp.asarray(matrix)
        return cls.from_rotation_and_translation(cls._rotation_type.from_matrix(matrix[..., :n, :n]), matrix[..., :n, n])

    def as_matrix(self) -> jax.Array:
        R = self.rotation().as_matrix()
        n = self.space_dim
        top = jnp.concatenate([R, self.translation()[..., :, None]], axis=-1)
        bottom = jnp.broadcast_to(jnp.eye(n + 1, dtype=R.dtype)[n], top.shape[:-2] + (1, n + 1))
        return jnp.concatenate([top, bottom], axis=-2)

    @classmethod
    def sample_uniform(cls, key: jax.Array, batch_axes: Tuple[int, ...] = (), dtype=None):
        """Uniform rotations, translations uniform in [-1, 1]^space_dim."""
        dtype = resolve_dtype(dtype)
        k1, k2 = jax.random.split(key)
        translation = jax.random.uniform(k2, tuple(batch_axes) + (cls.space_dim,), dtype, -1.0, 1.0)
        return cls.from_rotation_and_translation(cls._rotation_type.sample_uniform(k1, batch_axes, dtype), translation)

    def rotation(self) -> Rotation:
        return self._rotation_type(self.parameters()[..., : self._rotation_type.parameters_dim])

    def translation(self) -> jax.Array:
        return self.parameters()[..., self._rotation_type.parameters_dim :]

    def apply(self, target: hints.Array) -> jax.Array:
        """``R p + t`` for points ``target [..., space_dim]`` (the translation's units)."""
        return self.rotation() @ jnp.asarray(target) + self.translation()

    def multiply(self, other):
        return type(self).from_rotation_and_translation(
            self.rotation() @ other.rotation(), self.rotation() @ other.translation() + self.translation()
        )

    def inverse(self):
        r_inv = self.rotation().inverse()
        return type(self).from_rotation_and_translation(r_inv, -(r_inv @ self.translation()))

    def normalize(self):
        return type(self).from_rotation_and_translation(self.rotation().normalize(), self.translation())

    def rplus_jacobian_parameters_wrt_delta(self) -> jax.Array:
        # d(params)/d(v, w) at 0: the rotation block is the rotation's own Jacobian, the
        # translation moves by R v (exp's translation is v to first order).
        rot = self.rotation()
        j_rot = rot.rplus_jacobian_parameters_wrt_delta()
        R = rot.as_matrix()
        zeros_top = jnp.zeros(j_rot.shape[:-1] + (self.space_dim,), j_rot.dtype)
        zeros_bottom = jnp.zeros(R.shape[:-1] + (j_rot.shape[-1],), j_rot.dtype)
        top = jnp.concatenate([zeros_top, j_rot], axis=-1)
        bottom = jnp.concatenate([R, zeros_bottom], axis=-1)
        return jnp.concatenate([top, bottom], axis=-2)


Broadcastable = TypeVar("Broadcastable", bound=Tuple[Union[MatrixLieGroup, jax.Array], ...])


def broadcast_leading_axes(inputs: Broadcastable) -> Broadcastable:
    """Broadcast the batch axes of group objects and arrays [..., D] against each other."""
    arrays = [(x.parameters() if isinstance(x, MatrixLieGroup) else jnp.asarray(x)) for x in inputs]
    batch = jnp.broadcast_shapes(*(a.shape[:-1] for a in arrays))
    out = [jnp.broadcast_to(a, batch + a.shape[-1:]) for a in arrays]
    return tuple(type(x)(a) if isinstance(x, MatrixLieGroup) else a for x, a in zip(inputs, out))
