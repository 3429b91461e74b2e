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

import os
from typing import NamedTuple

import numpy as np


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
            np.transpose(sh[:, 1:, :], (0, 2, 1)).reshape(n, -1),
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


def read_ply(path) -> GaussianPly:
    """Read a 3DGS PLY (binary little/big endian or ascii; any property order)."""
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise ValueError(f"{path}: not a PLY file")
        fmt, n, props, in_vertex = None, None, [], False
        while True:
            line = f.readline()
            if not line:
                raise ValueError(f"{path}: PLY header has no end_header")
            tok = line.decode("ascii", "replace").split()
            if not tok:
                continue
            if tok[0] == "format":
                fmt = tok[1]
            elif tok[0] == "element":
                in_vertex = tok[1] == "vertex"
                if in_vertex:
                    n = int(tok[2])
                elif n is None:
                    raise ValueError(f"{path}: elements before 'vertex' are not supported")
            elif tok[0] == "property" and in_vertex:
                if tok[1] == "list":
                    raise ValueError(f"{path}: list properties in 'vertex' are not supported")
                if tok[1] not in _PLY_TYPES:
                    raise ValueError(f"{path}: unknown PLY property type {tok[1]!r}")
                props.append((tok[2], _PLY_TYPES[tok[1]]))
            elif tok[0] == "end_header":
                break
        if n is None:
            raise ValueError(f"{path}: no vertex element")
        if fmt == "ascii":
            arr = np.loadtxt(f, dtype=np.float64, max_rows=n, ndmin=2)
            table = {nm: arr[:, i] for i, (nm, _) in enumerate(props)}
        elif fmt in ("binary_little_endian", "binary_big_endian"):
            end = "<" if fmt == "binary_little_endian" else ">"
            dtype = np.dtype([(nm, end + t) for nm, t in props])
            raw = f.read(dtype.itemsize * n)
            if len(raw) < dtype.itemsize * n:
                raise ValueError(f"{path}: file truncated ({len(raw)} of "
                                 f"{dtype.itemsize * n} data bytes)")
            rec = np.frombuffer(raw, dtype=dtype, count=n)
            table = {nm: rec[nm] for nm, _ in props}
        else:
            raise ValueError(f"{path}: unknown PLY format {fmt!r}")

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
    dc = cols(["f_dc_0", "f_dc_1", "f_dc_2"])
    rest = cols([f"f_rest_{i}" for i in range(n_rest)]).reshape(n, 3, k - 1)
    sh = np.concatenate([dc[:, None, :], np.transpose(rest, (0, 2, 1))], axis=1)
    return GaussianPly(
        means=cols(["x", "y", "z"]),
        quats=cols(["rot_0", "rot_1", "rot_2", "rot_3"]),
        log_scales=cols(["scale_0", "scale_1", "scale_2"]),
        logit_opacities=cols(["opacity"])[:, 0],
        sh=np.ascontiguousarray(sh))
