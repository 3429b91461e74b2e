"""Every check of splat's inputs and sizes: cameras, Gaussians, image sizes, memory.

One rule per thing, used by the rasteriser, the scene loaders, the PLY reader, training
and the ``splat`` CLI:

* Cameras. A camera is *renderable* when its pose is finite with last row (0, 0, 0, 1),
  its intrinsics are finite and both focal lengths are > 0 (:func:`pose_finite`,
  :func:`pose_affine`, :func:`intrinsics_finite`, :func:`focal_positive`, combined in
  :func:`camera_valid`): that is what
  :func:`splat.rasterization` requires (it raises outside jit, :func:`check_render_cameras`,
  and flags the camera inside jit). Cameras read from files must also be rigid, with
  square-ish pixels (:func:`check_viewmat`, :func:`check_intrinsics`,
  :func:`check_cameras`), which are the renderable conditions plus those.
* Gaussians: :func:`nonfinite_gaussians` (the renderer's flag), :func:`invalid_gaussians`
  (the same plus a float32 covariance overflow, for stored log-scales).
* Sizes: :func:`check_render_size` (int32 pixel indices and a memory lower bound,
  :func:`render_bytes`) before anything is allocated.

Errors are ``ValueError`` with a one-line message naming the file, argument or index,
what was found and what was expected, so that the CLI prints it as ``splat: error: ...``.
The camera and Gaussian conditions are jnp functions: jit-safe, and on numpy input they
evaluate eagerly.
"""

from __future__ import annotations

import math
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from .constants import MAX_PIXELS

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


# ------------------------------------------------------------------ cameras


def pose_finite(viewmats):
    """bool [...]: the world-to-camera matrices viewmats [..., R, 4] are all finite."""
    return jnp.all(jnp.isfinite(jnp.asarray(viewmats)), axis=(-2, -1))


def intrinsics_finite(Ks):
    """bool [...]: the pinhole matrices Ks [..., 3, 3] (pixels) are all finite."""
    return jnp.all(jnp.isfinite(jnp.asarray(Ks)), axis=(-2, -1))


def focal_positive(Ks):
    """bool [...]: both focal lengths fx = K[0, 0], fy = K[1, 1] of Ks [..., 3, 3] are > 0
    (a zero focal length puts every point at the principal point)."""
    Ks = jnp.asarray(Ks)
    return (Ks[..., 0, 0] > 0) & (Ks[..., 1, 1] > 0)


def _now(condition, *arrays) -> np.ndarray:
    """numpy value of ``condition(*arrays)`` on concrete arrays, also while a function
    that closes over them is being traced (where jnp operations would be staged)."""
    with jax.ensure_compile_time_eval():
        return np.asarray(condition(*arrays))


def pose_affine(viewmats):
    """bool [...]: the last row of viewmats [..., 4, 4] is (0, 0, 0, 1) (within 1e-6): the
    renderer uses the top 3 x 4 block only, so any other last row would be ignored."""
    vm = jnp.asarray(viewmats)
    return jnp.all(jnp.abs(vm[..., 3, :] - jnp.asarray([0, 0, 0, 1], vm.dtype)) <= 1e-6, axis=-1)


def camera_valid(viewmats, Ks):
    """bool [C]: renderable cameras of viewmats [C, 4, 4] and Ks [C, 3, 3] (jit-safe): finite,
    last pose row (0, 0, 0, 1), focal lengths > 0."""
    return pose_finite(viewmats) & pose_affine(viewmats) & intrinsics_finite(Ks) & focal_positive(Ks)


