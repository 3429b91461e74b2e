"""Factors between a pose and a point (a landmark): the point as the pose sees it.

Two built-in types, both on a pose variable (any kind whose ``to_matrix`` is a homogeneous
``(n+1) x (n+1)`` rigid transform: ``lie.SE2``, the ``"SE2"`` alias, ``lie.SE3``, ``"SE3"``)
and a Euclidean point variable of size ``n`` (``2``/``"R2"`` or ``3``/``"R3"``):

* :class:`RelativePoint` ``r = X_i^-1 p_j - z``: g2o's ``EDGE_SE2_XY`` / ``EDGE_SE3_TRACKXYZ``.
* :class:`BearingRange`: GTSAM's ``BearingRangeFactor`` (Pose2/Point2 and Pose3/Point3),
  same residual, order and signs as its ``evaluateError``.

Both are written in terms of ``pc = X^-1 p`` (the point in the pose frame). Its Jacobians
are analytic and generic over the pose kind: with ``X <- X Exp(d)``,
``(X Exp(d))^-1 p = (I - hat(d)) X^-1 p`` to first order, so ``dpc/dd_a = -(G_a pc_h)[:n]``
with the kind's generators ``G_a = d/dd_a to_matrix(retract(identity, d))`` (computed once
per kind, exact), and ``dpc/dp = R^T``. :mod:`jaxgraph.graph.camera_factors` uses the same
helpers for cameras.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .. import lie
from ..smallmat import matmul, matvec
from .factors import FactorGroup, FactorType
from .kinds import EuclideanKind, Kind

__all__ = ["BearingRange", "RelativePoint", "bearing_range", "relative_point"]


# -- shared helpers (also used by camera_factors) -------------------------------------------

def indices(x, name: str) -> np.ndarray:
    """``x`` as ``int64[M]`` (a scalar is one factor); a clear error naming the group otherwise."""
    a = np.asarray(x)
    if a.ndim == 0:
        a = a[None]
    if a.ndim != 1:
        raise ValueError(f"factor group {name!r}: indices must be a 1-D integer array, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer) and (
            not np.issubdtype(a.dtype, np.number) or not np.all(np.equal(np.mod(a, 1), 0))):
        raise ValueError(f"factor group {name!r}: indices must be integers, got dtype {a.dtype}")
    return a.astype(np.int64)


def stack_indices(name: str, *columns) -> np.ndarray:
    """``int64[M, k]`` of ``k`` index arrays of one length."""
    cols = [indices(c, name) for c in columns]
    if len({c.shape for c in cols}) != 1:
        raise ValueError(f"factor group {name!r}: index arrays of different lengths {[c.shape[0] for c in cols]}")
    return np.stack(cols, 1)


@functools.cache
def generators(kind: Kind) -> np.ndarray:
    """``G[t, k, k]``: ``d/dd_a to_matrix(retract(identity, d))`` at ``d = 0``, the Lie-algebra
    basis of the kind's tangent. With a right retraction ``X Exp(d)``,
    ``d/dd_a to_matrix(retract(X, d)) = T G_a`` at every ``X``.

    SE(n) kinds (``kind.group`` an ``lie.SEBase``: tangent ``(v, w)``, translation first) get
    the closed form; any other kind is differentiated once, compiled (eager, the retraction's
    many small ops took 10 s)."""
    group = kind.group
    if group is not None and issubclass(group, lie.SEBase) and kind.tangent_dim == group.tangent_dim:
        n = group.space_dim
        G = np.zeros((kind.tangent_dim, n + 1, n + 1))
        for i in range(n):
            G[i, i, n] = 1.0  # translation
        rotations = [(1, 0)] if n == 2 else [(2, 1), (0, 2), (1, 0)]  # hat(e_x), hat(e_y), hat(e_z)
        for a, (i, j) in enumerate(rotations):
            G[n + a, i, j], G[n + a, j, i] = 1.0, -1.0
        return G
    with jax.ensure_compile_time_eval():  # a constant of the program, not traced ops
        ident = jnp.asarray(kind.identity_row(np.float32))
        G = jax.jit(jax.jacfwd(lambda d: kind.to_matrix(kind.retract(ident, d))))(
            jnp.zeros(kind.tangent_dim, ident.dtype))
    return np.moveaxis(np.asarray(G, np.float64), -1, 0)


def generator_columns(kind: Kind, x, dtype):
    """``(G_a x_h)[:n]`` for every tangent coordinate ``a``: ``[M, n, t]`` for points ``x[M, n]``
    (``x_h = (x, 1)``)."""
    n = x.shape[-1]
    G = jnp.asarray(generators(kind), dtype)  # [t, n+1, n+1]
    # products summed over n unrolled (no tiny batched dots, see smallmat.matmul). Not
    # jnp.sum over a broadcast product: in float32 XLA:CPU (jax 0.10.2) compiled that sum,
    # plus the translation column and the transpose, to wrong numbers for most of 33,511
    # rows (the eager result and float64 were right; tests/graph/test_camera_factors.py
    # checks the jit-compiled float32 Jacobian against float64 on a large batch).
    Gt = jnp.swapaxes(G[:, :n, :], 0, 1)  # [n, t, n+1]: row i of every generator
    cols = Gt[None, :, :, n] + sum(Gt[None, :, :, j] * x[:, None, None, j] for j in range(n))
    return cols  # [M, n, t]


def in_pose_frame(kind: Kind, pose, point, with_jacobians: bool = True):
    """The point ``p[M, n]`` in the frame of the pose ``X`` (rows ``[M, param_dim]``):
    ``pc = X^-1 p``, ``dpc/dd_pose [M, n, t]`` and ``dpc/dp = R^T [M, n, n]`` (``None``s without
    ``with_jacobians``)."""
    n = point.shape[-1]
    Tinv = kind.inverse_matrix(kind.to_matrix(pose))
    Rinv = Tinv[..., :n, :n]
    pc = matvec(Rinv, point.astype(pose.dtype)) + Tinv[..., :n, n]
    if not with_jacobians:
        return pc, None, None
    return pc, -generator_columns(kind, pc, pose.dtype), Rinv


def pose_point_kinds(group: FactorGroup, ftype, kinds, dims=(2, 3)) -> int:
    """Check slot 0 is a rigid pose and slot 1 a Euclidean point of the same dimension ``n``
    (in ``dims``); return ``n``."""
    pose, point = kinds[0], kinds[1]
    name = group.name
    if not isinstance(point, EuclideanKind) or point.param_dim not in dims:
        raise TypeError(f"factor group {name!r} ({ftype}): slot 2 (variable group {group.variables[1]!r}) must be "
                        f"a Euclidean point of size {' or '.join(map(str, dims))} ('R2'/'R3'), got {point.name}")
    n = point.param_dim
    check_pose_kind(group, ftype, pose, n, slot=0)
    return n


def check_pose_kind(group: FactorGroup, ftype, kind: Kind, n: int, slot: int = 0) -> None:
    """A rigid ``n``-D pose kind: a matrix form of size ``n+1`` and ``n(n+1)/2`` tangent
    coordinates (SE(2): 3, SE(3): 6; rules out a point group passed as a pose)."""
    if not (kind.has_matrix_form and kind.matrix_dim == n + 1 and kind.tangent_dim == n * (n + 1) // 2):
        what = "SE2 ('SE2', lie.SE2)" if n == 2 else "SE3 ('SE3', lie.SE3)"
        raise TypeError(f"factor group {group.name!r} ({ftype}): slot {slot + 1} (variable group "
                        f"{group.variables[slot]!r}) must be a {n}-D pose, {what}, to match {n}-D points; "
                        f"got {kind.name}")


def check_shape(group: FactorGroup, ftype, what: str, x, shape: tuple) -> None:
    """``x`` has exactly ``shape`` (a ValueError naming the group and the expected shape)."""
    got = tuple(np.shape(x))
    if got != shape:
        raise ValueError(f"factor group {group.name!r} ({ftype}): {what} must have shape {shape}, got {got}")


def check_dict(group: FactorGroup, ftype, measurement, keys: tuple) -> None:
    if not isinstance(measurement, dict) or set(measurement) != set(keys):
        got = sorted(measurement) if isinstance(measurement, dict) else type(measurement).__name__
        raise ValueError(f"factor group {group.name!r} ({ftype}): the measurement must be a dict with keys "
                         f"{list(keys)}, got {got}")


# -- relative point ----------------------------------------------------------------------------

@dataclass(frozen=True)
class RelativePoint(FactorType):
    """``r = X^-1 p - z``, slots (pose, point); ``measurement [M, n]`` (the point in the pose's
    frame, the units of the positions). Jacobians ``[-I, ...]``-like, analytic (module doc)."""

    def __str__(self):
        return "relative_point"

    def residual_dim(self, kinds):
        return kinds[1].param_dim

    def check(self, group, kinds):
        n = pose_point_kinds(group, self, kinds)
        check_shape(group, self, "measurement", group.measurement, (group.count, n))

    def residual_and_jacobians(self, group, kinds, params, with_jacobians=True):
        pc, Jx, Jp = in_pose_frame(kinds[0], params[0], params[1], with_jacobians)
        r = pc - jnp.asarray(group.measurement, pc.dtype)
        return r, (None if not with_jacobians else (Jx, Jp))


# -- bearing and range -------------------------------------------------------------------------

def _dot(a, b):
    return jnp.sum(a * b, -1)  # elementwise sums over the last axis, not tiny dots (smallmat.matmul)


def _unit3_error_and_range(pc, n, rng, with_jacobians):
    """GTSAM's ``(-Unit3(pc).localCoordinates(Unit3(n)), |pc| - range)`` ``[M, 3]`` and its
    derivative with respect to ``pc`` ``[M, 3, 3]`` (``None`` without ``with_jacobians``):
    ``pc[M, 3]`` the point in the pose frame, ``n[M, 3]`` the measured unit bearing.

    GTSAM's expression factors return ``-Local(predicted, measured)``, in the tangent plane of
    the prediction ``p = pc / |pc|``: ``-rho B(p)^T (n - c p) = -rho B(p)^T n`` with
    ``c = p.n``, ``rho = theta / sin(theta)``, ``theta = acos(c)`` and ``B(p) = [b1, b2]``
    GTSAM's ``Unit3::basis`` (``b1 = normalize(p x a)``, ``b2 = p x b1``, ``a`` the axis of
    ``p``'s smallest absolute coordinate, x first on ties, then y). Here ``theta = atan2(|p x
    n|, c)``, the same value without ``acos``'s loss of precision near 0, with the series
    ``rho = 1 + s^2 / 6`` for small ``s = sin(theta)``; an antipodal ``n`` gives GTSAM's
    ``-(pi, 0)`` (zero derivative).

    Derivative: of any extension of the error off the unit sphere (the formulas above with
    ``p`` free), times ``dp/dpc = (I - p p^T) / |pc|``; ``drho/dc = (c rho - 1) / s^2``
    (series ``-1/3 - 2 s^2 / 15``), ``d(b1.n)/dp = a x (n - (b1.n) b1) / |p x a|``,
    ``d(b2.n)/dp = b1 x n + a x (w - (b1.w) b1) / |p x a|`` with ``w = n x p``."""
    dtype = pc.dtype
    r2 = _dot(pc, pc)
    pos = r2 > 0
    dist = jnp.sqrt(jnp.where(pos, r2, 1))
    p = pc / dist[:, None]
    c = _dot(n, p)
    w = jnp.cross(n, p)
    s2 = _dot(w, w)  # sin(theta)^2
    small = (s2 < 1e-8) & (c > 0)
    antipodal = (s2 < jnp.finfo(dtype).eps) & (c < 0)
    s2_safe = jnp.where(small | antipodal, 1, s2)
    s = jnp.sqrt(s2_safe)
    rho = jnp.where(small, 1 + s2 / 6, jnp.arctan2(s, c) / s)
    mag = jnp.abs(p)
    first = (mag[:, 0] <= mag[:, 1]) & (mag[:, 0] <= mag[:, 2])
    second = ~first & (mag[:, 1] <= mag[:, 2])
    axis = jnp.stack([first, second, ~first & ~second], -1).astype(dtype)
    u = jnp.cross(p, axis)
    inv_u = 1 / jnp.sqrt(_dot(u, u))  # >= sqrt(2/3): a is p's smallest coordinate
    b1 = u * inv_u[:, None]
    b2 = jnp.cross(p, b1)
    bn = jnp.stack([_dot(b1, n), _dot(b2, n)], -1)  # B^T n
    e = jnp.where(antipodal[:, None], jnp.asarray([-jnp.pi, 0], dtype), -rho[:, None] * bn)
    r = jnp.concatenate([e, (jnp.where(pos, dist, 0) - rng)[:, None]], -1)
    if not with_jacobians:
        return r, None
    drho = jnp.where(small, -1 / 3 - 2 * s2 / 15, (c * rho - 1) / s2_safe)
    g1 = jnp.cross(axis, n - bn[:, :1] * b1) * inv_u[:, None]
    g2 = jnp.cross(b1, n) + jnp.cross(axis, w - _dot(b1, w)[:, None] * b1) * inv_u[:, None]
    G = -(drho[:, None, None] * bn[:, :, None] * n[:, None, :] + rho[:, None, None] * jnp.stack([g1, g2], 1))
    G = G * ~antipodal[:, None, None]
    # times (I - p p^T) / |pc|
    De = (G - _dot(G, p[:, None, :])[:, :, None] * p[:, None, :]) / dist[:, None, None]
    return r, jnp.concatenate([De, p[:, None, :]], 1)


@dataclass(frozen=True)
class BearingRange(FactorType):
    """GTSAM's ``BearingRangeFactor``, slots (pose, point); ``measurement`` a dict
    ``{"bearing": [M] (2-D: angle in the pose frame, radians) or [M, 3] (3-D: direction in the
    pose frame, normalised here as GTSAM's Unit3 does), "range": [M]}``.

    Residual = ``-predicted.localCoordinates(measured)`` (GTSAM's ``evaluateError``, an
    expression factor's ``-Local(value, measured)``): 2-D ``(wrap(bearing_pred - bearing),
    range_pred - range)`` with the angle in ``[-pi, pi)``; 3-D ``(e1, e2, range_pred -
    range)`` with ``(e1, e2)`` the Unit3 error in the tangent basis of the *predicted*
    direction (GTSAM's ``Unit3::basis``). Jacobians: analytic, the error's derivative with
    respect to ``pc`` chained with ``dpc``."""

    def __str__(self):
        return "bearing_range"

    def residual_dim(self, kinds):
        return kinds[1].param_dim

    def check(self, group, kinds):
        n = pose_point_kinds(group, self, kinds)
        check_dict(group, self, group.measurement, ("bearing", "range"))
        M = group.count
        check_shape(group, self, "bearing", group.measurement["bearing"], (M,) if n == 2 else (M, 3))
        check_shape(group, self, "range", group.measurement["range"], (M,))
        b = group.measurement["bearing"]
        if n == 3 and not isinstance(b, jax.core.Tracer):
            norms = np.linalg.norm(np.asarray(b, np.float64), axis=1)
            bad = np.flatnonzero(~(norms > 1e-12) & np.isfinite(norms))
            if bad.size:
                raise ValueError(f"factor group {group.name!r}, factor {int(bad[0])}: the bearing is a zero vector "
                                 f"({bad.size} such factor(s)); a 3-D bearing is a direction (unit vector)")

    def residual_and_jacobians(self, group, kinds, params, with_jacobians=True):
        pc, Jx, Jp = in_pose_frame(kinds[0], params[0], params[1], with_jacobians)
        dtype = pc.dtype
        bearing = jnp.asarray(group.measurement["bearing"], dtype)
        rng = jnp.asarray(group.measurement["range"], dtype)
        if pc.shape[-1] == 2:
            x, y = pc[:, 0], pc[:, 1]
            c, s = jnp.cos(bearing), jnp.sin(bearing)
            # -Local(predicted, measured) = -angle of (direction of pc)^-1 (measured rotation)
            eb = -jnp.arctan2(x * s - y * c, x * c + y * s)
            r2 = x * x + y * y
            pos = r2 > 0
            r2s = jnp.where(pos, r2, 1)
            dist = jnp.where(pos, jnp.sqrt(r2s), 0)
            r = jnp.stack([eb, dist - rng], -1)
            if not with_jacobians:
                return r, None
            inv = 1 / jnp.sqrt(r2s)
            D = jnp.stack([jnp.stack([-y / r2s, x / r2s], -1), jnp.stack([x * inv, y * inv], -1)], -2)  # [M, 2, 2]
        else:
            n = bearing / jnp.sqrt(_dot(bearing, bearing))[:, None]
            r, D = _unit3_error_and_range(pc, n, rng, with_jacobians)
            if not with_jacobians:
                return r, None
        return r, (matmul(D, Jx), matmul(D, Jp))


# -- constructors -----------------------------------------------------------------------------

def relative_point(pose_group: str, pose_index, point_group: str, point_index, measurement, noise,
                   robust=None, *, name: str = "relative_point") -> FactorGroup:
    """Point observations in the pose frame, ``r = X_i^-1 p_j - z`` (g2o's ``EDGE_SE2_XY``,
    ``EDGE_SE3_TRACKXYZ``).

    Args:
      pose_group, pose_index: the poses (``int[M]``), a 2-D (``"SE2"``, ``lie.SE2``) or 3-D
        (``"SE3"``, ``lie.SE3``) pose kind.
      point_group, point_index: the points (``int[M]``), a Euclidean kind of size ``n`` = 2 or
        3 (``2``/``"R2"``, ``3``/``"R3"``).
      measurement: ``[M, n]`` the point's coordinates in the pose's frame (position units).
      noise: a :mod:`jaxgraph.noise` model on the ``n``-vector residual, or ``None`` (unit).
      robust: optional robust loss.
    """
    idx = stack_indices(name, pose_index, point_index)
    return FactorGroup(name, RelativePoint(), (pose_group, point_group), idx, measurement, noise, robust)


def bearing_range(pose_group: str, pose_index, point_group: str, point_index, bearing, range, noise,
                  robust=None, *, name: str = "bearing_range") -> FactorGroup:
    """GTSAM's ``BearingRangeFactor2D`` / ``BearingRangeFactor3D`` (Pose2-Point2, Pose3-Point3).

    Args:
      pose_group, pose_index: the poses (``int[M]``), 2-D or 3-D as the points.
      point_group, point_index: Euclidean points of size 2 or 3 (``int[M]``).
      bearing: 2-D: ``[M]`` angles (radians) of the point in the pose frame (``atan2(y, x)``);
        3-D: ``[M, 3]`` directions in the pose frame (normalised like GTSAM's ``Unit3``).
      range: ``[M]`` distances (position units).
      noise: noise model on the residual ``(bearing error, range error)``: 2 numbers in 2-D
        (radians, units), 3 in 3-D (the 2-D Unit3 error in radians, then the range), or
        ``None`` (unit).
      robust: optional robust loss.

    The residual is GTSAM's ``evaluateError`` exactly (bearing error wrapped to ``[-pi, pi)``
    in 2-D; see :class:`BearingRange`).
    """
    idx = stack_indices(name, pose_index, point_index)
    return FactorGroup(name, BearingRange(), (pose_group, point_group), idx,
                       {"bearing": bearing, "range": range}, noise, robust)
