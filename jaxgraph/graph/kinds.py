"""Variable kinds: how a values array row maps to a group element (internal to the solver).

A variable group declares its kind as a group class of :mod:`jaxgraph.lie` (``lie.SE3``,
``lie.SE2``, ``lie.SO3``, ``lie.SO2``), a Euclidean dimension (``3``) or one of the string
aliases. Every group operation (matrices, logarithm, adjoint, right Jacobians, retraction)
comes from the group class; nothing here dispatches on a group's name.

Values layout (one row per variable):

==============  ==============================  =======  ======================================
kind            row                             tangent  notes
==============  ==============================  =======  ======================================
``lie.SE2``     ``(cos, sin, x, y)``            3        the class's ``unit_complex_xy``
``lie.SE3``     ``(qw, qx, qy, qz, x, y, z)``   6        the class's ``wxyz_xyz``
``lie.SO3``     ``(qw, qx, qy, qz)``            3        the class's ``wxyz``
``lie.SO2``     ``(cos, sin)``                  1        the class's ``unit_complex``
``"SE3"``       as ``lie.SE3``                  6        alias
``"SO3"``       as ``lie.SO3``                  3        alias
``"SE2"``       ``(x, y, theta)``               3        lie.SE2 stored as g2o's numbers (the
                                                         layout of g2o-read problems): minimal,
                                                         bit-exact file round trip
``n``, ``"Rn"`` ``(x_1 .. x_n)``                n        Euclidean
==============  ==============================  =======  ======================================

Tangents use right perturbations ``X <- X Exp(d)`` in the classes' order: SE2 ``(x, y,
theta)``, SE3 ``(v, w)`` (translation first, also g2o's information-matrix order).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Type, Union

import jax.numpy as jnp
import numpy as np

from .. import lie, smallmat

__all__ = ["Kind", "GroupKind", "XYThetaKind", "EuclideanKind", "KindSpec", "kind_of"]


@dataclass(frozen=True)
class Kind:
    """Static description of a variable kind: its name and dimensions."""

    name: str
    param_dim: int
    tangent_dim: int
    group: Optional[Type[lie.MatrixLieGroup]] = None  # None: Euclidean

    @property
    def is_group(self) -> bool:
        """A Lie group (between and prior factors apply)."""
        return self.group is not None

    def identity_row(self, dtype) -> np.ndarray:
        """The identity's row ``[param_dim]`` as a numpy array (no XLA op: padding a new
        problem should not compile anything); zeros here, for Euclidean kinds."""
        return np.zeros(self.param_dim, dtype)

    def identity(self, n: int, dtype):
        """``n`` identity rows ``[n, param_dim]``."""
        return jnp.broadcast_to(jnp.asarray(self.identity_row(dtype)), (n, self.param_dim))


@dataclass(frozen=True)
class EuclideanKind(Kind):
    """Vectors ``R^n``: rows are the coordinates, retraction is addition."""

    def retract(self, p, d):
        """``p + d``; ``p[..., n]``, ``d[..., n]``."""
        return p + d


@dataclass(frozen=True)
class GroupKind(Kind):
    """A group class; rows are the class's parameters."""

    def to_group(self, p) -> lie.MatrixLieGroup:
        """Group objects of rows ``p[..., param_dim]``."""
        return self.group(p)

    def from_group(self, g: lie.MatrixLieGroup):
        """Rows ``[..., param_dim]`` of group objects."""
        return g.parameters()

    def to_matrix(self, p):
        """Rows ``[..., param_dim]`` -> matrices ``[..., k, k]``."""
        return self.to_group(p).as_matrix()

    def from_matrix(self, T):
        return self.from_group(self.group.from_matrix(T))

    def identity_row(self, dtype) -> np.ndarray:
        """The group's identity parameters (rows are the class's parameters)."""
        return np.asarray(self.group._identity_parameters(), dtype)

    def log(self, T):
        """Logarithm of matrices ``T[..., k, k]``."""
        return self.group.from_matrix(T).log()

    def right_jacobian_inverse(self, xi):
        return self.group.right_jacobian_inverse(xi)

    def adjoint(self, T):
        """Adjoint of matrices ``T[..., k, k]`` (tangent order of the class)."""
        return self.group.from_matrix(T).adjoint()

    def inverse_matrix(self, T):
        """Inverse of matrices ``T[..., k, k]``: ``R^T`` or ``(R^T, -R^T t)``, exact."""
        if not issubclass(self.group, lie.SEBase):
            return jnp.swapaxes(T, -1, -2)
        k = self.group.space_dim
        Rt = jnp.swapaxes(T[..., :k, :k], -1, -2)
        t = -smallmat.matvec(Rt, T[..., :k, k])
        top = jnp.concatenate([Rt, t[..., None]], -1)
        return jnp.concatenate([top, T[..., k:, :]], -2)

    def retract(self, p, d):
        """``X Exp(d)`` in rows; ``p[..., param_dim]``, ``d[..., tangent_dim]``."""
        # normalize(): the unit quaternion / complex number does not drift over iterations.
        return self.from_group(self.to_group(p).rplus(d.astype(p.dtype)).normalize())


