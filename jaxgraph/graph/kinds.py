"""Variable kinds: objects that say how a values row maps to a point of a manifold.

A variable group declares its kind as a group class of :mod:`jaxgraph.lie` (``lie.SE3``,
``lie.SE2``, ``lie.SO3``, ``lie.SO2``), a Euclidean dimension (``3``), one of the string
aliases, or a :class:`Kind` object (e.g. a :class:`ProductKind`, or a subclass of your
own). :func:`kind_of` turns any declaration into one :class:`Kind` object, and everything
the library does with a variable (its sizes, retraction, the validity test of its rows, the
matrix form that between and prior factors use) is asked of that object: no code compares
kind names.

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
ProductKind     the parts' rows side by side    sum      e.g. a camera: SE3 x intrinsics
==============  ==============================  =======  ======================================

Tangents use right perturbations ``X <- X Exp(d)`` in the classes' order: SE2 ``(x, y,
theta)``, SE3 ``(v, w)`` (translation first, also g2o's information-matrix order).

A user-defined kind subclasses :class:`Kind` and implements :meth:`Kind.retract` (the
solver's step) and, for between and prior factors, the matrix form (the methods named in
:data:`MATRIX_FORM`); :meth:`Kind.invalid_rows` adds a validity test of its own rows to the
finiteness test every kind gets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Type, Union

import jax.numpy as jnp
import numpy as np

from .. import lie, smallmat

__all__ = ["MATRIX_FORM", "Kind", "GroupKind", "XYThetaKind", "EuclideanKind", "ProductKind", "KindSpec", "kind_of"]

_NO_ROWS = np.zeros(0, np.int64)


def _extent(rows: np.ndarray) -> float:
    """The largest side of the bounding box of ``rows [M, k]`` (1 when empty or flat): the half
    width of the box that :meth:`Kind.random_rows` draws positions from."""
    return (float(np.ptp(rows, axis=0).max()) if rows.size else 0.0) or 1.0


@dataclass(frozen=True)
class Kind:
    """A variable kind: sizes, retraction, row validity and the matrix form of its points.

    Attributes:
      name: label in messages and reports.
      param_dim: numbers per values row.
      tangent_dim: size of a step (the block size in the normal equations).
      group: the :mod:`jaxgraph.lie` class of a Lie-group kind, else ``None``.
    """

    name: str
    param_dim: int
    tangent_dim: int
    group: Optional[Type[lie.MatrixLieGroup]] = None

    @property
    def is_group(self) -> bool:
        """A :mod:`jaxgraph.lie` group (chordal initialisation applies)."""
        return self.group is not None

    @property
    def tangent_names(self) -> tuple:
        """Names of the tangent coordinates, in order (reports, e.g. marginals)."""
        return tuple(f"x{i}" for i in range(self.tangent_dim))

    def identity_row(self, dtype) -> np.ndarray:
        """The identity's row ``[param_dim]`` as a numpy array (no XLA op: padding a new
        problem should not compile anything); zeros here."""
        return np.zeros(self.param_dim, dtype)

    def identity(self, n: int, dtype):
        """``n`` identity rows ``[n, param_dim]``."""
        return jnp.broadcast_to(jnp.asarray(self.identity_row(dtype)), (n, self.param_dim))

    def retract(self, p, d):
        """``X Exp(d)`` in rows; ``p[..., param_dim]``, ``d[..., tangent_dim]`` -> ``[..., param_dim]``."""
        raise NotImplementedError(f"kind {self.name} must implement retract")

    # The matrix form (MATRIX_FORM below) is implemented by the kinds that have one.

    def invalid_rows(self, rows: np.ndarray) -> tuple[np.ndarray, str]:
        """Rows of finite numbers ``rows[M, param_dim]`` (numpy) that are not points of this
        kind: ``(indices, what is wrong)``; none here. Finiteness is tested for every kind
        before this is called."""
        return _NO_ROWS, ""

    def random_rows(self, rng: np.random.Generator, count: int, like: np.ndarray) -> np.ndarray:
        """``count`` random rows, float64 ``[count, param_dim]``, positions spread over the
        extent of ``like``'s rows (``[N, param_dim]``, the existing values; synthetic
        outliers); here uniform in the box of ``like``."""
        extent = _extent(like)
        return rng.uniform(-extent, extent, (count, self.param_dim))

    @property
    def has_matrix_form(self) -> bool:
        """True when between and prior factors apply: the kind implements every method of
        :data:`MATRIX_FORM`."""
        return all(callable(getattr(self, name, None)) for name in MATRIX_FORM)


#: The matrix form of a kind, the methods between and prior factors use (a kind without them
#: is fine for custom factors): ``matrix_dim`` (property) and
#: ``to_matrix(p)`` rows ``[..., param_dim]`` -> matrices ``[..., matrix_dim, matrix_dim]``;
#: ``from_matrix(T)`` the inverse of that; ``inverse_matrix(T)`` the group inverse, exact;
#: ``log(T)`` -> tangent vectors ``[..., tangent_dim]``; ``right_jacobian_inverse(xi)`` ->
#: ``Jr(xi)^-1 [..., tangent_dim, tangent_dim]``; ``adjoint(T)`` -> ``[..., tangent_dim, tangent_dim]``.
MATRIX_FORM = ("to_matrix", "from_matrix", "inverse_matrix", "log", "right_jacobian_inverse", "adjoint")


@dataclass(frozen=True)
class EuclideanKind(Kind):
    """Vectors ``R^n``: rows are the coordinates, retraction is addition. Their matrix form is
    the translation group (homogeneous ``[[I, x], [0, 1]]``), so between factors give
    ``x_j - x_i - z`` and priors ``x - z``."""

    @property
    def matrix_dim(self) -> int:
        return self.param_dim + 1

    def retract(self, p, d):
        return p + d.astype(p.dtype)

    def to_matrix(self, p):
        # [[I, p], [0, 1]] by concatenation: an indexed update would compile as a scatter,
        # which XLA:CPU turns into a loop kernel of its own
        n, lead = self.param_dim, p.shape[:-1]
        eye = jnp.broadcast_to(jnp.eye(n, dtype=p.dtype), lead + (n, n))
        last = jnp.broadcast_to(jnp.eye(1, n + 1, n, dtype=p.dtype), lead + (1, n + 1))
        return jnp.concatenate([jnp.concatenate([eye, p[..., None]], -1), last], -2)

    def from_matrix(self, T):
        return T[..., : self.param_dim, self.param_dim]

    def inverse_matrix(self, T):
        n = self.param_dim
        # negate the translation column (a constant sign mask, not a scatter)
        sign = np.ones((n + 1, n + 1))
        sign[:n, n] = -1.0
        return T * jnp.asarray(sign, T.dtype)

    def log(self, T):
        return self.from_matrix(T)

    def right_jacobian_inverse(self, xi):
        return jnp.broadcast_to(jnp.eye(self.tangent_dim, dtype=xi.dtype), xi.shape + (self.tangent_dim,))

    def adjoint(self, T):
        return jnp.broadcast_to(jnp.eye(self.tangent_dim, dtype=T.dtype), T.shape[:-2] + (self.tangent_dim,) * 2)


@dataclass(frozen=True)
class GroupKind(Kind):
    """A :mod:`jaxgraph.lie` group class; rows are the class's parameters.

    ``unit_dim``: how many leading parameters form a unit vector (a quaternion: 4, a unit
    complex number: 2); rows where that vector is (nearly) zero are not rotations.
    """

    unit_dim: int = 0

    @property
    def matrix_dim(self) -> int:
        return self.group.matrix_dim

    @property
    def tangent_names(self) -> tuple:
        n = self.group.space_dim
        rotation = ("theta",) if n == 2 else ("wx", "wy", "wz")
        if issubclass(self.group, lie.SEBase):
            return (("x", "y") if n == 2 else ("vx", "vy", "vz")) + rotation
        return rotation

    def to_group(self, p) -> lie.MatrixLieGroup:
        """Group objects of rows ``p[..., param_dim]``."""
        return self.group(p)

    def from_group(self, g: lie.MatrixLieGroup):
        """Rows ``[..., param_dim]`` of group objects."""
        return g.parameters()

    def identity_row(self, dtype) -> np.ndarray:
        """The group's identity parameters."""
        return np.asarray(self.group._identity_parameters(), dtype)

    def invalid_rows(self, rows: np.ndarray) -> tuple[np.ndarray, str]:
        """Rows whose unit part (quaternion, complex number) has norm below 1e-12."""
        if not self.unit_dim:
            return _NO_ROWS, ""
        u = np.asarray(rows, np.float64)[:, : self.unit_dim]
        # squared norms against 1e-24: no square root, no norm's temporaries (called on every
        # solve's initial values)
        bad = np.flatnonzero(np.einsum("ij,ij->i", u, u) < 1e-24)
        return bad, "zero quaternion" if self.unit_dim == 4 else "zero unit complex number"

    def random_rows(self, rng, count, like):
        """A uniformly random rotation (a normalised Gaussian unit part), then positions
        uniform in the box of ``like``'s translations."""
        u = rng.normal(size=(count, self.unit_dim))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        u *= np.where(u[:, :1] < 0, -1.0, 1.0)
        rest = self.param_dim - self.unit_dim
        extent = _extent(like[:, self.unit_dim :])
        return np.concatenate([u, rng.uniform(-extent, extent, (count, rest))], 1)

    def to_matrix(self, p):
        return self.to_group(p).as_matrix()

    def from_matrix(self, T):
        return self.from_group(self.group.from_matrix(T))

    def log(self, T):
        return self.group.from_matrix(T).log()

    def right_jacobian_inverse(self, xi):
        return self.group.right_jacobian_inverse(xi)

    def adjoint(self, T):
        return self.group.adjoint_of_matrix(T)

    def inverse_matrix(self, T):
        """``R^T`` or ``(R^T, -R^T t)``, exact."""
        if not issubclass(self.group, lie.SEBase):
            return jnp.swapaxes(T, -1, -2)
        k = self.group.space_dim
        Rt = jnp.swapaxes(T[..., :k, :k], -1, -2)
        t = -smallmat.matvec(Rt, T[..., :k, k])
        top = jnp.concatenate([Rt, t[..., None]], -1)
        return jnp.concatenate([top, T[..., k:, :]], -2)

    def retract(self, p, d):
        # normalize(): the unit quaternion / complex number does not drift over iterations.
        return self.from_group(self.to_group(p).rplus(d.astype(p.dtype)).normalize())


