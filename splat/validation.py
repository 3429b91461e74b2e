"""Checks of user input shared by the scene loaders, the PLY reader and the ``splat`` CLI.

Every check raises ``ValueError`` (or ``FileNotFoundError``) with a one-line message that
names the file, argument or index, what was found and what was expected, so that the CLI
can print it as ``splat: error: ...`` and exit with status 2. Nothing here imports JAX.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import warnings
import zipfile

import numpy as np

# A camera's rotation block may deviate this much from orthonormal (|R^T R - I|, max entry):
# transforms.json files are often written with ~7 significant digits.
ROTATION_TOL = 1e-3
# fx / fy of real cameras is ~1 (square pixels); anamorphic lenses go up to a 2x squeeze.
MAX_PIXEL_ASPECT = 2.0
# Largest log-scale whose squared scale (the covariance) is finite in float32:
# exp(2 * 44) = 1.6e38 < 3.4e38.
MAX_LOG_SCALE = 44.0


def warn_default(msg: str) -> None:
    """The loaders' default ``warn``: a Python warning (the CLI prints instead)."""
    warnings.warn(msg, stacklevel=3)


# ------------------------------------------------------------------ files


def require_file(path, what: str = "file") -> str:
    """``path`` as str if it is an existing regular file, else FileNotFoundError."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such {what}")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: is a directory, expected a {what}")
    return path


def read_json(path) -> object:
    """Parse a JSON file; a syntax error names the file, line and column."""
    path = require_file(path, "JSON file")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}:{e.colno}: invalid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None


def open_npz(path, what: str = ".npz file"):
    """``np.load`` of an .npz archive (no pickles), with errors that say what the file is.

    numpy's own message for a file that is not a zip archive is "Cannot load file
    containing pickled data", which misleads; here the first bytes are checked first.
    """
    path = require_file(path, what)
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith(b"\x93NUMPY"):
        raise ValueError(f"{path}: is a single-array .npy file, expected a {what} "
                         "(a zip archive written by numpy.savez)")
    if not head.startswith(b"PK"):
        raise ValueError(f"{path}: not a {what} (expected a zip archive written by "
                         f"numpy.savez; the file starts with {head[:4]!r})")
    try:
        return np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: damaged {what} ({e})") from None


def npz_array(z, key: str, path, what: str = ".npz file"):
    """``z[key]`` with one-line errors for a missing key, a truncated member or pickles."""
    if key not in z.files:
        raise ValueError(f"{path}: {what} has no array {key!r} (it has {sorted(z.files)})")
    try:
        return z[key]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: array {key!r} cannot be read ({e})") from None


def prepare_out_dir(path, flag: str = "--out") -> str:
    """Create the output folder ``path`` and check that a file can be written into it.

    Done before any work, so that a long run never fails at the end because of a typo or
    a read-only location. Returns the path.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag} {path}: exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".splat_write_test_{os.getpid()}")
        with open(probe, "wb") as f:
            f.write(b"ok")
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None
    return path


# ------------------------------------------------------------------ cameras


def check_image_size(width, height, where: str) -> tuple[int, int]:
    """(width, height) as ints; both must be positive integers."""
    try:
        w, h = float(width), float(height)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: image size must be numbers, got {width!r} x {height!r}") \
            from None
    if not (math.isfinite(w) and math.isfinite(h) and w >= 1 and h >= 1
            and w == int(w) and h == int(h)):
        raise ValueError(f"{where}: image size must be positive integers, got {width} x {height}")
    return int(w), int(h)


def check_aspect(declared_wh, actual_wh, where: str) -> None:
    """The image file's aspect ratio must match the declared camera size.

    Intrinsics are rescaled by actual / declared size per axis; with a different aspect
    (e.g. a portrait image described as landscape) that would silently turn square
    pixels into stretched ones. Integer downscaling rounds each side down, hence the
    tolerance of about one pixel per side.
    """
    dw, dh = (float(v) for v in declared_wh)
    aw, ah = (float(v) for v in actual_wh)
    found, want = aw / ah, dw / dh
    tol = 1.5 / aw + 1.5 / ah + 1e-3
    if abs(found / want - 1) > tol:
        raise ValueError(f"{where}: image is {int(aw)}x{int(ah)} (aspect {found:.3f}) but the "
                         f"camera says {dw:g}x{dh:g} (aspect {want:.3f}); are w/h swapped?")


