"""g2o pose-graph files: reading and writing (see ``docs/g2o.md``).

Supported lines::

    VERTEX_SE2 id x y theta
    EDGE_SE2 i j dx dy dtheta I11 I12 I13 I22 I23 I33
    VERTEX_SE3:QUAT id x y z qx qy qz qw
    EDGE_SE3:QUAT i j x y z qx qy qz qw I11 I12 .. I16 I22 .. I66   (21 numbers)
    FIX id [id ...]

Blank lines and lines starting with ``#`` are skipped. Information matrices are upper
triangles, row by row, in the file's order (SE3: translation, then rotation — the same
order as :mod:`jaxgraph`'s SE3 tangent). The edge ``i j Z`` measures ``Z = X_i^-1 X_j``.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..graph import factors as F
from .. import lie
from ..graph import noise as N
from ..graph.kinds import kind_of
from ..graph.problem import Problem, VariableGroup

__all__ = ["read_g2o", "write_g2o", "G2OFormatError", "PD_FLOOR_RELATIVE"]

#: Repair rule for information matrices that are not positive definite: eigenvalues
#: are raised to at least ``PD_FLOOR_RELATIVE * max|eigenvalue|`` of the same matrix
#: (an all-zero matrix becomes ``PD_FLOOR_RELATIVE * I``), keeping the eigenvectors.
PD_FLOOR_RELATIVE = 1e-6

_SPEC = {
    # tag: (dimension, number of tokens including the tag)
    "VERTEX_SE2": (2, 5),
    "EDGE_SE2": (2, 12),
    "VERTEX_SE3:QUAT": (3, 9),
    "EDGE_SE3:QUAT": (3, 31),
}


class G2OFormatError(ValueError):
    """Malformed g2o input; the message names the file, the line and the problem."""


def _err(path, lineno, msg):
    return G2OFormatError(f"{path}:{lineno}: {msg}")


def _parse_int(tok, path, lineno, what, pos):
    try:
        return int(tok)
    except ValueError:
        raise _err(path, lineno, f"{what} (token {pos}) {tok!r} is not an integer id") from None


def _parse_floats(toks, path, lineno, tag, first_pos):
    out = []
    for k, tok in enumerate(toks):
        try:
            v = float(tok)
        except ValueError:
            raise _err(path, lineno, f"{tag}: token {first_pos + k} {tok!r} is not a number") from None
        if not math.isfinite(v):
            raise _err(path, lineno, f"{tag}: token {first_pos + k} is non-finite ({tok!r})")
        out.append(v)
    return out


def _check_quaternion(q, path, lineno, tag, what):
    if math.sqrt(sum(x * x for x in q)) < 1e-12:
        raise _err(path, lineno, f"{tag} ({what}): zero quaternion (qx qy qz qw = {' '.join(map(repr, q))})")


def _upper_to_full(upper: np.ndarray, d: int) -> np.ndarray:
    iu = np.triu_indices(d)
    m = np.zeros(upper.shape[:-1] + (d, d))
    m[..., iu[0], iu[1]] = upper
    m[..., iu[1], iu[0]] = upper
    return m


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
    for a, b in zip(ids[:-1], ids[1:]):
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


def read_g2o(path, *, strict: bool = False, dtype=None, anchor: bool = True):
    """Read a g2o pose graph.

    Args:
      path: file path.
      strict: reject information matrices that are not positive definite (default: repair
        them by the eigenvalue floor ``PD_FLOOR_RELATIVE`` and warn once).
      dtype: float dtype of the arrays; default float64 when ``jax_enable_x64`` is on,
        else float32.
      anchor: add GTSAM's gauge prior: pose 0 (lowest id) at its initial value with
        isotropic sigma 1e-6 (factor group ``"anchor"``). Skipped when the file has FIX
        lines (those vertices are held fixed instead).

    Returns:
      ``(problem, values)``: a :class:`jaxgraph.Problem` with variable group ``"poses"``
      (kind SE2 or SE3, one variable per vertex id in increasing id order) and factor group
      ``"edges"`` (between factors with :class:`jaxgraph.noise.Information`), and values
      ``{"poses": [N, 3]}`` (SE2 ``x, y, theta``) or ``{"poses": [N, 7]}`` (SE3
      ``qw, qx, qy, qz, x, y, z``) holding the file's numbers exactly. A file without vertices
      is initialised by composing the odometry edges id_k -> id_k+1 from the identity.

    Raises:
      G2OFormatError (a ValueError) naming the file, line and problem for: unknown line type,
      wrong number of fields, non-numeric or non-finite field, duplicate vertex id, edge or
      FIX referring to an unknown vertex, a file mixing 2D and 3D lines, an empty file, a
      non-positive-definite information matrix with ``strict=True``.
    """
    path = os.fspath(path)
    if dtype is None:
        dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
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
    with open(path, "r") as fh:
        for lineno, line in enumerate(fh, 1):
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
            if tag not in _SPEC:
                raise _err(
                    path, lineno, f"unsupported line type {tag!r} (supported: {', '.join(list(_SPEC) + ['FIX'])})"
                )
            d, ntok = _SPEC[tag]
            if len(toks) != ntok:
                raise _err(path, lineno, f"{tag} needs {ntok - 1} fields after the tag, got {len(toks) - 1}")
            if dim is None:
                dim, dim_line = d, lineno
            elif dim != d:
                raise _err(
                    path,
                    lineno,
                    f"{tag} is {d}D but line {dim_line} was {dim}D; a file must not mix SE2 and SE3 lines",
                )
            if tag.startswith("VERTEX"):
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
    tdim = 3 if dim == 2 else 6
    nmeas = 3 if dim == 2 else 7
    ei = np.asarray(e_i, np.int64)
    ej = np.asarray(e_j, np.int64)
    ev = np.asarray(e_vals, np.float64).reshape(len(e_vals), -1)
    meas = ev[:, :nmeas]
    upper = ev[:, nmeas:]
    if dim == 3:  # file order x y z qx qy qz qw -> (qw, qx, qy, qz, x, y, z)
        meas = np.concatenate([meas[:, 6:7], meas[:, 3:6], meas[:, 0:3]], 1)
    info = _upper_to_full(upper, tdim)

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
            raise G2OFormatError(f"{path}: no vertices and no edges")
        ids = np.unique(np.concatenate([ei, ej]))
        vals = _compose_odometry(path, dim, ids.tolist(), ei, ej, meas)
    index_of = {int(v): k for k, v in enumerate(ids)}
    fixed = []
    for vid, lineno in fix:
        if vid not in index_of:
            raise _err(path, lineno, f"FIX refers to unknown vertex {vid}")
        fixed.append(index_of[vid])

    # Positive definiteness of the information matrices.
    if len(info):
        eig = np.linalg.eigvalsh(info)
        scale = np.max(np.abs(eig), axis=-1)
        bad = np.nonzero(~(eig[:, 0] > 1e-12 * scale))[0]
        if bad.size:
            first = int(bad[0])
            if strict:
                raise _err(
                    path,
                    e_lines[first],
                    f"information matrix is not positive definite (smallest eigenvalue {eig[first, 0]!r}); "
                    f"{bad.size} such edge(s) in the file",
                )
            w, V = np.linalg.eigh(info[bad])
            floor = PD_FLOOR_RELATIVE * np.where(scale[bad] > 0, scale[bad], 1.0)
            w = np.maximum(w, floor[:, None])
            fixed_info = np.einsum("mij,mj,mkj->mik", V, w, V)
            info[bad] = 0.5 * (fixed_info + np.swapaxes(fixed_info, -1, -2))
            warnings.warn(
                f"{path}: {bad.size} information matrices are not positive definite (first on line "
                f"{e_lines[first]}); repaired by raising eigenvalues to {PD_FLOOR_RELATIVE:g} x the largest "
                "|eigenvalue| of each matrix (read_g2o(..., strict=True) rejects them instead)",
                stacklevel=2,
            )

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
    problem = Problem(
        [VariableGroup("poses", kind, n, tuple(sorted(set(fixed))))],
        groups,
        anchor=anchor,
        metadata={"format": "g2o", "dim": dim, "vertex_ids": ids.copy()},
    )
    return problem, {"poses": jnp.asarray(vals, dtype)}


def _information_of(noise, M: int, d: int) -> np.ndarray:
    if isinstance(noise, N.Information):
        m = np.asarray(noise.matrix, np.float64)
    else:
        W = np.asarray(noise.sqrt_information(d), np.float64)
        m = np.swapaxes(W, -1, -2) @ W
    return np.broadcast_to(m, (M, d, d))


def write_g2o(path, problem: Problem, values, *, group: str = "poses", edges: Sequence[str] | None = None) -> None:
    """Write poses and between edges as a g2o file.

    Every pose of variable group ``group`` is written as a VERTEX line with ``repr`` (shortest
    round-trip) float64 digits, so reading the file back gives bit-identical values; vertex
    ids are the ones read by :func:`read_g2o` (``problem.metadata["vertex_ids"]``) or
    ``0..N-1``. Fixed variables get FIX lines. Edges: every between factor group on
    ``group`` (or the groups named in ``edges``), with the information matrix of its noise
    model (upper triangle). Other factor groups (e.g. the ``"anchor"`` prior) are not
    representable in g2o and are not written. Raises ``ValueError`` naming the first pose
    with a non-finite number (nothing is written then).
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
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
