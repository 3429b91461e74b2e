"""g2o files: pose graphs, and poses with landmarks (see ``docs/g2o.md`` and ``docs/formats.md``).

Supported lines::

    VERTEX_SE2 id x y theta
    EDGE_SE2 i j dx dy dtheta I11 I12 I13 I22 I23 I33
    VERTEX_SE3:QUAT id x y z qx qy qz qw
    EDGE_SE3:QUAT i j x y z qx qy qz qw I11 I12 .. I16 I22 .. I66   (21 numbers)
    FIX id [id ...]

and the landmark lines of :mod:`jaxgraph.io.g2o_landmarks` (``VERTEX_XY``, ``EDGE_SE2_XY``,
``VERTEX_TRACKXYZ``, ``EDGE_SE3_TRACKXYZ``, ``PARAMS_SE3OFFSET``, ``LANDMARK``, ``LANDMARK2``,
``BR``). Blank lines and lines starting with ``#`` are skipped. Information matrices are upper
triangles, row by row, in the file's order (SE3: translation, then rotation — the same
order as :mod:`jaxgraph`'s SE3 tangent). The edge ``i j Z`` measures ``Z = X_i^-1 X_j``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import lie
from ..graph import factors as F
from ..graph import noise as N
from ..graph.kinds import kind_of
from ..graph.problem import Problem, VariableGroup
from ._convert import PD_FLOOR_RELATIVE, repair_information, upper_to_full
from ._text import G2OFormatError, parse_floats, parse_int, text_lines
from ._text import err as _text_err
from .g2o_landmarks import LANDMARK_SPEC, LandmarkLines, landmark_lines

__all__ = ["PD_FLOOR_RELATIVE", "G2OFormatError", "read_g2o", "write_g2o"]

_SPEC = {
    # tag: (dimension, number of tokens including the tag)
    "VERTEX_SE2": (2, 5),
    "EDGE_SE2": (2, 12),
    "VERTEX_SE3:QUAT": (3, 9),
    "EDGE_SE3:QUAT": (3, 31),
}


def _err(path, lineno, msg):
    return _text_err(path, lineno, msg, G2OFormatError)


def _parse_int(tok, path, lineno, what, pos):
    return parse_int(tok, path, lineno, what, pos, G2OFormatError)


def _parse_floats(toks, path, lineno, tag, first_pos):
    return parse_floats(toks, path, lineno, tag, first_pos, G2OFormatError)


def _check_quaternion(q, path, lineno, tag, what):
    if np.sqrt(sum(x * x for x in q)) < 1e-12:
        raise _err(path, lineno, f"{tag} ({what}): zero quaternion (qx qy qz qw = {' '.join(map(repr, q))})")


def _g2o_kind(dim: int):
    """The kind whose rows are g2o's numbers: SE2 ``(x, y, theta)``, SE3 ``(qw, qx, qy, qz, x, y, z)``."""
    return kind_of("SE2" if dim == 2 else "SE3")


def _compose_odometry(path, dim, ids, ei, ej, meas):
    """Initial poses by composing edges id_k -> id_{k+1} (or its reverse) from the identity.

    Conversions go through jaxgraph.lie (batched); the chain product is float64 numpy.
    """
    kind = _g2o_kind(dim)
    first = {}
    for e in range(len(ei)):
        first.setdefault((int(ei[e]), int(ej[e])), e)
    Z = np.asarray(kind.to_matrix(jnp.asarray(meas)), np.float64)
    T = np.eye(dim + 1)
    out = [T]
    for a, b in itertools.pairwise(ids):
        if (a, b) in first:
            step = Z[first[(a, b)]]
        elif (b, a) in first:
            step = np.linalg.inv(Z[first[(b, a)]])
        else:
            raise G2OFormatError(
                f"{path}: the file has no vertices and no odometry edge between vertex {a} and vertex {b}, "
                "so initial values cannot be composed"
            )
        T = T @ step
        out.append(T)
    return np.asarray(kind.from_matrix(jnp.asarray(np.stack(out))), np.float64)


