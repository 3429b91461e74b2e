"""Camera factors: a 3-D point seen by a camera, residuals in pixels.

* :class:`Reprojection`: GTSAM's ``PinholeCamera`` with ``Cal3_S2`` ``(fx, fy, s, cx, cy)`` or
  ``Cal3DS2`` ``(fx, fy, s, cx, cy, k1, k2, p1, p2)``; the pose is the camera's pose in the
  world (camera-to-world, z forward, GTSAM's ``Pose3``). The calibration is part of a camera
  variable, a variable of its own, or constant data (:func:`reprojection`).
* :class:`SnavelyReprojection`: the Bundler / BAL camera (Ceres' ``SnavelyReprojectionError``)
  on one variable of kind :data:`BAL_CAMERA` (world-to-camera pose, then ``f, k1, k2``).
* :class:`Stereo`: GTSAM's ``GenericStereoFactor3D`` with ``Cal3_S2Stereo``.

Jacobians are analytic: the projection's derivative with respect to the point in the camera
frame (and the intrinsics), chained with the pose-frame derivatives of
:mod:`jaxgraph.graph.landmark_factors` (right perturbations ``X <- X Exp(d)``; points and
intrinsics ``x <- x + d``).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .. import lie
from ..smallmat import matmul, matvec
from .factors import FactorGroup, FactorType
from .kinds import EuclideanKind, ProductKind
from .landmark_factors import (
    check_dict,
    check_pose_kind,
    check_shape,
    generator_columns,
    in_pose_frame,
    stack_indices,
)

__all__ = ["BAL_CAMERA", "Reprojection", "SnavelyReprojection", "Stereo", "reprojection", "snavely_reprojection",
           "stereo"]

#: The Bundler / BAL camera: rows ``(qw, qx, qy, qz, tx, ty, tz, f, k1, k2)``, the world-to-camera
#: transform ``x_c = R X + t`` as a BAL file stores it (camera looking down -z), then the focal
#: length (pixels) and two radial distortion coefficients. Tangent: SE3 ``(v, w)``, then the
#: three intrinsics.
BAL_CAMERA = ProductKind(lie.SE3, 3, name="bal_camera")

_MODELS = {5: "Cal3_S2 (fx, fy, s, cx, cy)", 9: "Cal3DS2 (fx, fy, s, cx, cy, k1, k2, p1, p2)"}


def _point_kind(group, ftype, kind, slot):
    if not isinstance(kind, EuclideanKind) or kind.param_dim != 3:
        raise TypeError(f"factor group {group.name!r} ({ftype}): slot {slot + 1} (variable group "
                        f"{group.variables[slot]!r}) must be a 3-D point ('R3', 3), got {kind.name}")


def _camera_kind(group, ftype, kind, sizes):
    """A ``ProductKind`` of a 3-D pose and a Euclidean part of a size in ``sizes``."""
    parts = getattr(kind, "parts", ())
    if not (isinstance(kind, ProductKind) and len(parts) == 2 and isinstance(parts[1], EuclideanKind)
            and parts[1].param_dim in sizes):
        raise TypeError(f"factor group {group.name!r} ({ftype}): slot 1 (variable group {group.variables[0]!r}) "
                        f"must be a camera, ProductKind(lie.SE3, k) with k in {sorted(sizes)}, got {kind.name}")
    check_pose_kind(group, ftype, parts[0], 3, slot=0)


def _constant(group, ftype, what, x, sizes):
    M, shape = group.count, tuple(np.shape(x))
    if len(shape) != 2 or shape[0] != M or shape[1] not in sizes:
        raise ValueError(f"factor group {group.name!r} ({ftype}): {what} must have shape (M, k) = ({M}, k), "
                         f"k in {sorted(sizes)}, got {shape}")


def _broadcast_rows(x, M, sizes, name, what):
    """A constant ``[k]`` or ``[M, k]`` as ``[M, k]``: every measurement leaf has one row per
    factor (padding of sized problems and ``vmap`` rely on it)."""
    ndim = np.ndim(x)
    if ndim == 1 and np.shape(x)[0] in sizes:
        xp = jnp if isinstance(x, jax.Array) else np
        return xp.broadcast_to(xp.asarray(x), (M, np.shape(x)[0]))
    if ndim == 2:
        return x
    raise ValueError(f"factor group {name!r}: {what} must have shape (k,) or (M, k) with k in {sorted(sizes)}, "
                     f"got {np.shape(x)}")


# -- the pinhole camera ------------------------------------------------------------------------

def pinhole_project(pc, K, with_jacobians=True):
    """GTSAM's ``uncalibrate(project(pc))``: pixels ``[M, 2]`` of camera-frame points ``pc[M, 3]``
    (``z > 0``; callers mask the others), ``K[M, 5]`` Cal3_S2 or ``[M, 9]`` Cal3DS2; with
    ``dpix/dpc [M, 2, 3]`` and ``dpix/dK [M, 2, k]``."""
    x, y, z = pc[:, 0], pc[:, 1], pc[:, 2]
    iz = 1 / z
    u, v = x * iz, y * iz
    fx, fy, sk, cx, cy = (K[:, i] for i in range(5))
    distorted = K.shape[-1] == 9
    if distorted:  # Cal3DS2_Base::uncalibrate: radial g, tangential (dx, dy)
        k1, k2, p1, p2 = (K[:, i] for i in range(5, 9))
        uu, vv, uv = u * u, v * v, u * v
        rr = uu + vv
        g = 1 + k1 * rr + k2 * rr * rr
        a = g * u + 2 * p1 * uv + p2 * (rr + 2 * uu)
        b = g * v + 2 * p2 * uv + p1 * (rr + 2 * vv)
    else:
        a, b = u, v
    pix = jnp.stack([fx * a + sk * b + cx, fy * b + cy], -1)
    if not with_jacobians:
        return pix, None, None
    zero, one = jnp.zeros_like(u), jnp.ones_like(u)
    if distorted:
        gp = 2 * (k1 + 2 * k2 * rr)  # dg/du = gp u, dg/dv = gp v
        a_u, a_v = g + gp * uu + 2 * p1 * v + 6 * p2 * u, gp * uv + 2 * p1 * u + 2 * p2 * v
        b_u, b_v = gp * uv + 2 * p2 * v + 2 * p1 * u, g + gp * vv + 2 * p2 * u + 6 * p1 * v
    else:
        a_u, a_v, b_u, b_v = one, zero, zero, one
    P_u, P_v = fx * a_u + sk * b_u, fx * a_v + sk * b_v
    Q_u, Q_v = fy * b_u, fy * b_v
    # (u, v) = (x, y) / z: d(u, v)/dpc = [[1, 0, -u], [0, 1, -v]] / z
    Dpc = jnp.stack([jnp.stack([P_u * iz, P_v * iz, -(P_u * u + P_v * v) * iz], -1),
                     jnp.stack([Q_u * iz, Q_v * iz, -(Q_u * u + Q_v * v) * iz], -1)], -2)
    rows = [[a, zero, b, one, zero], [zero, b, zero, zero, one]]
    if distorted:
        da = (u * rr, u * rr * rr, 2 * uv, rr + 2 * uu)  # d(a, b)/d(k1, k2, p1, p2)
        db = (v * rr, v * rr * rr, rr + 2 * vv, 2 * uv)
        rows[0] += [fx * p + sk * q for p, q in zip(da, db)]
        rows[1] += [fy * q for q in db]
    return pix, Dpc, jnp.stack([jnp.stack(r, -1) for r in rows], -2)


@dataclass(frozen=True)
class Reprojection(FactorType):
    """GTSAM's pinhole reprojection error ``project(point) - pixels`` (pixels).

    ``calibration`` says where the intrinsics are:

    * ``"camera"``: slots (camera, point); the camera is one variable of kind
      ``ProductKind(lie.SE3, 5)`` or ``ProductKind(lie.SE3, 9)`` (pose, then intrinsics): GTSAM's
      ``GeneralSFMFactor``;
    * ``"variable"``: slots (pose, point, calibration), the calibration a Euclidean variable of
      size 5 or 9 (shared by many factors): GTSAM's ``GeneralSFMFactor2``;
    * ``"constant"``: slots (pose, point), the intrinsics ``[M, 5|9]`` in the measurement:
      GTSAM's ``GenericProjectionFactor``.

    The measurement is ``{"pixels": [M, 2]}`` (plus ``"calibration": [M, k]`` when constant).
    A point on or behind the camera's image plane (``z <= 0`` in the camera frame, GTSAM's
    CheiralityException) gives what GTSAM's factor returns with ``throwCheirality`` false:
    ``(2 fx, 2 fx)`` for a constant calibration, ``(0, 0)`` otherwise, with zero Jacobians.
    """

    calibration: str = "constant"

    def __post_init__(self):
        if self.calibration not in ("camera", "variable", "constant"):
            raise ValueError(f"Reprojection: calibration must be 'camera', 'variable' or 'constant', "
                             f"got {self.calibration!r}")

    def __str__(self):
        return "reprojection"

    def residual_dim(self, kinds):
        return 2

    def check(self, group, kinds):
        keys = ("pixels", "calibration") if self.calibration == "constant" else ("pixels",)
        check_dict(group, self, group.measurement, keys)
        check_shape(group, self, "pixels", group.measurement["pixels"], (group.count, 2))
        if self.calibration == "camera":
            _camera_kind(group, self, kinds[0], _MODELS)
        else:
            check_pose_kind(group, self, kinds[0], 3, slot=0)
        _point_kind(group, self, kinds[1], 1)
        if self.calibration == "variable":
            k = kinds[2]
            if not isinstance(k, EuclideanKind) or k.param_dim not in _MODELS:
                raise TypeError(f"factor group {group.name!r} ({self}): slot 3 (variable group {group.variables[2]!r}) "
                                f"must be a calibration, a Euclidean kind of size 5 ({_MODELS[5]}) or 9 "
                                f"({_MODELS[9]}), got {k.name}")
        if self.calibration == "constant":
            _constant(group, self, "calibration", group.measurement["calibration"], _MODELS)

    def residual_and_jacobians(self, group, kinds, params, with_jacobians=True):
        if self.calibration == "camera":
            pose_kind = kinds[0].parts[0]
            pose, K = params[0][:, : pose_kind.param_dim], params[0][:, pose_kind.param_dim :]
        else:
            pose_kind, pose = kinds[0], params[0]
            K = params[2] if self.calibration == "variable" else group.measurement["calibration"]
        pc, Jx, Jp = in_pose_frame(pose_kind, pose, params[1], with_jacobians)
        dtype = pc.dtype
        K = jnp.asarray(K, dtype)
        front = pc[:, 2] > 0
        # a safe point behind the camera: no inf/NaN in the branch that where() drops (gradients)
        pix, Dpc, DK = pinhole_project(jnp.where(front[:, None], pc, jnp.asarray([0, 0, 1], dtype)), K,
                                       with_jacobians)
        behind = 2 * K[:, :1] if self.calibration == "constant" else jnp.zeros_like(K[:, :1])
        r = jnp.where(front[:, None], pix - jnp.asarray(group.measurement["pixels"], dtype), behind)
        if not with_jacobians:
            return r, None
        mask = front[:, None, None].astype(dtype)
        Jpose, Jpoint, JK = matmul(Dpc, Jx) * mask, matmul(Dpc, Jp) * mask, DK * mask
        if self.calibration == "camera":
            return r, (jnp.concatenate([Jpose, JK], -1), Jpoint)
        if self.calibration == "variable":
            return r, (Jpose, Jpoint, JK)
        return r, (Jpose, Jpoint)


# -- the Bundler / BAL camera -------------------------------------------------------------------

@dataclass(frozen=True)
class SnavelyReprojection(FactorType):
    """Bundler's camera model as BAL and Ceres' ``SnavelyReprojectionError`` define it, slots
    (camera, point), ``measurement`` pixels ``[M, 2]``:

    ``x_c = R X + t`` (world to camera), ``p = -x_c[:2] / x_c[2]``, ``d = 1 + k1 |p|^2 + k2 |p|^4``,
    ``r = f d p - pixels``.

    No cheirality test (as in Ceres): a point behind the camera projects through the centre.
    Equal in squared norm to GTSAM's ``GeneralSFMFactor2<Cal3Bundler>`` after
    ``SfmData::FromBalFile``'s conversion (``openGL2gtsam`` and the image ``v -> -v``); the
    residual's second component has the opposite sign.
    """

    def __str__(self):
        return "snavely_reprojection"

    def residual_dim(self, kinds):
        return 2

    def check(self, group, kinds):
        _camera_kind(group, self, kinds[0], (3,))
        _point_kind(group, self, kinds[1], 1)
        check_shape(group, self, "pixels", group.measurement, (group.count, 2))

    def residual_and_jacobians(self, group, kinds, params, with_jacobians=True):
        pose_kind = kinds[0].parts[0]
        cam, X = params[0], params[1]
        dtype = cam.dtype
        T = pose_kind.to_matrix(cam[:, : pose_kind.param_dim])  # world to camera
        f, k1, k2 = (cam[:, pose_kind.param_dim + i] for i in range(3))
        R = T[:, :3, :3]
        X = X.astype(dtype)
        xc = matvec(R, X) + T[:, :3, 3]
        iz = 1 / xc[:, 2]
        p = -xc[:, :2] * iz[:, None]
        n = jnp.sum(p * p, -1)
        d = 1 + n * (k1 + k2 * n)
        r = (f * d)[:, None] * p - jnp.asarray(group.measurement, dtype)
        if not with_jacobians:
            return r, None
        # dpred/dp = f (d I + p (dd/dp)^T), dd/dp = 2 (k1 + 2 k2 n) p
        dd = 2 * (k1 + 2 * k2 * n)
        px, py = p[:, 0], p[:, 1]
        A = f[:, None, None] * (d[:, None, None] * jnp.eye(2, dtype=dtype) + dd[:, None, None] * p[:, :, None] * p[:, None, :])
        # dp/dxc = -(1/z) [[1, 0, p_x], [0, 1, p_y]]
        zero, one = jnp.zeros_like(px), jnp.ones_like(px)
        P = -iz[:, None, None] * jnp.stack([jnp.stack([one, zero, px], -1), jnp.stack([zero, one, py], -1)], -2)
        Dxc = matmul(A, P)  # [M, 2, 3]
        # x_c(T Exp(d)) = T (I + hat(d)) X_h: dx_c/dd_a = R (G_a X_h)[:3]
        Jpose = matmul(Dxc, matmul(R, generator_columns(pose_kind, X, dtype)))
        Jintr = jnp.stack([d[:, None] * p, (f * n)[:, None] * p, (f * n * n)[:, None] * p], -1)  # [M, 2, 3]
        return r, (jnp.concatenate([Jpose, Jintr], -1), matmul(Dxc, R))


# -- stereo ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stereo(FactorType):
    """GTSAM's ``GenericStereoFactor3D`` (``StereoCamera::project2`` with ``Cal3_S2Stereo``),
    slots (pose, point), pose camera-to-world (left camera, z forward). Measurement
    ``{"measurement": [M, 3] (uL, uR, v) pixels, "calibration": [M, 6] (fx, fy, s, cx, cy, b)}``.

    ``uL = cx + fx x / z``, ``uR = cx + fx (x - b) / z``, ``v = cy + fy y / z`` (GTSAM ignores
    the skew ``s`` here), residual = predicted - measured. A point with ``z <= 0`` gives GTSAM's
    ``(2 fx, 2 fx, 2 fx)`` with zero Jacobians (``throwCheirality`` false).
    """

    def __str__(self):
        return "stereo"

    def residual_dim(self, kinds):
        return 3

    def check(self, group, kinds):
        check_dict(group, self, group.measurement, ("measurement", "calibration"))
        check_pose_kind(group, self, kinds[0], 3, slot=0)
        _point_kind(group, self, kinds[1], 1)
        check_shape(group, self, "measurement", group.measurement["measurement"], (group.count, 3))
        _constant(group, self, "calibration", group.measurement["calibration"], (6,))

    def residual_and_jacobians(self, group, kinds, params, with_jacobians=True):
        pc, Jx, Jp = in_pose_frame(kinds[0], params[0], params[1], with_jacobians)
        dtype = pc.dtype
        K = jnp.asarray(group.measurement["calibration"], dtype)
        fx, fy, cx, cy, b = K[:, 0], K[:, 1], K[:, 3], K[:, 4], K[:, 5]
        front = pc[:, 2] > 0
        x, y = pc[:, 0], pc[:, 1]
        iz = 1 / jnp.where(front, pc[:, 2], 1)
        uL, uR, v = fx * x * iz, fx * (x - b) * iz, fy * y * iz
        pred = jnp.stack([cx + uL, cx + uR, cy + v], -1)
        r = jnp.where(front[:, None], pred - jnp.asarray(group.measurement["measurement"], dtype), 2 * fx[:, None])
        if not with_jacobians:
            return r, None
        zero = jnp.zeros_like(x)
        a, c = fx * iz, fy * iz
        D = jnp.stack([jnp.stack([a, zero, -uL * iz], -1), jnp.stack([a, zero, -uR * iz], -1),
                       jnp.stack([zero, c, -v * iz], -1)], -2) * front[:, None, None].astype(dtype)
        return r, (matmul(D, Jx), matmul(D, Jp))


# -- constructors -----------------------------------------------------------------------------

def _slot(x, what, name):
    if not (isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str)):
        raise TypeError(f"factor group {name!r}: {what} must be a (variable group name, int[M] indices) pair, "
                        f"got {type(x).__name__}")
    return x


def reprojection(point_group: str, point_index, pixels, noise=None, robust=None, *, camera=None, pose=None,
                 calibration=None, name: str = "reprojection") -> FactorGroup:
    """Pinhole reprojection factors with GTSAM's ``PinholeCamera`` convention (pixels).

    The camera is given in one of three ways (keywords):

    * ``camera=(group, idx)``: one variable per camera of kind ``ProductKind(lie.SE3, 5)``
      (pose, then Cal3_S2 ``fx, fy, s, cx, cy``) or ``ProductKind(lie.SE3, 9)`` (pose, then
      Cal3DS2 ``fx, fy, s, cx, cy, k1, k2, p1, p2``); GTSAM's ``GeneralSFMFactor``;
    * ``pose=(group, idx), calibration=(group, idx)``: a 3-D pose variable and a calibration
      variable (Euclidean of size 5 or 9, usually shared); ``GeneralSFMFactor2``; slots
      (pose, point, calibration);
    * ``pose=(group, idx), calibration=array``: a constant calibration ``[5]``/``[9]`` (shared)
      or ``[M, 5]``/``[M, 9]`` (per factor, stored as ``[M, k]``); ``GenericProjectionFactor``.

    Args:
      point_group, point_index: the 3-D points (``"R3"``/``3``), ``int[M]``.
      pixels: ``[M, 2]`` measured image coordinates ``(u, v)`` (pixels).
      noise: noise model on the 2-vector residual (pixels) or ``None`` (unit).
      robust: optional robust loss.

    Poses are camera-to-world (GTSAM's ``Pose3`` of the camera, z forward, x right, y down).
    Residual ``project(point) - pixels``; a point with camera-frame ``z <= 0`` gives
    ``(2 fx, 2 fx)`` with a constant calibration and ``(0, 0)`` otherwise, zero Jacobians
    (GTSAM's factors on a CheiralityException with ``throwCheirality`` false).
    """
    if (camera is None) == (pose is None):
        raise TypeError(f"factor group {name!r}: give either camera=(group, idx) or pose=(group, idx) "
                        f"(with calibration=)")
    if camera is not None:
        if calibration is not None:
            raise TypeError(f"factor group {name!r}: a camera variable holds its calibration; "
                            f"calibration= goes with pose=")
        g, i = _slot(camera, "camera", name)
        idx = stack_indices(name, i, point_index)
        return FactorGroup(name, Reprojection("camera"), (g, point_group), idx, {"pixels": pixels}, noise, robust)
    g, i = _slot(pose, "pose", name)
    if calibration is None:
        raise TypeError(f"factor group {name!r}: pose= needs calibration= (a (group, idx) pair or an array)")
    if isinstance(calibration, tuple) and len(calibration) == 2 and isinstance(calibration[0], str):
        idx = stack_indices(name, i, point_index, calibration[1])
        return FactorGroup(name, Reprojection("variable"), (g, point_group, calibration[0]), idx,
                           {"pixels": pixels}, noise, robust)
    idx = stack_indices(name, i, point_index)
    K = _broadcast_rows(calibration, idx.shape[0], _MODELS, name, "calibration")
    return FactorGroup(name, Reprojection("constant"), (g, point_group), idx,
                       {"pixels": pixels, "calibration": K}, noise, robust)


def snavely_reprojection(camera_group: str, camera_index, point_group: str, point_index, pixels, noise=None,
                         robust=None, *, name: str = "observations") -> FactorGroup:
    """Bundler / BAL reprojection factors (see :class:`SnavelyReprojection`).

    Args:
      camera_group, camera_index: cameras of kind :data:`BAL_CAMERA` (rows ``(qw, qx, qy, qz,
        tx, ty, tz, f, k1, k2)``, world-to-camera as BAL stores it), ``int[M]``.
      point_group, point_index: 3-D points (``"R3"``/``3``), ``int[M]``.
      pixels: ``[M, 2]`` observations as a BAL file stores them (pixels, origin at the image
        centre).
      noise: noise model on the 2-vector residual (pixels) or ``None`` (unit).
      robust: optional robust loss.
    """
    idx = stack_indices(name, camera_index, point_index)
    return FactorGroup(name, SnavelyReprojection(), (camera_group, point_group), idx, pixels, noise, robust)


def stereo(pose_group: str, pose_index, point_group: str, point_index, measurement, calibration, noise,
           robust=None, *, name: str = "stereo") -> FactorGroup:
    """GTSAM's ``GenericStereoFactor3D`` (see :class:`Stereo`).

    Args:
      pose_group, pose_index: left-camera poses, camera-to-world (``"SE3"``/``lie.SE3``), ``int[M]``.
      point_group, point_index: 3-D points (``"R3"``/``3``), ``int[M]``.
      measurement: ``[M, 3]`` ``(uL, uR, v)`` pixels.
      calibration: ``Cal3_S2Stereo`` ``(fx, fy, s, cx, cy, baseline)``: ``[6]`` shared or
        ``[M, 6]`` per factor (stored as ``[M, 6]``); baseline in position units.
      noise: noise model on the 3-vector residual (pixels) or ``None`` (unit).
      robust: optional robust loss.
    """
    idx = stack_indices(name, pose_index, point_index)
    K = _broadcast_rows(calibration, idx.shape[0], (6,), name, "calibration")
    return FactorGroup(name, Stereo(), (pose_group, point_group), idx,
                       {"measurement": measurement, "calibration": K}, noise, robust)
