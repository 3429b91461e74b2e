"""The landmark lines of g2o files (see ``docs/formats.md``): points observed from poses.

Lines (fields after the tag)::

    VERTEX_XY id x y                                        2D landmark
    EDGE_SE2_XY pose point x y I11 I12 I22                  point in the pose's frame
    VERTEX_TRACKXYZ id x y z                                3D landmark
    EDGE_SE3_TRACKXYZ pose point offset x y z I11 .. I33    (6 information entries)
    PARAMS_SE3OFFSET id x y z qx qy qz qw                   sensor offset (identity only)
    LANDMARK pose point x y v1 v2 v3                        GTSAM's bearing-range sighting
    LANDMARK2 pose point x y v1 v2 v3                       the same (victoriaPark)
    BR pose point bearing range bearing_sigma range_sigma   GTSAM's bearing-range line

g2o's own lines (``EDGE_SE2_XY``, ``EDGE_SE3_TRACKXYZ``) become ``relative_point`` factors
``X_i^-1 p_j - z`` with the file's information matrix; ``LANDMARK``/``LANDMARK2``/``BR`` become
``bearing_range`` factors as GTSAM's dataset reader builds them. :class:`LandmarkLines`
collects the lines while :func:`jaxgraph.io.read_g2o` reads the file and builds the landmark
variables and factors afterwards.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from ..graph import catalog as F
from ..graph import noise as N
from ..graph.problem import VariableGroup
from ._convert import matrix_from_quaternion, repair_information, upper_to_full
from ._text import G2OFormatError, err, fmt, parse_floats, parse_int

__all__ = [
    "LANDMARK_SPEC",
    "TRACKXYZ_MODES",
    "LandmarkLines",
    "bearing_range_information",
    "landmark_lines",
    "unit3_basis",
]

#: tag -> (dimension, number of tokens including the tag)
LANDMARK_SPEC = {
    "VERTEX_XY": (2, 4),
    "EDGE_SE2_XY": (2, 8),
    "VERTEX_TRACKXYZ": (3, 5),
    "EDGE_SE3_TRACKXYZ": (3, 13),
    "PARAMS_SE3OFFSET": (3, 9),
    "LANDMARK": (2, 8),
    "LANDMARK2": (2, 8),
    "BR": (2, 7),
}

#: ``read_g2o(trackxyz=...)``: g2o's relative point, or GTSAM's bearing-range factor.
TRACKXYZ_MODES = ("relative_point", "bearing_range")


def _e(path, lineno, msg):
    return err(path, lineno, msg, G2OFormatError)


def unit3_basis(n) -> np.ndarray:
    """GTSAM's ``Unit3::basis()`` of unit vectors ``n[M, 3]``: ``[M, 3, 2]``, columns ``b1 = n x a /
    |n x a|`` (``a`` the axis of n's smallest absolute component, x before y before z) and
    ``b2 = n x b1``. The bearing error of a 3D bearing-range factor is expressed in it."""
    n = np.asarray(n, np.float64)
    m = np.abs(n)
    axis = np.where(((m[:, 0] <= m[:, 1]) & (m[:, 0] <= m[:, 2]))[:, None], [1.0, 0, 0],
                    np.where(((m[:, 1] <= m[:, 0]) & (m[:, 1] <= m[:, 2]))[:, None], [0, 1.0, 0], [0, 0, 1.0]))
    b1 = np.cross(n, axis)
    b1 /= np.linalg.norm(b1, axis=1, keepdims=True)
    return np.stack([b1, np.cross(n, b1)], -1)


def bearing_range_information(z, info) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GTSAM's reading of a 3D point measurement ``z[M, 3]`` with information ``info[M, 3, 3]``
    as a bearing-range measurement: ``(bearing[M, 3], range[M], information[M, 3, 3])``, where
    the information is mapped by ``J^T info J``, ``J = [range * B, bearing]`` (``B`` the
    :func:`unit3_basis` of the bearing; ``d z = range B d(bearing) + bearing d(range)``)."""
    z = np.asarray(z, np.float64)
    r = np.linalg.norm(z, axis=1)
    n = z / r[:, None]
    J = np.concatenate([r[:, None, None] * unit3_basis(n), n[:, :, None]], 2)
    lam = np.swapaxes(J, 1, 2) @ info @ J
    return n, r, 0.5 * (lam + np.swapaxes(lam, 1, 2))


class LandmarkLines:
    """The landmark lines of one g2o file, collected while it is read."""

    def __init__(self, path, trackxyz: str = "relative_point"):
        if trackxyz not in TRACKXYZ_MODES:
            raise ValueError(f"trackxyz must be one of {TRACKXYZ_MODES}, got {trackxyz!r}")
        self.path, self.trackxyz = path, trackxyz
        self.vertices: dict[int, tuple[list, int]] = {}  # id -> (position, line)
        self.params: dict[int, tuple[list, int]] = {}
        # observations in file order: (kind, pose id, landmark id, data, line)
        self.points: list = []  # relative point: data = (z, information upper triangle, offset id)
        self.bearings: list = []  # bearing-range 2D: data = (bearing, range, sigma_b, sigma_r)

    @property
    def empty(self) -> bool:
        return not (self.vertices or self.points or self.bearings)

    def add(self, tag, toks, lineno) -> None:
        """Parse one line (its token count is already checked)."""
        path = self.path
        if tag in ("VERTEX_XY", "VERTEX_TRACKXYZ"):
            vid = parse_int(toks[1], path, lineno, "landmark vertex id", 2, G2OFormatError)
            if vid in self.vertices:
                raise _e(path, lineno, f"duplicate landmark vertex id {vid} (first defined on line "
                                       f"{self.vertices[vid][1]})")
            self.vertices[vid] = (parse_floats(toks[2:], path, lineno, tag, 3, G2OFormatError), lineno)
            return
        if tag == "PARAMS_SE3OFFSET":
            pid = parse_int(toks[1], path, lineno, "parameter id", 2, G2OFormatError)
            if pid in self.params:
                raise _e(path, lineno, f"duplicate PARAMS_SE3OFFSET id {pid} (first defined on line "
                                       f"{self.params[pid][1]})")
            self.params[pid] = (parse_floats(toks[2:], path, lineno, tag, 3, G2OFormatError), lineno)
            return
        i = parse_int(toks[1], path, lineno, "pose vertex id", 2, G2OFormatError)
        j = parse_int(toks[2], path, lineno, "landmark vertex id", 3, G2OFormatError)
        if tag == "EDGE_SE3_TRACKXYZ":
            off = parse_int(toks[3], path, lineno, "offset parameter id", 4, G2OFormatError)
            vals = parse_floats(toks[4:], path, lineno, tag, 5, G2OFormatError)
            self.points.append((i, j, (vals[:3], vals[3:], off), lineno))
        elif tag == "EDGE_SE2_XY":
            vals = parse_floats(toks[3:], path, lineno, tag, 4, G2OFormatError)
            self.points.append((i, j, (vals[:2], vals[2:], None), lineno))
        elif tag == "BR":
            b, r, sb, sr = parse_floats(toks[3:], path, lineno, tag, 4, G2OFormatError)
            if not (sb > 0 and sr > 0):
                raise _e(path, lineno, f"BR: standard deviations must be > 0, got {sb!r} and {sr!r}")
            self.bearings.append((i, j, (b, r, sb, sr), lineno))
        else:  # LANDMARK, LANDMARK2: x y v1 v2 v3, read as GTSAM's dataset reader does
            x, y, v1, _, v3 = parse_floats(toks[3:], path, lineno, tag, 4, G2OFormatError)
            if abs(v1 - v3) < 1e-4:
                if not v1 > 0:
                    raise _e(path, lineno, f"{tag}: variance v1 must be > 0, got {v1!r}")
                sb, sr = math.sqrt(v1 / 10.0), math.sqrt(v1)
            else:  # GTSAM ignores a covariance that is not isotropic: unit sigmas
                sb, sr = 1.0, 1.0
            self.bearings.append((i, j, (math.atan2(y, x), math.sqrt(x * x + y * y), sb, sr), lineno))

    def pose_references(self):
        """``(pose id, line)`` of every observation."""
        return [(o[0], o[3]) for o in self.points + self.bearings]

    def _check_offsets(self):
        for i, j, (_, _, off), lineno in self.points:
            if off is None:
                continue
            if off not in self.params:
                raise _e(self.path, lineno, f"EDGE_SE3_TRACKXYZ refers to offset parameter {off}, which no "
                                            "PARAMS_SE3OFFSET line defines")
            vals, pline = self.params[off]
            x, y, z, qx, qy, qz, qw = vals
            if not (x == y == z == qx == qy == qz == 0.0 and abs(qw) == 1.0):
                raise _e(self.path, lineno, f"EDGE_SE3_TRACKXYZ uses offset parameter {off} (line {pline}), which "
                                            f"is not the identity (x y z qx qy qz qw = {' '.join(map(fmt, vals))}); "
                                            "only identity sensor offsets are supported")

    def build(self, dim, pose_index, pose_rows, dtype, strict):
        """The landmark variable group, its factor groups and values.

        Args:
          dim: 2 or 3. pose_index: pose id -> row. pose_rows: the poses' initial values
            (SE2 ``x y theta``, SE3 ``qw qx qy qz x y z``), float64.

        Returns ``(variable group, factor groups, landmark values [L, dim] float64, landmark ids)``.
        """
        path = self.path
        self._check_offsets()
        for pid, lineno in self.pose_references():
            if pid not in pose_index:
                raise _e(path, lineno, f"landmark observation refers to unknown pose vertex {pid}")
        observed = [(o[3], o, "point") for o in self.points] + [(o[3], o, "bearing") for o in self.bearings]
        ids = np.asarray(sorted(set(self.vertices) | {o[1] for _, o, _ in observed}), np.int64)
        index_of = {int(v): k for k, v in enumerate(ids)}
        values = np.full((len(ids), dim), np.nan)
        for vid, (pos, _) in self.vertices.items():
            values[index_of[vid]] = pos
        R, t = _pose_matrices(dim, np.asarray(pose_rows, np.float64))
        for _, o, what in sorted(observed, key=lambda x: x[0]):  # first observation initialises
            k = index_of[o[1]]
            if not np.isnan(values[k, 0]):
                continue
            p = pose_index[o[0]]
            if what == "point":
                local = np.asarray(o[2][0])
            else:
                b, r = o[2][0], o[2][1]
                local = np.array([math.cos(b) * r, math.sin(b) * r])
            values[k] = R[p] @ local + t[p]

        groups = []
        if self.points:
            pi = np.asarray([pose_index[o[0]] for o in self.points], np.int64)
            li = np.asarray([index_of[o[1]] for o in self.points], np.int64)
            z = np.asarray([o[2][0] for o in self.points], np.float64)
            info = upper_to_full(np.asarray([o[2][1] for o in self.points], np.float64), dim)
            info = repair_information(path, info, [o[3] for o in self.points], strict, G2OFormatError)
            if dim == 3 and self.trackxyz == "bearing_range":
                r = np.linalg.norm(z, axis=1)
                bad = np.flatnonzero(~(r > 0))
                if bad.size:
                    raise _e(path, self.points[int(bad[0])][3],
                             "EDGE_SE3_TRACKXYZ: zero range (x y z = 0 0 0) has no bearing; read with "
                             "trackxyz='relative_point' instead")
                bearing, rng, lam = bearing_range_information(z, info)
                groups.append(F.bearing_range("poses", pi, "landmarks", li, jnp.asarray(bearing, dtype),
                                              jnp.asarray(rng, dtype), N.Information(jnp.asarray(lam, dtype)),
                                              name="bearing_range"))
            else:
                groups.append(F.relative_point("poses", pi, "landmarks", li, jnp.asarray(z, dtype),
                                               N.Information(jnp.asarray(info, dtype)), name="observations"))
        if self.bearings:
            pi = np.asarray([pose_index[o[0]] for o in self.bearings], np.int64)
            li = np.asarray([index_of[o[1]] for o in self.bearings], np.int64)
            d = np.asarray([o[2] for o in self.bearings], np.float64)
            name = "bearing_range" if not any(g.name == "bearing_range" for g in groups) else "bearing_range_2d"
            groups.append(F.bearing_range("poses", pi, "landmarks", li, jnp.asarray(d[:, 0], dtype),
                                          jnp.asarray(d[:, 1], dtype), N.Diagonal(jnp.asarray(d[:, 2:], dtype)),
                                          name=name))
        return VariableGroup("landmarks", dim, len(ids)), groups, values, ids


def _pose_matrices(dim, rows):
    """``(R[N, d, d], t[N, d])`` of g2o pose rows (SE2 ``x y theta``, SE3 ``qw qx qy qz x y z``)."""
    if dim == 2:
        c, s = np.cos(rows[:, 2]), np.sin(rows[:, 2])
        return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], 1), rows[:, :2]
    return matrix_from_quaternion(rows[:, :4]), rows[:, 4:]