def check_intrinsics(K, width: int, height: int, where: str) -> None:
    """A pinhole K [3, 3] in pixels of a ``width`` x ``height`` image.

    fx, fy must be finite and > 0 (a zero focal length puts every point at the principal
    point), cx, cy finite, and fx / fy must be that of real pixels: within
    [1 / MAX_PIXEL_ASPECT, MAX_PIXEL_ASPECT], and not equal to the image's aspect ratio
    (or its inverse) unless that is ~1, which is what focal lengths computed from the
    wrong image side (fl_y = fl_x * h / w, swapped w/h) look like.
    """
    K = np.asarray(K, np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"{where}: intrinsics must be a 3x3 matrix, got shape {K.shape}")
    if not np.isfinite(K).all():
        raise ValueError(f"{where}: intrinsics are not finite: {K.tolist()}")
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if not (fx > 0 and fy > 0):
        raise ValueError(f"{where}: focal lengths must be > 0 pixels, got fx={fx:g}, fy={fy:g}")
    ratio = fx / fy
    if not 1 / MAX_PIXEL_ASPECT <= ratio <= MAX_PIXEL_ASPECT:
        raise ValueError(f"{where}: fx/fy = {fx:g}/{fy:g} = {ratio:.3f}, expected about 1 "
                         "(square pixels)")
    aspect = width / height
    if abs(math.log(aspect)) > math.log(1.1) and abs(math.log(ratio)) > math.log(1.1):
        for a, name in ((aspect, "width/height"), (1 / aspect, "height/width")):
            if abs(math.log(ratio / a)) < 0.02:
                raise ValueError(
                    f"{where}: fx/fy = {fx:g}/{fy:g} = {ratio:.3f} equals the image's {name} "
                    f"({width}x{height}); expected about 1 (square pixels): were the focal "
                    "lengths computed from the wrong image side?")


