"""Bundler v0.3 files (``bundle.out``): reading and writing (see ``docs/formats.md``).

Layout::

    # Bundle file v0.3
    num_cameras num_points
    f k1 k2                      \\
    R11 R12 R13                   |
    R21 R22 R23                   |  per camera
    R31 R32 R33                   |
    t1 t2 t3                     /
    X Y Z                        \\
    red green blue                |  per point
    n  camera key x y  ...       /   (view list: n entries on one line)

Bundler's camera is BAL's (``x_c = R X + t``, looking down ``-z``, ``p = -x_c[:2]/x_c[2]``,
pixel ``f (1 + k1 |p|^2 + k2 |p|^4) p`` with the origin at the image centre and y up), so a
Bundler file reads into the same problem as a BAL file; GTSAM's ``SfmData.FromBundlerFile``
reads the same numbers (it stores the pixel as ``(x, -y)`` for its own camera convention).
"""

from __future__ import annotations

import os

import numpy as np

from ._convert import matrix_from_quaternion, quaternion_from_matrix
from ._text import Reader, fmt
from .bal import bundle_arrays, bundle_problem

__all__ = ["read_bundler", "write_bundler"]

_HEADER = "# Bundle file v0.3"


def read_bundler(path, *, dtype=None):
    """Read a Bundler v0.3 file.

    Returns ``(problem, values)`` laid out as :func:`jaxgraph.io.read_bal`'s (groups
    ``"cameras"`` of kind ``factors.BAL_CAMERA``, ``"points"``, factor group ``"observations"``,
    ``anchor=False``). Each rotation matrix becomes the nearest unit quaternion (file digits
    leave it orthonormal only to ~1e-10). ``problem.metadata`` keeps what the factors do not:
    ``"colors"`` ``[P, 3]`` and the SIFT ``"keys"`` ``[M]`` of the observations, which
    :func:`write_bundler` writes back.

    Raises :class:`jaxgraph.io.FormatError` (``path:line: ...``) for a missing header, a line
    with the wrong number of fields, a non-number, a camera or index out of range, a camera
    whose rotation is all zero (Bundler's mark of a camera it did not reconstruct) or not a
    rotation, and a file that ends early or goes on after the last point.
    """
    r = Reader(path)
    first = r.peek_line()
    if first is None or " ".join(first[1]) != _HEADER:
        if first is not None and " ".join(first[1][:3]) == "# Bundle file":
            raise r.error(first[0], f"expected {_HEADER!r}, found {' '.join(first[1])!r} (only v0.3 is supported)")
        raise r.eof(repr(_HEADER)) if first is None else r.error(
            first[0], f"expected the header {_HEADER!r}, found {' '.join(first[1])!r}")
    r.line("the header")
    lineno, head = r.line("'num_cameras num_points'", 2)
    nc = r.integer(head[0], lineno, "header: num_cameras", low=1)
    npt = r.integer(head[1], lineno, "header: num_points", low=1)
    rows = np.empty((nc, 10))
    for i in range(nc):
        fk = _numbers(r, 3, f"camera {i} of {nc}: 'f k1 k2'")[1]
        first_line, R = _numbers(r, 3, f"camera {i}: rotation row 1")
        R = np.asarray([R] + [_numbers(r, 3, f"camera {i}: rotation row {k}")[1] for k in (2, 3)])
        t = _numbers(r, 3, f"camera {i}: translation 't1 t2 t3'")[1]
        if not np.any(R):
            raise r.error(first_line, f"camera {i}: the rotation matrix is all zero (Bundler's mark of a camera it "
                                      "did not reconstruct); remove the camera and its observations first")
        dev = float(np.abs(R @ R.T - np.eye(3)).max())
        if dev > 1e-4 or np.linalg.det(R) < 0:
            raise r.error(first_line, f"camera {i}: the matrix on this line and the next two is not a rotation "
                                      f"(|R R^T - I| = {dev:.3g}, det {np.linalg.det(R):.6g})")
        rows[i, :4] = quaternion_from_matrix(R[None])[0]
        rows[i, 4:7] = t
        rows[i, 7:] = fk
    pts = np.empty((npt, 3))
    colors = np.empty((npt, 3))
    cam, pt, key, pix = [], [], [], []
    for j in range(npt):
        pts[j] = _numbers(r, 3, f"point {j} of {npt}: position 'X Y Z'")[1]
        colors[j] = _numbers(r, 3, f"point {j}: color 'red green blue'")[1]
        lineno, toks = r.line(f"point {j}: view list 'n camera key x y ...'")
        n = r.integer(toks[0], lineno, f"point {j}: view list length", low=0)
        if len(toks) != 1 + 4 * n:
            raise r.error(lineno, f"point {j}: a view list of {n} entries needs {1 + 4 * n} numbers "
                                  f"(n, then 'camera key x y' for each), found {len(toks)}")
        for e in range(n):
            c, k, x, y = toks[1 + 4 * e : 5 + 4 * e]
            cam.append(r.integer(c, lineno, f"point {j}, view {e}: camera index", high=nc))
            key.append(r.integer(k, lineno, f"point {j}, view {e}: key index"))
            pix.append([r.number(x, lineno, f"point {j}, view {e}: x"), r.number(y, lineno, f"point {j}, view {e}: y")])
            pt.append(j)
    r.expect_end(f"the {npt} points that the header announces")
    if not cam:
        raise r.error(r.last_line, "the file has no observations (every view list is empty)")
    metadata = {"format": "bundler", "colors": colors, "keys": np.asarray(key, np.int64)}
    return bundle_problem(rows, pts, np.asarray(cam), np.asarray(pt), np.asarray(pix), dtype=dtype, metadata=metadata)