def check_render_cameras(viewmats, Ks) -> None:
    """Raise ValueError naming the first camera of viewmats [C, 4, 4] / Ks [C, 3, 3] that
    is not renderable (:func:`camera_valid`); concrete arrays only."""
    vm, K = np.asarray(viewmats), np.asarray(Ks)
    bad = np.flatnonzero(~_now(pose_finite, vm))
    if bad.size:
        raise ValueError(f"viewmats[{bad[0]}] is not finite (NaN or Inf entries); "
                         f"{bad.size} of {len(vm)} cameras are")
    bad = np.flatnonzero(~_now(pose_affine, vm))
    if bad.size:
        raise ValueError(f"viewmats[{bad[0]}]: last row must be 0 0 0 1 (a rigid world-to-camera "
                         f"transform), got {vm[bad[0], 3].tolist()}")
    bad = np.flatnonzero(~_now(intrinsics_finite, K))
    if bad.size:
        raise ValueError(f"Ks[{bad[0]}] is not finite: {K[bad[0]].tolist()}")
    bad = np.flatnonzero(~_now(focal_positive, K))
    if bad.size:
        i = bad[0]
        raise ValueError(f"Ks[{i}]: focal lengths must be > 0 pixels, got fx={K[i, 0, 0]:g}, "
                         f"fy={K[i, 1, 1]:g}")


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

    K must be renderable (finite, fx, fy > 0: :func:`intrinsics_finite`,
    :func:`focal_positive`), and fx / fy must be that of real pixels: within
    [1 / MAX_PIXEL_ASPECT, MAX_PIXEL_ASPECT], and not equal to the image's aspect ratio
    (or its inverse) unless that is ~1, which is what focal lengths computed from the
    wrong image side (fl_y = fl_x * h / w, swapped w/h) look like.
    """
    K = np.asarray(K, np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"{where}: intrinsics must be a 3x3 matrix, got shape {K.shape}")
    if not _now(intrinsics_finite, K):
        raise ValueError(f"{where}: intrinsics are not finite: {K.tolist()}")
    fx, fy = K[0, 0], K[1, 1]
    if not _now(focal_positive, K):
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
    """A world-to-camera 4x4 (or 3x4) rigid transform: finite (:func:`pose_finite`),
    rotation block orthonormal with determinant +1 (``ROTATION_TOL``), last row
    (0, 0, 0, 1)."""
    m = np.asarray(viewmat, np.float64)
    if m.shape not in ((4, 4), (3, 4)):
        raise ValueError(f"{where}: camera pose must be 4x4 or 3x4, got shape {m.shape}")
    if not _now(pose_finite, m):
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


def nonfinite_gaussians(means, quats, scales, opacities, colors):
    """bool [N]: Gaussians with a NaN or infinite value (jit-safe).

    means [N, 3], quats [N, 4], scales [N, 3] (or log-scales), opacities [N] (or logits),
    colors [N, ...] (features or SH coefficients; per-camera colours [C, N, D] must be
    moved to [N, C, D] first).
    """
    n = jnp.shape(means)[0]
    bad = jnp.zeros((n,), bool)
    for a in (means, quats, scales, opacities, colors):
        a = jnp.asarray(a)  # reshaped with an explicit width: (0, -1) is ambiguous for N = 0
        bad = bad | ~jnp.all(jnp.isfinite(jnp.reshape(a, (n, math.prod(a.shape[1:])))), axis=-1)
    return bad


def invalid_gaussians(means, quats, log_scales, logit_opacities, sh) -> np.ndarray:
    """bool [N] numpy: stored Gaussians that cannot be rendered meaningfully.

    Invalid: :func:`nonfinite_gaussians`, or a log-scale above ``MAX_LOG_SCALE`` (its
    covariance would overflow float32). Negative log-scales (scales < 1) and any finite
    logit opacity are valid. Arguments as in a PLY file: means [N, 3], quats [N, 4],
    log_scales [N, 3], logit_opacities [N], sh [N, K, 3].
    """
    n = np.asarray(means).shape[0]
    bad = _now(nonfinite_gaussians, means, quats, log_scales, logit_opacities, sh).copy()
    with np.errstate(invalid="ignore"):
        bad |= (np.asarray(log_scales).reshape(n, -1) > MAX_LOG_SCALE).any(axis=1)
    return bad


def _concrete(x):
    """numpy value of x, or None when x is None or a tracer (inside jit/grad/vmap)."""
    if x is None:
        return None
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def is_concrete(x) -> bool:
    """Whether the array x has a value here (not a tracer inside jit/grad/vmap)."""
    return _concrete(x) is not None


def check_finite(**arrays) -> None:
    """Raise ValueError naming the first of ``arrays`` (name=array) with a NaN or
    infinite value; arrays that are None or traced are skipped."""
    for name, arr in arrays.items():
        val = _concrete(arr)
        if val is None:
            continue
        bad = ~np.isfinite(val)
        if bad.any():
            idx = np.argwhere(bad)[0].tolist()
            raise ValueError(
                f"{name} contains {int(bad.sum())} non-finite value(s) (first at index {idx}); "
                "with validate=False such Gaussians/cameras are culled instead")


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


def check_render_size(n_views: int, width: int, height: int, *, n_gaussians: int = 0,
                      backend: str = "pallas", isect_capacity: int = 0, tile_size: int = 16,
                      extra_bytes: int = 0, what: str = "rendering", hint: str = "") -> None:
    """Refuse (ValueError) a render that cannot be indexed or held in memory, before
    anything is allocated; sizes only, so it also runs while tracing.

    width x height must fit int32 pixel indices (:data:`splat.constants.MAX_PIXELS`), and
    :func:`render_bytes` plus ``extra_bytes`` must not exceed the available memory.
    ``what`` names the work in the messages, ``hint`` says what to change.
    """
    if width * height > MAX_PIXELS:
        raise ValueError(f"{what}: width x height = {width}x{height} = {width * height} "
                         f"pixels, more than the {MAX_PIXELS} one image can index (int32)")
    need = render_bytes(n_views, width, height, n_gaussians=n_gaussians, backend=backend,
                        isect_capacity=isect_capacity, tile_size=tile_size) + extra_bytes
    avail = available_memory_bytes()
    if need > avail:
        raise ValueError(f"{what} needs at least {need / 2**30:.1f} GiB, only "
                         f"{avail / 2**30:.1f} GiB available" + (f"; {hint}" if hint else ""))


def check_rendered(imgs, what: str, warn=warn_default) -> None:
    """Rendered images [V, H, W, 3] must be finite before they are written (RuntimeError
    otherwise: a renderer bug, not a user error); ``warn`` says so when every view came
    out black (no Gaussian visible from these cameras). ``what`` names the render."""
    imgs = np.asarray(imgs)
    if not np.isfinite(imgs).all():
        raise RuntimeError(f"{what}: the render has {int((~np.isfinite(imgs)).sum())} "
                           "non-finite pixel values")
    if imgs.size and not (imgs > 0.5 / 255).any():
        warn(f"{what}: every rendered view is black: no Gaussian is visible from these "
             "cameras")
