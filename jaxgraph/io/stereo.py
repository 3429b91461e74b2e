"""Stereo visual odometry files of GTSAM's ``StereoVOExample_large`` (see ``docs/formats.md``).

Three files::

    VO_calibration.txt              fx fy skew cx cy baseline
    VO_camera_poses_<suffix>.txt    id m11 m12 m13 m14 m21 .. m44   (one camera-to-world pose a line)
    VO_stereo_factors_<suffix>.txt  camera landmark uL uR v X Y Z   (one observation a line)

``X Y Z`` is the landmark triangulated in the camera's frame; the example starts each
landmark at its first observation's ``X Y Z`` moved to the world by that camera's pose.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..graph import catalog as F
from ..graph.problem import Problem, VariableGroup
from ._convert import matrix_from_quaternion, quaternion_from_matrix, transform_points
from ._text import Reader, fmt

__all__ = ["read_stereo_vo", "stereo_vo_paths", "write_stereo_vo"]

_FACTORS = "VO_stereo_factors"


def stereo_vo_paths(factors_path, calibration_path=None, poses_path=None, *, for_writing: bool = False):
    """``(calibration path, poses path)`` beside a stereo factors file, unless given.

    ``DIR/VO_stereo_factors<suffix>.txt`` -> ``DIR/VO_calibration<suffix>.txt`` (when it exists or
    ``for_writing``, else ``DIR/VO_calibration.txt``) and ``DIR/VO_camera_poses<suffix>.txt``;
    any other ``DIR/NAME.txt`` -> ``DIR/NAME_calibration.txt`` and ``DIR/NAME_poses.txt``.
    """
    p = Path(os.fspath(factors_path))
    stem = p.stem
    if stem.startswith(_FACTORS):
        suffix = stem[len(_FACTORS):]
        cal = p.with_name(f"VO_calibration{suffix}.txt")
        if not (for_writing or cal.exists()):
            cal = p.with_name("VO_calibration.txt")
        poses = p.with_name(f"VO_camera_poses{suffix}.txt")
    else:
        cal, poses = p.with_name(f"{stem}_calibration.txt"), p.with_name(f"{stem}_poses.txt")
    return (os.fspath(calibration_path) if calibration_path is not None else os.fspath(cal),
            os.fspath(poses_path) if poses_path is not None else os.fspath(poses))


def read_stereo_vo(factors_path, calibration_path=None, poses_path=None, *, dtype=None, fix_first: bool = True):
    """Read a stereo visual-odometry problem (GTSAM's ``StereoVOExample_large``).

    Args:
      factors_path: the stereo factors file (``camera landmark uL uR v X Y Z`` lines).
      calibration_path, poses_path: default :func:`stereo_vo_paths` (``VO_calibration.txt`` and
        ``VO_camera_poses_<suffix>.txt`` beside ``VO_stereo_factors_<suffix>.txt``).
      dtype: default float64 when ``jax_enable_x64`` is on, else float32.
      fix_first: hold the first pose (lowest id) at its initial value, as the example's
        ``NonlinearEquality`` does (the gauge).

    Returns:
      ``(problem, values)``: variable groups ``"poses"`` (``"SE3"``, camera-to-world, ids in
      increasing order: ``problem.metadata["pose_ids"]``; each 4x4 matrix's rotation becomes
      the nearest unit quaternion, as GTSAM's ``Rot3::toQuaternion`` gives it) and
      ``"landmarks"`` (3, ids in increasing order: ``metadata["landmark_ids"]``, started at
      the first observation's ``X Y Z`` moved to the world by its camera's pose), and factor
      group ``"stereo"`` (``factors.stereo``, unit noise, the file's calibration).

    Raises :class:`jaxgraph.io.FormatError` (``path:line: ...``) for a line with the wrong
    number of fields, a non-number, a duplicate pose id, an observation of a pose the poses
    file does not have, a pose whose rotation block is not a rotation, missing files' lines.
    """
    factors_path = os.fspath(factors_path)
    calibration_path, poses_path = stereo_vo_paths(factors_path, calibration_path, poses_path)
    if dtype is None:
        dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    r = Reader(calibration_path)
    K = np.asarray(r.floats(6, "the calibration 'fx fy skew cx cy baseline'")[1])
    r.expect_end("the calibration's 6 numbers")
    ids, rows = _read_poses(poses_path)
    pose_index = {v: k for k, v in enumerate(ids.tolist())}
    r = Reader(factors_path)
    obs = []
    while not r.at_end:
        lineno, toks = r.line("an observation 'camera landmark uL uR v X Y Z'", 8)
        cam = r.integer(toks[0], lineno, "camera id", low=None)
        if cam not in pose_index:
            raise r.error(lineno, f"camera id {cam} has no pose in {poses_path}")
        lm = r.integer(toks[1], lineno, "landmark id", low=None)
        obs.append((pose_index[cam], lm, [r.number(t, lineno, "uL uR v X Y Z") for t in toks[2:]]))
    if not obs:
        raise r.eof("an observation 'camera landmark uL uR v X Y Z'")
    pi = np.asarray([o[0] for o in obs], np.int64)
    lids_all = np.asarray([o[1] for o in obs], np.int64)
    data = np.asarray([o[2] for o in obs], np.float64)
    lids, first = np.unique(lids_all, return_index=True)  # first: each landmark's first observation
    li = np.searchsorted(lids, lids_all)
    Rw = matrix_from_quaternion(rows[:, :4])
    fp = pi[first]
    landmarks = transform_points(Rw[fp], rows[fp, 4:], data[first, 3:])
    fixed = (0,) if fix_first else ()
    problem = Problem(
        [VariableGroup("poses", "SE3", len(ids), fixed), VariableGroup("landmarks", 3, len(lids))],
        [F.stereo("poses", pi, "landmarks", li, jnp.asarray(data[:, :3], dtype), jnp.asarray(K, dtype), None,
                  name="stereo")],
        anchor=fix_first,
        metadata={"format": "stereo", "pose_ids": ids, "landmark_ids": lids},
    )
    return problem, {"poses": jnp.asarray(rows, dtype), "landmarks": jnp.asarray(landmarks, dtype)}


def _read_poses(path):
    """``(ids int64[N] increasing, rows [N, 7] (qw qx qy qz x y z))`` of a camera poses file."""
    r = Reader(path)
    ids, rows, lines = [], [], {}
    while not r.at_end:
        lineno, toks = r.line("a pose 'id' + 16 numbers of a 4x4 row-major matrix", 17)
        pid = r.integer(toks[0], lineno, "pose id", low=None)
        if pid in lines:
            raise r.error(lineno, f"duplicate pose id {pid} (first on line {lines[pid]})")
        lines[pid] = lineno
        m = np.asarray([r.number(t, lineno, f"pose {pid}: matrix") for t in toks[1:]]).reshape(4, 4)
        R = m[:3, :3]
        dev = float(np.abs(R @ R.T - np.eye(3)).max())
        if dev > 1e-2 or np.linalg.det(R) <= 0:
            raise r.error(lineno, f"pose {pid}: the upper-left 3x3 block is not a rotation (|R R^T - I| = {dev:.3g}, "
                                  f"det {np.linalg.det(R):.6g})")
        ids.append(pid)
        rows.append(np.concatenate([quaternion_from_matrix(R[None])[0], m[:3, 3]]))
    if not ids:
        raise r.eof("a pose 'id' + 16 numbers")
    order = np.argsort(ids, kind="stable")
    return np.asarray(ids, np.int64)[order], np.asarray(rows)[order]


def write_stereo_vo(factors_path, problem, values, calibration_path=None, poses_path=None) -> None:
    """Write a stereo visual-odometry problem as :func:`read_stereo_vo` reads it: the calibration,
    the poses (4x4 camera-to-world matrices of the unit quaternions) and the observations,
    each with its landmark moved into the observing camera's frame (so reading the files back
    starts every landmark where ``values`` has it, to rounding). Paths default to
    :func:`stereo_vo_paths` of ``factors_path``. ``values``: float arrays ``"poses" [N, 7]``
    (``qw qx qy qz x y z``, camera-to-world) and ``"landmarks" [L, 3]`` (world units), as
    :func:`read_stereo_vo` returns them. Numbers are written with Python's shortest
    round-trip digits. Raises ``ValueError`` (nothing written) for a problem without a
    ``stereo`` factor group or with a non-finite value."""
    group = next((g for g in problem.factors if isinstance(g.type, F.Stereo)), None)
    if group is None:
        raise ValueError("write_stereo_vo: the problem has no stereo factor group")
    pname, lname = group.variables
    problem.check_values(values)
    P = np.asarray(values[pname], np.float64)
    L = np.asarray(values[lname], np.float64)
    for name, x in ((pname, P), (lname, L)):
        bad = np.flatnonzero(~np.all(np.isfinite(x), axis=1))
        if bad.size:
            raise ValueError(f"write_stereo_vo: {name} {int(bad[0])} is not finite; {bad.size} such row(s); "
                             "nothing written")
    K = np.asarray(group.measurement["calibration"], np.float64)
    if not np.all(K == K[:1]):
        raise ValueError("write_stereo_vo: the factors have different calibrations; the format holds one")
    calibration_path, poses_path = stereo_vo_paths(factors_path, calibration_path, poses_path, for_writing=True)
    pose_ids = np.asarray(problem.metadata.get("pose_ids", np.arange(len(P))), np.int64)
    landmark_ids = np.asarray(problem.metadata.get("landmark_ids", np.arange(len(L))), np.int64)
    R = matrix_from_quaternion(P[:, :4])
    idx = group.indices.array
    pi, li = idx[:, 0], idx[:, 1]
    local = np.einsum("mji,mj->mi", R[pi], L[li] - P[pi, 4:])  # R^T (p - t)
    meas = np.asarray(group.measurement["measurement"], np.float64)
    with open(calibration_path, "w") as fh:
        fh.write(" ".join(map(fmt, K[0])) + "\n")
    with open(poses_path, "w") as fh:
        for pid, Rk, t in zip(pose_ids.tolist(), R, P[:, 4:]):
            m = np.eye(4)
            m[:3, :3], m[:3, 3] = Rk, t
            fh.write(f"{pid} " + " ".join(map(fmt, m.ravel())) + "\n")
    with open(os.fspath(factors_path), "w") as fh:
        for a, b, z, x in zip(pose_ids[pi].tolist(), landmark_ids[li].tolist(), meas.tolist(), local.tolist()):
            fh.write(f"{a} {b} " + " ".join(map(fmt, z + x)) + "\n")