@dataclass(frozen=True)
class XYThetaKind(GroupKind):
    """``lie.SE2`` stored as rows ``(x, y, theta)`` (the ``"SE2"`` alias, g2o's numbers)."""

    def identity_row(self, dtype) -> np.ndarray:
        """``(x, y, theta) = 0``."""
        return np.zeros(3, dtype)

    def invalid_rows(self, rows):
        return _NO_ROWS, ""  # every finite (x, y, theta) is a pose

    def random_rows(self, rng, count, like):
        """Positions uniform in the box of ``like``'s, headings uniform in ``[-pi, pi)``."""
        extent = _extent(like[:, :2])
        return np.stack([rng.uniform(-extent, extent, count), rng.uniform(-extent, extent, count),
                         rng.uniform(-np.pi, np.pi, count)], 1)

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


class ProductKind(Kind):
    """The product of kinds, rows side by side: e.g. a camera as ``ProductKind(kind_of(lie.SE3),
    kind_of(3))`` (pose, then focal length and two distortion coefficients). Retraction,
    validity and the matrix form (block-diagonal) are the parts'; between and prior factors
    apply when every part has a matrix form."""

    def __init__(self, *parts: KindSpec, name: str | None = None):
        parts = tuple(kind_of(p) for p in parts)
        if not parts:
            raise ValueError("ProductKind needs at least one part")
        label = name or " x ".join(p.name for p in parts)
        object.__setattr__(self, "parts", parts)
        super().__init__(label, sum(p.param_dim for p in parts), sum(p.tangent_dim for p in parts), None)

    def __eq__(self, other):
        return type(other) is type(self) and other.parts == self.parts and other.name == self.name

    def __hash__(self):
        return hash((type(self), self.parts, self.name))

    def __repr__(self):
        return f"ProductKind({', '.join(map(repr, self.parts))}, name={self.name!r})"

    def _cache_key(self):
        """What :meth:`__eq__` compares (:mod:`jaxgraph.runtime.executable_cache`)."""
        return (self.parts, self.name)

    def _split(self, x, sizes):
        out, start = [], 0
        for n in sizes:
            out.append(x[..., start : start + n])
            start += n
        return out

    @property
    def tangent_names(self) -> tuple:
        return tuple(f"{k}.{n}" for k, p in enumerate(self.parts) for n in p.tangent_names)

    @property
    def matrix_dim(self) -> int:
        return sum(p.matrix_dim for p in self.parts)

    def identity_row(self, dtype):
        return np.concatenate([p.identity_row(dtype) for p in self.parts])

    def retract(self, p, d):
        ps = self._split(p, [k.param_dim for k in self.parts])
        ds = self._split(d, [k.tangent_dim for k in self.parts])
        return jnp.concatenate([k.retract(a, b) for k, a, b in zip(self.parts, ps, ds)], -1)

    def invalid_rows(self, rows):
        for k, part in zip(self.parts, self._split(np.asarray(rows), [k.param_dim for k in self.parts])):
            bad, what = k.invalid_rows(part)
            if bad.size:
                return bad, f"{what} in its {k.name} part"
        return _NO_ROWS, ""

    def random_rows(self, rng, count, like):
        parts = self._split(like, [k.param_dim for k in self.parts])
        return np.concatenate([k.random_rows(rng, count, x) for k, x in zip(self.parts, parts)], 1)

    def _blocks(self, T):
        """The parts' diagonal blocks of block-diagonal matrices."""
        out, start = [], 0
        for k in self.parts:
            out.append(T[..., start : start + k.matrix_dim, start : start + k.matrix_dim])
            start += k.matrix_dim
        return out

    @staticmethod
    def _block_diag(blocks):
        n = sum(b.shape[-1] for b in blocks)
        lead = blocks[0].shape[:-2]
        rows, start = [], 0
        for b in blocks:  # each block row padded with zeros left and right (no scatter)
            m = b.shape[-1]
            left = jnp.zeros(lead + (m, start), b.dtype)
            right = jnp.zeros(lead + (m, n - start - m), b.dtype)
            rows.append(jnp.concatenate([left, b, right], -1))
            start += m
        return jnp.concatenate(rows, -2)

    def to_matrix(self, p):
        ps = self._split(p, [k.param_dim for k in self.parts])
        return self._block_diag([k.to_matrix(x) for k, x in zip(self.parts, ps)])

    def from_matrix(self, T):
        return jnp.concatenate([k.from_matrix(B) for k, B in zip(self.parts, self._blocks(T))], -1)

    def inverse_matrix(self, T):
        return self._block_diag([k.inverse_matrix(B) for k, B in zip(self.parts, self._blocks(T))])

    def log(self, T):
        return jnp.concatenate([k.log(B) for k, B in zip(self.parts, self._blocks(T))], -1)

    def right_jacobian_inverse(self, xi):
        xs = self._split(xi, [k.tangent_dim for k in self.parts])
        return self._block_diag([k.right_jacobian_inverse(x) for k, x in zip(self.parts, xs)])

    def adjoint(self, T):
        return self._block_diag([k.adjoint(B) for k, B in zip(self.parts, self._blocks(T))])

    @property
    def has_matrix_form(self) -> bool:
        return all(k.has_matrix_form for k in self.parts)