@dataclass(frozen=True)
class XYThetaKind(GroupKind):
    """``lie.SE2`` stored as rows ``(x, y, theta)`` (the ``"SE2"`` alias, g2o's numbers)."""

    def identity_row(self, dtype) -> np.ndarray:
        """``(x, y, theta) = 0``."""
        return np.zeros(3, dtype)

    def to_group(self, p) -> lie.SE2:
        return lie.SE2.from_xy_theta(p[..., 0], p[..., 1], p[..., 2])

    def from_group(self, g: lie.SE2):
        return jnp.concatenate([g.translation(), g.rotation().as_radians()[..., None]], -1)

    def retract(self, p, d):
        d = d.astype(p.dtype)
        t = self.to_group(p).rplus(d).translation()
        # theta + d_theta (the SO(2) exponent adds), kept in (-pi, pi] without touching values
        # already inside it, so that a zero step leaves the row bit-identical.
        theta = p[..., 2] + d[..., 2]
        two_pi = jnp.asarray(2 * jnp.pi, p.dtype)
        theta = jnp.where(jnp.abs(theta) > jnp.pi, theta - two_pi * jnp.round(theta / two_pi), theta)
        return jnp.concatenate([t, theta[..., None]], -1)


def _group_kind(name: str, group: Type[lie.MatrixLieGroup]) -> GroupKind:
    return GroupKind(name, group.parameters_dim, group.tangent_dim, group)


_ALIASES = {
    "SE2": XYThetaKind("SE2", 3, 3, lie.SE2),
    "SE3": _group_kind("SE3", lie.SE3),
    "SO3": _group_kind("SO3", lie.SO3),
}

KindSpec = Union[Kind, Type[lie.MatrixLieGroup], int, str]


def kind_of(spec: KindSpec) -> Kind:
    """Kind of a declaration: a group class (``lie.SE3``), a Euclidean dimension (``3``), or
    the aliases ``"SE2"`` (rows ``(x, y, theta)``), ``"SE3"``, ``"SO3"``, ``"R<n>"``."""
    if isinstance(spec, Kind):
        return spec
    if isinstance(spec, type) and issubclass(spec, lie.MatrixLieGroup):
        return _group_kind(f"lie.{spec.__name__}", spec)
    if isinstance(spec, (int,)) and not isinstance(spec, bool) and spec > 0:
        return EuclideanKind(f"R{spec}", spec, spec)
    if isinstance(spec, str):
        if spec in _ALIASES:
            return _ALIASES[spec]
        m = re.fullmatch(r"R([1-9][0-9]*)", spec)
        if m:
            n = int(m.group(1))
            return EuclideanKind(spec, n, n)
    raise ValueError(
        f"unknown variable kind {spec!r}; expected a jaxgraph.lie group class (lie.SE2, lie.SE3, lie.SO3, "
        "lie.SO2), a positive Euclidean dimension, or one of 'SE2', 'SE3', 'SO3', 'R<n>'"
    )