def _numbers(r: Reader, n, what):
    lineno, toks = r.line(what, n)
    return lineno, [r.number(t, lineno, what) for t in toks]


def write_bundler(path, problem, values) -> None:
    """Write a bundle-adjustment problem (from :func:`read_bundler` or :func:`jaxgraph.io.read_bal`)
    as a Bundler v0.3 file: cameras (the quaternion as a rotation matrix), points, and each
    point's view list (its observations in the problem's order), every number with Python's
    shortest round-trip digits. ``values``: float arrays ``"cameras" [C, 10]`` (``qw qx qy
    qz tx ty tz f k1 k2``, focal length in pixels) and ``"points" [P, 3]``, as
    :func:`read_bundler` returns them. Colors and keys come from ``problem.metadata`` when it has
    them (a problem read from a Bundler file), else gray ``128 128 128`` and keys ``0``.
    Raises ``ValueError`` (nothing written) for a problem without a ``snavely_reprojection``
    group or with a non-finite value."""
    cams, pts, ci, pi, pix = bundle_arrays(problem, values, "write_bundler")
    colors = np.asarray(problem.metadata.get("colors", np.full((len(pts), 3), 128.0)))
    keys = np.asarray(problem.metadata.get("keys", np.zeros(len(ci), np.int64)))
    if colors.shape != (len(pts), 3):
        colors = np.full((len(pts), 3), 128.0)
    if keys.shape != (len(ci),):
        keys = np.zeros(len(ci), np.int64)
    R = matrix_from_quaternion(cams[:, :4])
    lines = [_HEADER, f"{len(cams)} {len(pts)}"]
    for k in range(len(cams)):
        lines.append(" ".join(map(fmt, cams[k, 7:])))
        lines += [" ".join(map(fmt, row)) for row in R[k].tolist()]
        lines.append(" ".join(map(fmt, cams[k, 4:7])))
    order = np.argsort(pi, kind="stable")
    starts = np.searchsorted(pi[order], np.arange(len(pts) + 1))
    for j in range(len(pts)):
        lines.append(" ".join(map(fmt, pts[j])))
        lines.append(" ".join(_color(c) for c in colors[j]))
        obs = order[starts[j] : starts[j + 1]]
        lines.append(" ".join([str(len(obs))] + [f"{int(ci[m])} {int(keys[m])} {fmt(pix[m, 0])} {fmt(pix[m, 1])}"
                                                  for m in obs]))
    with open(os.fspath(path), "w") as fh:
        fh.write("\n".join(lines) + "\n")


def _color(c: float) -> str:
    return str(int(c)) if float(c).is_integer() else fmt(c)