def landmark_lines(problem, values, ids, landmark_ids, group="poses") -> list[str]:
    """The g2o lines of a problem's landmarks (vertices, then observations) for :func:`write_g2o`.

    Relative-point groups are written as ``EDGE_SE2_XY`` / ``EDGE_SE3_TRACKXYZ`` (with a
    ``PARAMS_SE3OFFSET 0`` identity line), 2D bearing-range groups as ``BR`` lines (bit-exact
    on reading), 3D bearing-range groups as ``EDGE_SE3_TRACKXYZ`` (the point ``range *
    bearing`` and the information mapped back; read them with ``trackxyz="bearing_range"``).
    """
    L = np.asarray(values["landmarks"], np.float64)
    dim = L.shape[1]
    tag = "VERTEX_XY" if dim == 2 else "VERTEX_TRACKXYZ"
    lines = [f"{tag} {int(v)} " + " ".join(map(fmt, row)) for v, row in zip(landmark_ids.tolist(), L.tolist())]
    obs = []
    for g in problem.factors:
        if g.variables != (group, "landmarks"):
            continue
        idx = g.indices.array
        a, b = ids[idx[:, 0]].tolist(), landmark_ids[idx[:, 1]].tolist()
        if isinstance(g.type, F.RelativePoint):
            z = np.asarray(g.measurement, np.float64)
            up = _upper(_information(g.noise, g.count, dim))
            if dim == 2:
                obs += [f"EDGE_SE2_XY {i} {j} " + " ".join(map(fmt, list(m) + list(u)))
                        for i, j, m, u in zip(a, b, z.tolist(), up.tolist())]
            else:
                obs += [f"EDGE_SE3_TRACKXYZ {i} {j} 0 " + " ".join(map(fmt, list(m) + list(u)))
                        for i, j, m, u in zip(a, b, z.tolist(), up.tolist())]
        elif isinstance(g.type, F.BearingRange):
            bearing = np.asarray(g.measurement["bearing"], np.float64)
            rng = np.asarray(g.measurement["range"], np.float64)
            if dim == 2:
                sig = _sigmas(g, 2)
                obs += [f"BR {i} {j} {fmt(br)} {fmt(r)} {fmt(s[0])} {fmt(s[1])}"
                        for i, j, br, r, s in zip(a, b, bearing.tolist(), rng.tolist(), sig.tolist())]
            else:
                lam = _information(g.noise, g.count, 3)
                bearing = bearing / np.linalg.norm(bearing, axis=1, keepdims=True)
                z = bearing * rng[:, None]
                J = np.concatenate([rng[:, None, None] * unit3_basis(bearing), bearing[:, :, None]], 2)
                Jinv = np.linalg.inv(J)
                info = np.swapaxes(Jinv, 1, 2) @ lam @ Jinv
                up = _upper(0.5 * (info + np.swapaxes(info, 1, 2)))
                obs += [f"EDGE_SE3_TRACKXYZ {i} {j} 0 " + " ".join(map(fmt, list(m) + list(u)))
                        for i, j, m, u in zip(a, b, z.tolist(), up.tolist())]
    if dim == 3 and any(o.startswith("EDGE_SE3_TRACKXYZ") for o in obs):
        lines.append("PARAMS_SE3OFFSET 0 0.0 0.0 0.0 0.0 0.0 0.0 1.0")
    return lines + obs