def check_viewmat(viewmat, where: str) -> None:
    """A world-to-camera 4x4 (or 3x4) rigid transform: finite, rotation block orthonormal
    with determinant +1 (``ROTATION_TOL``), last row (0, 0, 0, 1)."""
    m = np.asarray(viewmat, np.float64)
    if m.shape not in ((4, 4), (3, 4)):
        raise ValueError(f"{where}: camera pose must be 4x4 or 3x4, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError(f"{where}: camera pose is not finite (NaN or Inf entries)")
    r = m[:3, :3]
    err = float(np.abs(r.T @ r - np.eye(3)).max())
    if err > ROTATION_TOL or np.linalg.det(r) < 0:
        raise ValueError(f"{where}: camera rotation is not a rotation matrix "
                         f"(|R^T R - I| = {err:.2g}, det {np.linalg.det(r):.3g})")
    if m.shape == (4, 4) and np.abs(m[3] - [0, 0, 0, 1]).max() > 1e-6:
        raise ValueError(f"{where}: last row of the camera pose must be 0 0 0 1, got "
                         f"{m[3].tolist()}")


def check_cameras(viewmats, Ks, width: int, height: int, where: str, names=None) -> None:
    """Every camera of viewmats [M, 4, 4] and Ks [M, 3, 3] (see :func:`check_viewmat` and
    :func:`check_intrinsics`); errors name the camera index (and image name)."""
    vm = np.asarray(viewmats)
    K = np.asarray(Ks)
    if vm.ndim != 3 or vm.shape[1:] != (4, 4):
        raise ValueError(f"{where}: viewmats must be [M, 4, 4], got {vm.shape}")
    if K.ndim != 3 or K.shape[1:] != (3, 3):
        raise ValueError(f"{where}: Ks must be [M, 3, 3], got {K.shape}")
    if len(vm) != len(K):
        raise ValueError(f"{where}: {len(vm)} viewmats but {len(K)} Ks")
    for i in range(len(vm)):
        label = f"{where} camera {i}" + (f" ({names[i]})" if names is not None else "")
        check_viewmat(vm[i], label)
        check_intrinsics(K[i], width, height, label)


# ------------------------------------------------------------------ Gaussians and points


def invalid_gaussians(means, quats, log_scales, logit_opacities, sh) -> np.ndarray:
    """bool [N]: Gaussians that cannot be rendered meaningfully.

    A Gaussian is invalid when any of its values is NaN or infinite, or a log-scale
    exceeds ``MAX_LOG_SCALE`` (its covariance would overflow float32). Negative
    log-scales (scales < 1) and any finite logit opacity are valid.
    """
    n = np.asarray(means).shape[0]
    bad = np.zeros(n, bool)
    for a in (means, quats, log_scales, logit_opacities, sh):
        a = np.asarray(a).reshape(n, -1)
        bad |= ~np.isfinite(a).all(axis=1)
    with np.errstate(invalid="ignore"):
        bad |= (np.asarray(log_scales).reshape(n, -1) > MAX_LOG_SCALE).any(axis=1)
    return bad


def drop_invalid_points(points, colors, where: str, warn=warn_default):
    """(points, colors) without the rows whose point or colour is not finite, with one
    warning saying how many were dropped; an error if none is left."""
    points = np.asarray(points, np.float64)
    colors = np.asarray(colors)
    ok = np.isfinite(points).all(axis=1) & np.isfinite(colors.astype(np.float64)).all(axis=1)
    if ok.all():
        return points, colors
    n_bad = int((~ok).sum())
    if not ok.any():
        raise ValueError(f"{where}: all {len(points)} points are non-finite")
    warn(f"{where}: dropped {n_bad} of {len(points)} points with non-finite coordinates "
         f"or colours (first: index {int(np.flatnonzero(~ok)[0])})")
    return points[ok], colors[ok]


# ------------------------------------------------------------------ memory


def available_memory_bytes() -> int:
    """Memory the process can still use: MemAvailable (Linux), else physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover (non-POSIX)
        return 1 << 62


def render_bytes(n_views: int, width: int, height: int, *, n_gaussians: int = 0,
                 backend: str = "pallas", isect_capacity: int = 0, tile_size: int = 16) -> int:
    """A lower bound on the memory (bytes) of rendering ``n_views`` images of
    width x height: the float32 RGB outputs (kept for all views), ~16 float32 per pixel of
    one view in flight (colour, alpha, transmittance, last index, pixel grid), the
    per-Gaussian projection (~64 bytes each), and for ``backend="reference"`` the
    (intersection, pixel of its tile) pairs it materialises (~64 bytes each; the issue's
    31 GB at 1.6M intersections is 76 bytes each)."""
    px = int(width) * int(height)
    b = n_views * px * 3 * 4 + px * 16 * 4 + 64 * int(n_gaussians)
    if backend == "reference":
        b += int(isect_capacity) * int(tile_size) ** 2 * 64
    return b


def check_memory(nbytes: int, what: str, hint: str = "") -> None:
    """Refuse (ValueError) work whose memory lower bound exceeds the available memory."""
    avail = available_memory_bytes()
    if nbytes > avail:
        raise ValueError(f"{what} needs at least {nbytes / 2**30:.1f} GiB, only "
                         f"{avail / 2**30:.1f} GiB available" + (f"; {hint}" if hint else ""))


# ------------------------------------------------------------------ argparse types


def _int_type(lo: int, what: str):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be {what}, got {v}")
        return v
    parse.__name__ = "integer"
    return parse


positive_int = _int_type(1, "a positive integer (>= 1)")
nonnegative_int = _int_type(0, "a non-negative integer (>= 0)")