def _unit_dim(group: Type[lie.MatrixLieGroup]) -> int:
    """Leading parameters of a jaxgraph.lie class that form its unit rotation part: all of an
    SO group's, all but the translation of an SE group's; 0 for other groups."""
    if issubclass(group, lie.SEBase):
        return group.parameters_dim - group.space_dim
    if issubclass(group, lie.SOBase):
        return group.parameters_dim
    return 0


def _group_kind(name: str, group: Type[lie.MatrixLieGroup]) -> GroupKind:
    return GroupKind(name, group.parameters_dim, group.tangent_dim, group, _unit_dim(group))


_ALIASES = {
    "SE2": XYThetaKind("SE2", 3, 3, lie.SE2, 0),
    "SE3": _group_kind("SE3", lie.SE3),
    "SO3": _group_kind("SO3", lie.SO3),
}

KindSpec = Union[Kind, Type[lie.MatrixLieGroup], int, str]


def kind_of(spec: KindSpec) -> Kind:
    """The :class:`Kind` of a declaration: a :class:`Kind` (returned as is), a group class
    (``lie.SE3``), a Euclidean dimension (``3``), or the aliases ``"SE2"`` (rows
    ``(x, y, theta)``), ``"SE3"``, ``"SO3"``, ``"R<n>"``."""
    if isinstance(spec, Kind):
        return spec
    if isinstance(spec, type) and issubclass(spec, lie.MatrixLieGroup):
        return _group_kind(f"lie.{spec.__name__}", spec)
    if isinstance(spec, int) and not isinstance(spec, bool) and spec > 0:
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
        "lie.SO2), a positive Euclidean dimension, one of 'SE2', 'SE3', 'SO3', 'R<n>', or a jaxgraph.graph.Kind"
    )