def _information(noise, M, d) -> np.ndarray:
    if noise is None:
        return np.broadcast_to(np.eye(d), (M, d, d))
    if isinstance(noise, N.Information):
        return np.broadcast_to(np.asarray(noise.matrix, np.float64), (M, d, d))
    W = np.asarray(noise.sqrt_information(d), np.float64)
    return np.broadcast_to(np.swapaxes(W, -1, -2) @ W, (M, d, d))


def _sigmas(g, d) -> np.ndarray:
    """Standard deviations ``[M, d]`` of a group's diagonal (or isotropic, or unit) noise, as stored."""
    M, noise = g.count, g.noise
    if noise is None:
        return np.ones((M, d))
    if isinstance(noise, N.Diagonal):
        return np.broadcast_to(np.asarray(noise.sigmas, np.float64), (M, d))
    if isinstance(noise, N.Isotropic):
        return np.broadcast_to(np.asarray(noise.sigma, np.float64).reshape(-1, 1), (M, d))
    raise ValueError(f"write_g2o: factor group {g.name!r}: a 2D bearing-range factor is written as a BR line, "
                     f"which holds standard deviations only, not {type(noise).__name__} noise")


def _upper(m) -> np.ndarray:
    d = m.shape[-1]
    iu = np.triu_indices(d)
    return m[:, iu[0], iu[1]]
