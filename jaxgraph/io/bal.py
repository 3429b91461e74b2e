"""Bundle Adjustment in the Large (BAL) files: reading and writing (see ``docs/formats.md``).

Layout (whitespace separated)::

    num_cameras num_points num_observations
    camera point x y                  (num_observations lines)
    w1 w2 w3 t1 t2 t3 f k1 k2         (9 numbers per camera: angle-axis, translation, intrinsics)
    X Y Z                             (3 numbers per point)

A camera maps a world point ``X`` to ``x_c = R(w) X + t`` (it looks down ``-z``), then
``p = -x_c[:2] / x_c[2]`` and the pixel is ``f (1 + k1 |p|^2 + k2 |p|^4) p`` (origin at the image
centre, y up): Snavely's Bundler camera, as Ceres' ``SnavelyReprojectionError`` has it.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from ..graph import catalog as F
from ..graph.problem import Problem, VariableGroup
from ._convert import angle_axis_from_quaternion, quaternion_from_angle_axis
from ._text import Reader, fmt

__all__ = ["bundle_arrays", "bundle_problem", "read_bal", "write_bal"]


def _dtype(dtype):
    if dtype is None:
        return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    return dtype


def read_bal(path, *, dtype=None):
    """Read a BAL file.

    Returns:
      ``(problem, values)``: variable groups ``"cameras"`` (kind ``factors.BAL_CAMERA``, rows
      ``(qw, qx, qy, qz, tx, ty, tz, f, k1, k2)``: the file's angle-axis as a unit quaternion,
      the world-to-camera transform exactly as stored) and ``"points"`` (3), one factor group
      ``"observations"`` of ``factors.snavely_reprojection`` with unit noise (pixels), in the
      file's order, and ``anchor=False``: the 7-dimensional gauge of bundle adjustment
      (rotation, translation, scale) is left to the damping, as Ceres does; no priors.
      ``dtype`` defaults to float64 when ``jax_enable_x64`` is on, else float32.

    Raises:
      :class:`jaxgraph.io.FormatError` (a ``ValueError``) starting ``path:line:`` for a bad
      header, an observation line without 4 fields, a non-number, an index out of range, a
      file that ends early or holds more numbers than its header announces.
    """
    r = Reader(path)
    lineno, head = r.line("the header 'num_cameras num_points num_observations'", 3)
    what = ("num_cameras", "num_points", "num_observations")
    nc, npt, nobs = (r.integer(t, lineno, f"header: {w}", low=1) for t, w in zip(head, what))
    cam = np.empty(nobs, np.int64)
    pt = np.empty(nobs, np.int64)
    pix = np.empty((nobs, 2))
    for k in range(nobs):
        lineno, toks = r.line(f"observation {k + 1} of {nobs}: 'camera point x y'", 4)
        cam[k] = r.integer(toks[0], lineno, f"observation {k + 1}: camera index", high=nc)
        pt[k] = r.integer(toks[1], lineno, f"observation {k + 1}: point index", high=npt)
        pix[k] = [r.number(t, lineno, f"observation {k + 1}: pixel") for t in toks[2:]]
    cams = np.asarray([r.floats(9, f"camera {i} of {nc} (w1 w2 w3 t1 t2 t3 f k1 k2)")[1] for i in range(nc)])
    pts = np.asarray([r.floats(3, f"point {j} of {npt} (X Y Z)")[1] for j in range(npt)])
    r.expect_end(f"the {npt} points that the header announces")
    rows = np.concatenate([quaternion_from_angle_axis(cams[:, :3]), cams[:, 3:]], 1)
    return bundle_problem(rows, pts, cam, pt, pix, dtype=dtype, metadata={"format": "bal"})


def bundle_problem(cameras, points, camera_index, point_index, pixels, *, dtype=None, metadata=None):
    """The bundle-adjustment problem of :func:`read_bal` and :func:`jaxgraph.io.read_bundler` from
    arrays: ``cameras[C, 10]`` (``BAL_CAMERA`` rows), ``points[P, 3]``, one observation per
    entry of ``camera_index``, ``point_index`` (``int[M]``) and ``pixels[M, 2]``."""
    dtype = _dtype(dtype)
    problem = Problem(
        [VariableGroup("cameras", F.BAL_CAMERA, len(cameras)), VariableGroup("points", 3, len(points))],
        [F.snavely_reprojection("cameras", camera_index, "points", point_index, jnp.asarray(pixels, dtype),
                                name="observations")],
        anchor=False,
        metadata=metadata,
    )
    return problem, {"cameras": jnp.asarray(cameras, dtype), "points": jnp.asarray(points, dtype)}


def bundle_arrays(problem, values, who: str = "write_bal"):
    """``(cameras[C, 10], points[P, 3], camera_index[M], point_index[M], pixels[M, 2])`` (float64)
    of a bundle-adjustment problem: the first ``snavely_reprojection`` group; raises
    ``ValueError`` when there is none or a value is not finite."""
    group = next((g for g in problem.factors if isinstance(g.type, F.SnavelyReprojection)), None)
    if group is None:
        raise ValueError(f"{who}: the problem has no snavely_reprojection factor group (a BAL or Bundler problem)")
    cname, pname = group.variables
    problem.check_values(values)
    out = []
    for name in (cname, pname):
        x = np.asarray(values[name], np.float64)
        bad = np.flatnonzero(~np.all(np.isfinite(x), axis=1))
        if bad.size:
            raise ValueError(f"{who}: {name} {int(bad[0])} is not finite ({x[bad[0]].tolist()}); "
                             f"{bad.size} such row(s); nothing written")
        out.append(x)
    idx = group.indices.array
    return out[0], out[1], idx[:, 0], idx[:, 1], np.asarray(group.measurement, np.float64)


def write_bal(path, problem, values) -> None:
    """Write a bundle-adjustment problem (from :func:`read_bal` or :func:`jaxgraph.io.read_bundler`)
    as a BAL file: its observations (the first ``snavely_reprojection`` group, in order),
    cameras (the quaternion as an angle-axis vector of angle at most pi) and points, every
    number with Python's shortest round-trip digits (``repr``). GTSAM's
    ``SfmData.FromBalFile`` and Ceres read it. Raises ``ValueError`` (nothing written) for a
    problem without such a group or a non-finite value.

    ``values`` holds float arrays as :func:`read_bal` returns them: ``"cameras" [C, 10]``
    (``qw qx qy qz tx ty tz f k1 k2``, world-to-camera, focal length in pixels) and
    ``"points" [P, 3]`` (world units); observations are written in pixels."""
    cams, pts, ci, pi, pix = bundle_arrays(problem, values)
    aa = angle_axis_from_quaternion(cams[:, :4])
    lines = [f"{len(cams)} {len(pts)} {len(ci)}"]
    lines += [f"{c} {p} {fmt(u)} {fmt(v)}" for c, p, (u, v) in zip(ci.tolist(), pi.tolist(), pix.tolist())]
    for w, rest in zip(aa.tolist(), cams[:, 4:].tolist()):
        lines += [fmt(x) for x in w + rest]
    lines += [fmt(x) for row in pts.tolist() for x in row]
    with open(os.fspath(path), "w") as fh:
        fh.write("\n".join(lines) + "\n")