def read_g2o(path, *, strict: bool = False, dtype=None, anchor: bool | None = None, trackxyz: str = "relative_point",
             landmark_prior: float | None = None):
    """Read a g2o file: a pose graph, or poses with landmarks.

    Args:
      path: file path.
      strict: reject information matrices that are not positive definite (default: repair
        them by the eigenvalue floor ``PD_FLOOR_RELATIVE`` and warn once).
      dtype: float dtype of the arrays; default float64 when ``jax_enable_x64`` is on,
        else float32.
      anchor: add GTSAM's gauge prior: pose 0 (lowest id) at its initial value with
        isotropic sigma 1e-6 (factor group ``"anchor"``). Skipped when the file has FIX
        lines (those vertices are held fixed instead). ``None`` (default): anchored unless
        ``landmark_prior`` is given (known landmarks fix the gauge themselves).
      trackxyz: how ``EDGE_SE3_TRACKXYZ`` lines are read: ``"relative_point"`` (g2o's own
        meaning: ``X_i^-1 p_j - z`` with the file's information) or ``"bearing_range"``
        (GTSAM's reader: a 3D bearing-range factor whose information is the file's mapped
        into bearing-range coordinates, see :func:`jaxgraph.io.g2o_landmarks.bearing_range_information`).
      landmark_prior: known landmarks: a prior holding every landmark at its value in the
        file, isotropic with this sigma (metres, > 0; factor group ``"landmark_prior"``), as
        GTSAM's known-landmark localisation reference adds with sigma 1e-6. ``None``: none.

    Returns:
      ``(problem, values)``: a :class:`jaxgraph.Problem` with variable group ``"poses"``
      (kind SE2 or SE3, one variable per vertex id in increasing id order) and factor group
      ``"edges"`` (between factors with :class:`jaxgraph.noise.Information`), and values
      ``{"poses": [N, 3]}`` (SE2 ``x, y, theta``) or ``{"poses": [N, 7]}`` (SE3
      ``qw, qx, qy, qz, x, y, z``) holding the file's numbers exactly. A file without vertices
      is initialised by composing the odometry edges id_k -> id_k+1 from the identity.
      A file with landmark lines adds variable group ``"landmarks"`` (2 or 3 numbers, ids in
      increasing order, a namespace of their own: ``problem.metadata["landmark_ids"]``),
      initialised from its vertex line or else from its first observation, and factor groups
      ``"observations"`` (relative points) and/or ``"bearing_range"`` (docs/formats.md).

    Raises:
      G2OFormatError (a ValueError) naming the file, line and problem for: unknown line type,
      wrong number of fields, non-numeric or non-finite field, duplicate vertex id, edge or
      FIX referring to an unknown vertex, a file mixing 2D and 3D lines, an empty file, a
      non-positive-definite information matrix with ``strict=True``, a landmark edge with a
      sensor offset that is not the identity.
    """
    path = os.fspath(path)
    if dtype is None:
        dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    elif not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"read_g2o: dtype must be a floating dtype (float32 or float64), got {np.dtype(dtype).name}")
    if landmark_prior is not None and not (np.isfinite(landmark_prior) and landmark_prior > 0):
        raise ValueError(f"read_g2o: landmark_prior must be a finite sigma > 0 (metres), got {landmark_prior!r}")
    if anchor is None:
        anchor = landmark_prior is None
    lm = LandmarkLines(path, trackxyz)
    dim, vert_ids, vert_vals, vert_line, edges, fix = _read_lines(path, lm)
    e_i, e_j, e_vals, e_lines = edges
    tdim = 3 if dim == 2 else 6
    nmeas = 3 if dim == 2 else 7
    ei = np.asarray(e_i, np.int64)
    ej = np.asarray(e_j, np.int64)
    ev = np.asarray(e_vals, np.float64).reshape(len(e_vals), nmeas + tdim * (tdim + 1) // 2)
    meas = ev[:, :nmeas]
    upper = ev[:, nmeas:]
    if dim == 3:  # file order x y z qx qy qz qw -> (qw, qx, qy, qz, x, y, z)
        meas = np.concatenate([meas[:, 6:7], meas[:, 3:6], meas[:, 0:3]], 1)
    info = upper_to_full(upper, tdim)

    if vert_ids:
        ids = np.asarray(vert_ids, np.int64)
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        vals = np.asarray(vert_vals, np.float64)[order]
        if dim == 3:
            vals = np.concatenate([vals[:, 6:7], vals[:, 3:6], vals[:, 0:3]], 1)
        known = set(vert_line)
        for k in range(len(ei)):
            for v in (int(ei[k]), int(ej[k])):
                if v not in known:
                    raise _err(path, e_lines[k], f"edge refers to unknown vertex {v} (no VERTEX line defines it)")
    else:
        if len(ei) == 0:
            raise G2OFormatError(f"{path}: no pose vertices and no pose edges" if not lm.empty
                                 else f"{path}: no vertices and no edges")
        ids = np.unique(np.concatenate([ei, ej]))
        vals = _compose_odometry(path, dim, ids.tolist(), ei, ej, meas)
    index_of = {int(v): k for k, v in enumerate(ids)}
    fixed = []
    for vid, lineno in fix:
        if vid not in index_of:
            raise _err(path, lineno, f"FIX refers to unknown vertex {vid}")
        fixed.append(index_of[vid])
    info = repair_information(path, info, e_lines, strict, G2OFormatError)

    kind = "SE2" if dim == 2 else "SE3"
    n = len(ids)
    gi = np.asarray([index_of[int(v)] for v in ei], np.int64)
    gj = np.asarray([index_of[int(v)] for v in ej], np.int64)
    groups = []
    if len(gi):
        groups.append(
            F.between(
                "poses", gi, gj, jnp.asarray(meas, dtype), N.Information(jnp.asarray(info, dtype)), name="edges"
            )
        )
    variables = [VariableGroup("poses", kind, n, tuple(sorted(set(fixed))))]
    values = {"poses": jnp.asarray(vals, dtype)}
    metadata = {"format": "g2o", "dim": dim, "vertex_ids": ids.copy()}
    if not lm.empty:
        var, lgroups, lvals, lids = lm.build(dim, index_of, vals, dtype, strict)
        variables.append(var)
        groups.extend(lgroups)
        values["landmarks"] = jnp.asarray(lvals, dtype)
        metadata["landmark_ids"] = lids
        if landmark_prior is not None:
            groups.append(F.prior("landmarks", np.arange(len(lids)), values["landmarks"],
                                  N.Isotropic(jnp.asarray(landmark_prior, dtype)), name="landmark_prior"))
    elif landmark_prior is not None:
        raise G2OFormatError(f"{path}: landmark_prior was given but the file has no landmarks")
    if anchor and not fixed:
        groups.append(
            F.prior(
                "poses",
                np.zeros(1, np.int64),
                jnp.asarray(vals[:1], dtype),
                N.Isotropic(jnp.asarray(1e-6, dtype)),
                name="anchor",
            )
        )
    return Problem(variables, groups, anchor=anchor, metadata=metadata), values


def _read_lines(path, lm: LandmarkLines):
    """Parse the file: ``(dim, vertex ids, vertex rows, vertex lines, (edge i, j, numbers, lines),
    FIX entries)``; landmark lines go to ``lm``."""
    dim = None
    dim_line = None
    vert_ids: list[int] = []
    vert_vals: list[list[float]] = []
    vert_line: dict[int, int] = {}
    e_i: list[int] = []
    e_j: list[int] = []
    e_vals: list[list[float]] = []
    e_lines: list[int] = []
    fix: list[tuple[int, int]] = []
    for lineno, line in enumerate(text_lines(path, G2OFormatError), 1):
        toks = line.split()
        if not toks or toks[0].startswith("#"):
            continue
        tag = toks[0]
        if tag == "FIX":
            if len(toks) < 2:
                raise _err(path, lineno, "FIX needs at least one vertex id")
            for k, t in enumerate(toks[1:], 2):
                fix.append((_parse_int(t, path, lineno, "FIX vertex id", k), lineno))
            continue
        spec = _SPEC.get(tag) or LANDMARK_SPEC.get(tag)
        if spec is None:
            raise _err(path, lineno, f"unsupported line type {tag!r} (supported: "
                                     f"{', '.join(list(_SPEC) + list(LANDMARK_SPEC) + ['FIX'])})")
        d, ntok = spec
        if len(toks) != ntok:
            raise _err(path, lineno, f"{tag} needs {ntok - 1} fields after the tag, got {len(toks) - 1}")
        if dim is None:
            dim, dim_line = d, lineno
        elif dim != d:
            raise _err(
                path,
                lineno,
                f"{tag} is {d}D but line {dim_line} was {dim}D; a file must not mix 2D and 3D lines",
            )
        if tag in LANDMARK_SPEC:
            lm.add(tag, toks, lineno)
        elif tag.startswith("VERTEX"):
            vid = _parse_int(toks[1], path, lineno, "vertex id", 2)
            if vid in vert_line:
                raise _err(path, lineno, f"duplicate vertex id {vid} (first defined on line {vert_line[vid]})")
            vert_line[vid] = lineno
            vert_ids.append(vid)
            vert_vals.append(_parse_floats(toks[2:], path, lineno, tag, 3))
            if d == 3:
                _check_quaternion(vert_vals[-1][3:7], path, lineno, tag, f"vertex {vid}")
        else:
            i = _parse_int(toks[1], path, lineno, "edge vertex id", 2)
            j = _parse_int(toks[2], path, lineno, "edge vertex id", 3)
            if i == j:
                raise _err(path, lineno, f"edge connects vertex {i} to itself")
            e_i.append(i)
            e_j.append(j)
            e_vals.append(_parse_floats(toks[3:], path, lineno, tag, 4))
            e_lines.append(lineno)
            if d == 3:
                _check_quaternion(e_vals[-1][3:7], path, lineno, tag, f"edge {i} -> {j}")
    if dim is None:
        raise G2OFormatError(f"{path}: no VERTEX_SE2/EDGE_SE2/VERTEX_SE3:QUAT/EDGE_SE3:QUAT lines found")
    return dim, vert_ids, vert_vals, vert_line, (e_i, e_j, e_vals, e_lines), fix


def _information_of(noise, M: int, d: int) -> np.ndarray:
    if isinstance(noise, N.Information):
        m = np.asarray(noise.matrix, np.float64)
    else:
        W = np.asarray(noise.sqrt_information(d), np.float64)
        m = np.swapaxes(W, -1, -2) @ W
    return np.broadcast_to(m, (M, d, d))


def write_g2o(path, problem: Problem, values, *, group: str = "poses", edges: Sequence[str] | None = None) -> None:
    """Write poses and between edges (and landmarks with their observations) as a g2o file.

    Every pose of variable group ``group`` is written as a VERTEX line with ``repr`` (shortest
    round-trip) float64 digits, so reading the file back gives bit-identical values; vertex
    ids are the ones read by :func:`read_g2o` (``problem.metadata["vertex_ids"]``) or
    ``0..N-1``. Fixed variables get FIX lines. Edges: every between factor group on
    ``group`` (or the groups named in ``edges``), with the information matrix of its noise
    model (upper triangle). Other factor groups (e.g. the ``"anchor"`` prior) are not
    representable in g2o and are not written. A variable group ``"landmarks"`` is written as
    ``VERTEX_XY``/``VERTEX_TRACKXYZ`` lines with its observations (docs/formats.md). Raises
    ``ValueError`` naming the first pose or landmark with a non-finite number (nothing is
    written then).
    """
    path = os.fspath(path)
    var = next((v for v in problem.variables if v.name == group), None)
    if var is None:
        raise ValueError(f"write_g2o: the problem has no variable group {group!r}")
    kind = var.manifold
    if kind.group not in (lie.SE2, lie.SE3):
        raise ValueError(f"write_g2o: variable group {group!r} is {kind.name}; g2o stores SE2 or SE3 poses")
    problem.check_values(values)
    file_kind = _g2o_kind(kind.group.space_dim)

    def g2o_rows(rows):
        # Rows already in g2o's numbers are written as they are (bit-exact round trip).
        return np.asarray(rows if kind == file_kind else file_kind.from_group(kind.to_group(jnp.asarray(rows))), np.float64)

    ids = np.asarray(problem.metadata.get("vertex_ids", np.arange(var.count)), np.int64)
    P = g2o_rows(values[group])
    bad = np.nonzero(~np.all(np.isfinite(P), axis=1))[0]
    if bad.size:  # a g2o file must never hold nan/inf: the reader rejects it
        k = int(bad[0])
        raise ValueError(
            f"write_g2o: {group} {k} (vertex id {int(ids[k])}) is not finite ({P[k].tolist()}); "
            f"{bad.size} such pose(s); {path} not written"
        )
    lines = []
    rep = float.__repr__
    se2 = kind.group is lie.SE2
    if se2:
        for vid, row in zip(ids.tolist(), P.tolist()):
            lines.append(f"VERTEX_SE2 {vid} {rep(row[0])} {rep(row[1])} {rep(row[2])}")
    else:
        for vid, row in zip(ids.tolist(), P.tolist()):
            w, x, y, z, tx, ty, tz = map(rep, row)
            lines.append(f"VERTEX_SE3:QUAT {vid} {tx} {ty} {tz} {x} {y} {z} {w}")
    for k in var.fixed:
        lines.append(f"FIX {int(ids[k])}")
    d = kind.tangent_dim
    iu = np.triu_indices(d)
    for g in problem.factors:
        if not isinstance(g.type, F.Between) or g.variables[0] != group:
            continue
        if edges is not None and g.name not in edges:
            continue
        idx = g.indices.array
        meas = g2o_rows(g.measurement)
        info = _information_of(g.noise, g.count, d) if g.noise is not None else np.broadcast_to(np.eye(d), (g.count, d, d))
        up = info[:, iu[0], iu[1]]
        tag = "EDGE_SE2" if se2 else "EDGE_SE3:QUAT"
        for a, b, m, u in zip(ids[idx[:, 0]].tolist(), ids[idx[:, 1]].tolist(), meas.tolist(), up.tolist()):
            if not se2:
                m = m[4:] + m[1:4] + m[:1]
            lines.append(f"{tag} {a} {b} " + " ".join(map(rep, m)) + " " + " ".join(map(rep, u)))
    lvar = next((v for v in problem.variables if v.name == "landmarks"), None)
    if lvar is not None:
        lids = np.asarray(problem.metadata.get("landmark_ids", np.arange(lvar.count)), np.int64)
        L = np.asarray(values["landmarks"], np.float64)
        bad = np.nonzero(~np.all(np.isfinite(L), axis=1))[0]
        if bad.size:
            k = int(bad[0])
            raise ValueError(f"write_g2o: landmarks {k} (landmark id {int(lids[k])}) is not finite ({L[k].tolist()}); "
                             f"{bad.size} such landmark(s); {path} not written")
        lines += landmark_lines(problem, values, ids, lids, group)
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
