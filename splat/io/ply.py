"""Standard 3DGS PLY layout (Kerbl et al. 2023; read by common splat viewers).

One ``vertex`` element, binary little-endian float32 properties in this order:
x y z, nx ny nz (zeros), f_dc_0..2, f_rest_0..(3 (K - 1) - 1), opacity, scale_0..2,
rot_0..3. Conventions: ``opacity`` is the logit of the opacity, ``scale_*`` are log
standard deviations, ``rot_*`` is the quaternion (w, x, y, z), not necessarily
normalised, ``f_dc`` is the degree-0 SH coefficient per colour channel and ``f_rest`` the
higher-degree coefficients stored channel-major (all of red's K - 1 coefficients, then
green's, then blue's), which is the transpose of the [K - 1, 3] per-Gaussian array.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import numpy as np

from ..checks import MAX_LOG_SCALE, invalid_gaussians, warn_default
from .files import require_file


class GaussianPly(NamedTuple):
    """Gaussians as stored in a PLY (numpy float32).

    means [N, 3]; quats [N, 4] (w, x, y, z); log_scales [N, 3]; logit_opacities [N];
    sh [N, K, 3] with K = (degree + 1)^2 (sh[:, 0] is f_dc).
    """

    means: np.ndarray
    quats: np.ndarray
    log_scales: np.ndarray
    logit_opacities: np.ndarray
    sh: np.ndarray


def _names(k: int) -> list[str]:
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(3 * (k - 1))]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def write_ply(path, means, quats, log_scales, logit_opacities, sh) -> None:
    """Write Gaussians to ``path`` in the 3DGS layout (float32, little-endian).

    means [N, 3]; quats [N, 4] wxyz; log_scales [N, 3]; logit_opacities [N]; sh [N, K, 3].
    """
    means = np.asarray(means, np.float32)
    n = means.shape[0]
    sh = np.asarray(sh, np.float32)
    if sh.ndim != 3 or sh.shape[0] != n or sh.shape[2] != 3:
        raise ValueError(f"sh must be [N={n}, K, 3], got {sh.shape}")
    k = sh.shape[1]
    if int(round(np.sqrt(k))) ** 2 != k:
        raise ValueError(f"sh has K={k} coefficients; K must be (degree + 1)^2")
    cols = [means, np.zeros((n, 3), np.float32), sh[:, 0, :],
            np.transpose(sh[:, 1:, :], (0, 2, 1)).reshape(n, 3 * (k - 1)),
            np.asarray(logit_opacities, np.float32).reshape(n, 1),
            np.asarray(log_scales, np.float32).reshape(n, 3),
            np.asarray(quats, np.float32).reshape(n, 4)]
    data = np.ascontiguousarray(np.concatenate(cols, axis=1), dtype="<f4")
    names = _names(k)
    assert data.shape[1] == len(names)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {nm}" for nm in names]
    header += ["end_header"]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(data.tobytes())


_PLY_TYPES = {"float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
              "uchar": "u1", "uint8": "u1", "char": "i1", "int8": "i1", "short": "i2",
              "int16": "i2", "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4",
              "uint": "u4", "uint32": "u4"}


def _header(f, path):
    """(format, vertex count, [(name, dtype code)]) from the header; f is left at the data."""
    if f.readline().strip() != b"ply":
        raise ValueError(f"{path}: not a PLY file (first line is not 'ply')")
    fmt, n, props, in_vertex, lineno = None, None, [], False, 1
    while True:
        line = f.readline()
        lineno += 1
        if not line:
            raise ValueError(f"{path}: PLY header has no end_header")
        tok = line.decode("ascii", "replace").split()
        if not tok:
            continue
        where = f"{path}:{lineno}"
        try:
            if tok[0] == "format":
                fmt = tok[1]
            elif tok[0] == "element":
                in_vertex = tok[1] == "vertex"
                if in_vertex:
                    n = int(tok[2])
                    if n < 0:
                        raise ValueError
                elif n is None:
                    raise ValueError(f"{where}: elements before 'vertex' are not supported")
            elif tok[0] == "property" and in_vertex:
                if tok[1] == "list":
                    raise ValueError(f"{where}: list properties in 'vertex' are not supported")
                if tok[1] not in _PLY_TYPES:
                    raise ValueError(f"{where}: unknown PLY property type {tok[1]!r}")
                props.append((tok[2], _PLY_TYPES[tok[1]]))
            elif tok[0] == "end_header":
                return fmt, n, props
        except (IndexError, ValueError) as e:
            if str(e).startswith(where):
                raise
            raise ValueError(f"{where}: malformed PLY header line "
                             f"{line.decode('ascii', 'replace').strip()!r}") from None


def _table(f, path, fmt, n, props) -> dict:
    """{property name: [n] array} of the vertex element."""
    if fmt == "ascii":
        try:
            arr = np.loadtxt(f, dtype=np.float64, max_rows=n, ndmin=2)
        except ValueError as e:
            raise ValueError(f"{path}: malformed ascii PLY data ({e})") from None
        if arr.shape != (n, len(props)) and not (n == 0 and arr.size == 0):
            raise ValueError(f"{path}: ascii PLY data has shape {arr.shape}, expected "
                             f"{(n, len(props))} ({n} vertices x {len(props)} properties)")
        return {nm: arr[:, i] if n else np.zeros(0) for i, (nm, _) in enumerate(props)}
    if fmt in ("binary_little_endian", "binary_big_endian"):
        end = "<" if fmt == "binary_little_endian" else ">"
        dtype = np.dtype([(nm, end + t) for nm, t in props])
        need = dtype.itemsize * n
        have = os.fstat(f.fileno()).st_size - f.tell()
        if have < need:
            raise ValueError(f"{path}: file truncated ({have} of {need} data bytes for "
                             f"{n} vertices)")
        rec = np.frombuffer(f.read(need), dtype=dtype, count=n)
        return {nm: rec[nm] for nm, _ in props}
    raise ValueError(f"{path}: unknown PLY format {fmt!r}")


def read_ply(path, *, drop_invalid: bool = True, warn=None) -> GaussianPly:
    """Read a 3DGS PLY (binary little/big endian or ascii; any property order).

    Values are in the file's conventions (module docstring): scales are log standard
    deviations and opacities logits, so every finite value is valid (negative log-scales
    are scales below 1). With ``drop_invalid`` (default), Gaussians that cannot be
    rendered, those with a NaN or infinite value or a log-scale above
    :data:`splat.checks.MAX_LOG_SCALE` (a float32 covariance overflow), are removed
    and ``warn`` (default :func:`warnings.warn`) is called once with how many; a file
    with no valid Gaussian left is an error.
    """
    path = os.fspath(path)
    require_file(path, "PLY file")
    with open(path, "rb") as f:
        fmt, n, props = _header(f, path)
        if n is None:
            raise ValueError(f"{path}: no vertex element")
        if n == 0:
            raise ValueError(f"{path}: 'element vertex 0': the PLY holds no Gaussians")
        table = _table(f, path, fmt, n, props)

    def cols(names):
        missing = [nm for nm in names if nm not in table]
        if missing:
            raise ValueError(f"{path}: not a 3DGS PLY, missing properties {missing}")
        if not names:
            return np.zeros((n, 0), np.float32)
        return np.stack([np.asarray(table[nm], np.float32) for nm in names], axis=1)

    n_rest = sum(1 for nm in table if nm.startswith("f_rest_"))
    if n_rest % 3:
        raise ValueError(f"{path}: {n_rest} f_rest properties, not a multiple of 3")
    k = 1 + n_rest // 3
    if int(round(math.sqrt(k))) ** 2 != k:
        raise ValueError(f"{path}: {n_rest} f_rest properties give K={k} SH coefficients; "
                         "K must be (degree + 1)^2 (0, 9, 24 or 45 f_rest properties)")
    dc = cols(["f_dc_0", "f_dc_1", "f_dc_2"])
    rest = cols([f"f_rest_{i}" for i in range(n_rest)]).reshape(n, 3, k - 1)
    sh = np.concatenate([dc[:, None, :], np.transpose(rest, (0, 2, 1))], axis=1)
    g = GaussianPly(
        means=cols(["x", "y", "z"]),
        quats=cols(["rot_0", "rot_1", "rot_2", "rot_3"]),
        log_scales=cols(["scale_0", "scale_1", "scale_2"]),
        logit_opacities=cols(["opacity"])[:, 0],
        sh=np.ascontiguousarray(sh))
    if not drop_invalid:
        return g
    bad = invalid_gaussians(*g)
    if bad.any():
        if bad.all():
            raise ValueError(f"{path}: none of the {n} Gaussians is valid (every one has a "
                             "non-finite value or a log-scale > "
                             f"{MAX_LOG_SCALE:g})")
        (warn or warn_default)(
            f"{path}: dropped {int(bad.sum())} of {n} Gaussians with non-finite values or "
            f"log-scales > {MAX_LOG_SCALE:g} (first: index {int(np.flatnonzero(bad)[0])})")
        g = GaussianPly(*(a[~bad] for a in g))
    return g
