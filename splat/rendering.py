"""Public entry point :func:`rasterization` (exported as ``splat.rasterization``),
following gsplat's argument names: input checks, capacity handling and the pipeline
projection -> SH -> tiling -> compositing backend."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from .raster import reference
from .checks import (camera_valid, check_finite, check_render_cameras, check_render_size,
                     is_concrete, nonfinite_gaussians, pose_finite)
from .projection import project_gaussians, quat_scale_to_covar
from .sh import num_sh_bases, sh_to_colors
from .tiling import count_intersections, default_capacity, intersect, next_pow2, tile_grid

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
RASTERIZE_MODES = ("classic", "antialiased")
BACKENDS = ("pallas", "reference")


def _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                  sh_degree, tile_size, backgrounds, render_mode, rasterize_mode, backend,
                  means2d_probe, absgrad_probe, pallas_gpu_backend, pallas_autodiff):
    def shape_err(name, arr, want):
        raise ValueError(f"{name} must have shape {want}, got {tuple(arr.shape)}")

    if means.ndim != 2 or means.shape[-1] != 3:
        shape_err("means", means, "[N, 3]")
    n = means.shape[0]
    if quats.shape != (n, 4):
        shape_err("quats", quats, f"[{n}, 4]")
    if scales.shape != (n, 3):
        shape_err("scales", scales, f"[{n}, 3]")
    if opacities.shape != (n,):
        shape_err("opacities", opacities, f"[{n}]")
    if viewmats.ndim != 3 or viewmats.shape[1:] != (4, 4):
        shape_err("viewmats", viewmats, "[C, 4, 4]")
    c = viewmats.shape[0]
    if Ks.shape != (c, 3, 3):
        shape_err("Ks", Ks, f"[{c}, 3, 3]")
    if sh_degree is None:
        if not (colors.ndim == 2 and colors.shape[0] == n) and not (
                colors.ndim == 3 and colors.shape[:2] == (c, n)):
            shape_err("colors (sh_degree=None)", colors, f"[{n}, D] or [{c}, {n}, D]")
    else:
        if not 0 <= sh_degree <= 3:
            raise ValueError(f"sh_degree must be None or 0..3, got {sh_degree}")
        if colors.ndim != 3 or colors.shape[0] != n or colors.shape[2] != 3 or \
                colors.shape[1] < num_sh_bases(sh_degree):
            shape_err(f"colors (sh_degree={sh_degree})", colors,
                      f"[{n}, K>={num_sh_bases(sh_degree)}, 3]")
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    if rasterize_mode not in RASTERIZE_MODES:
        raise ValueError(f"rasterize_mode must be one of {RASTERIZE_MODES}, got {rasterize_mode!r}")
    if pallas_gpu_backend not in ("triton", "mosaic"):
        raise ValueError(f"pallas_gpu_backend must be 'triton' or 'mosaic', got {pallas_gpu_backend!r}")
    if pallas_autodiff not in ("reverse", "forward"):
        raise ValueError(f"pallas_autodiff must be 'reverse' or 'forward', got {pallas_autodiff!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    for name, probe in (("means2d_probe", means2d_probe), ("absgrad_probe", absgrad_probe)):
        if probe is not None and probe.shape != (c, n, 2):
            shape_err(name, probe, f"[{c}, {n}, 2]")
    if backgrounds is not None:
        d_col = 0 if render_mode in ("D", "ED") else (
            3 if sh_degree is not None else colors.shape[-1])
        if backgrounds.shape not in ((c, d_col), (d_col,)):
            shape_err("backgrounds", backgrounds, f"[{c}, {d_col}] or [{d_col}]")


def _check_numbers(width, height, tile_size, near_plane, far_plane, radius_clip, eps2d):
    """``(width, height, tile_size, {near_plane, far_plane, radius_clip, eps2d})`` as ints and
    floats; ValueError naming the argument for a fractional size (31.7 was rendered as 31), a
    near plane <= 0 (Gaussians behind the camera were drawn), far <= near, eps2d < 0 (every
    Gaussian vanished) or a non-finite value (far_plane may be inf)."""
    sizes = []
    for name, v in (("width", width), ("height", height), ("tile_size", tile_size)):
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a positive integer (pixels), got {v!r}") from None
        if not (math.isfinite(f) and f >= 1 and f == int(f)):
            raise ValueError(f"{name} must be a positive integer (pixels), got {v!r}")
        sizes.append(int(f))
    try:
        near, far, clip, eps = (float(v) for v in (near_plane, far_plane, radius_clip, eps2d))
    except (TypeError, ValueError):
        raise ValueError("near_plane, far_plane, radius_clip and eps2d must be Python numbers, got "
                         f"{near_plane!r}, {far_plane!r}, {radius_clip!r}, {eps2d!r}") from None
    if not (math.isfinite(near) and near > 0):
        raise ValueError(f"near_plane must be a finite depth > 0 (camera units; Gaussians nearer are culled), "
                         f"got {near_plane!r}")
    if not far > near:
        raise ValueError(f"far_plane must be > near_plane = {near:g}, got {far_plane!r}")
    if not math.isfinite(clip):
        raise ValueError(f"radius_clip must be finite (pixels), got {radius_clip!r}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps2d must be a finite number >= 0 (pixels^2 added to the 2D covariance), got {eps2d!r}")
    return (*sizes, dict(near_plane=near, far_plane=far, radius_clip=clip, eps2d=eps))


def _check_size(n_cameras, n_gaussians, width, height, n_chan, backend, capacity, tile_size):
    """:func:`splat.checks.check_render_size` for one call: its outputs (n_chan colour
    channels and alpha, float32) count too."""
    check_render_size(
        n_cameras, width, height, n_gaussians=n_gaussians, backend=backend,
        isect_capacity=capacity, tile_size=tile_size,
        extra_bytes=n_cameras * width * height * (n_chan + 1) * 4,
        what=f"rendering {n_cameras} view(s) of {width}x{height} with {n_gaussians} Gaussians"
        + (f" and {capacity} intersections" if backend == "reference" else ""))


def rasterization(
    means,
    quats,
    scales,
    opacities,
    colors,
    viewmats,
    Ks,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    tile_size: int = 16,
    backgrounds=None,
    render_mode: str = "RGB",
    rasterize_mode: str = "classic",
    backend: str = "pallas",
    means2d_probe=None,
    absgrad_probe=None,
    isect_capacity: int | None = None,
    validate: bool = False,
    interpret: bool | None = None,
    pallas_gpu_backend: str = "triton",
    pallas_autodiff: str = "reverse",
):
    """Render N 3D Gaussians into C pinhole cameras (gsplat's ``rasterization`` API).

    Args:
      means: [N, 3] world positions. quats: [N, 4] rotations (w, x, y, z), normalised
        here (zero quaternions act as identity). scales: [N, 3] standard deviations (world
        units). opacities: [N] in [0, 1].
      colors: [N, D] or [C, N, D] features when ``sh_degree`` is None, else SH
        coefficients [N, K, 3] with K >= (sh_degree + 1)^2; SH colours are
        max(SH(view dir) + 0.5, 0) as in gsplat.
      viewmats: [C, 4, 4] world-to-camera (OpenCV: x right, y down, z forward).
      Ks: [C, 3, 3] pinhole intrinsics in pixels. width, height: image size (positive
        integers; a fractional size raises ValueError).
        Outside jit, cameras with a non-finite pose or intrinsics, a pose whose last row is
        not (0, 0, 0, 1) or a focal length <= 0 raise ValueError (naming the camera); inside
        jit such a camera renders nothing
        and is flagged in ``meta["invalid_cameras"]``. A width x height beyond int32
        pixel indices, or outputs that cannot fit in the available memory, raise
        ValueError before anything is allocated (inside jit too: sizes are static).
      near_plane, far_plane: Gaussians whose centre depth is outside (near, far) are culled
        (0 < near < far; far may be inf).
      radius_clip: Gaussians whose pixel radius is <= this are culled.
      eps2d: added to the 2D covariance diagonal (pixels^2, >= 0) (low-pass filter).
      tile_size: tile edge in pixels (a positive integer).
      backgrounds: [C, D] or [D] colour added with weight (1 - alpha) to the colour
        channels (not to depth channels).
      render_mode: "RGB" (the D features), "D" (accumulated depth), "ED" (expected depth =
        accumulated depth / alpha), "RGB+D", "RGB+ED" (depth appended as last channel).
      rasterize_mode: "classic" or "antialiased" (opacity times gsplat's compensation
        sqrt(max(0.005^2, det / det_eps2d))).
      backend: "pallas" (custom kernels, interpreted on CPU) or "reference" (plain JAX).
      means2d_probe: optional [C, N, 2] added to the projected means; pass zeros and its
        gradient is dL/dmeans2d in pixels.
      absgrad_probe: optional [C, N, 2]; its gradient is gsplat's absgrad: for each camera
        and Gaussian, sum over pixels of the absolute value of that pixel's contribution to
        dL/dmeans2d, per component. Its value is ignored.
      isect_capacity: static size of the tile-intersection buffer. None: measured when
        inputs are concrete, else :func:`default_capacity`. If the true count exceeds it,
        outside jit the call is repeated with enough capacity; inside jit (or grad/vmap)
        the extra intersections are dropped and ``meta["overflow"]`` is True.
      validate: raise ValueError on non-finite Gaussian parameters (when they are
        concrete). Without it such Gaussians (a NaN or Inf in any parameter, colours
        included) are culled, never produce NaN, and are flagged in
        ``meta["invalid_gaussians"]``.
      interpret: Pallas interpret mode; default: True unless running on a GPU.
      pallas_gpu_backend: "triton" (default) or "mosaic": Pallas GPU backend when compiled.
      pallas_autodiff: which derivatives the Pallas compositor supports (JAX takes one
        custom rule per function): "reverse" (default: ``jax.grad``/``vjp``, training) or
        "forward" (``jax.jvp``/``jacfwd``, e.g. an image's Jacobian with respect to a
        camera pose: a tangent kernel beside the forward kernel; no reverse mode). The
        reference backend supports both either way.

    Returns:
      render_colors [C, H, W, D'] (D' = D, 1 or D + 1 by render_mode), render_alphas
      [C, H, W, 1] and ``meta`` (dict): means2d [C, N, 2] (probe included), depths [C, N],
      conics [C, N, 3], radii [C, N, 2] int32, opacities [C, N] (compensated if
      antialiased), compensations [C, N], tiles_per_gauss [C, N], isect_count, overflow,
      invalid_cameras [C] bool, invalid_gaussians [N] bool,
      isect_capacity, width, height, tile_size, tile_width, tile_height, n_cameras.
    """
    means = jnp.asarray(means)
    if not jnp.issubdtype(means.dtype, jnp.floating):
        means = means.astype(jnp.float32)
    dt = means.dtype
    cast = lambda x: None if x is None else jnp.asarray(x).astype(dt)  # noqa: E731
    quats, scales, opacities, colors, viewmats, Ks = map(
        cast, (quats, scales, opacities, colors, viewmats, Ks))
    backgrounds, means2d_probe, absgrad_probe = map(
        cast, (backgrounds, means2d_probe, absgrad_probe))
    width, height, tile_size, planes = _check_numbers(width, height, tile_size, near_plane, far_plane,
                                                      radius_clip, eps2d)
    _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                  sh_degree, tile_size, backgrounds, render_mode, rasterize_mode, backend,
                  means2d_probe, absgrad_probe, pallas_gpu_backend, pallas_autodiff)
    if is_concrete(viewmats) and is_concrete(Ks):
        check_render_cameras(viewmats, Ks)
    if validate:
        check_finite(means=means, quats=quats, scales=scales, opacities=opacities,
                      colors=colors, viewmats=viewmats, Ks=Ks, backgrounds=backgrounds)
    if interpret is None:
        interpret = jax.default_backend() != "gpu"

    c, n = viewmats.shape[0], means.shape[0]
    static = dict(width=width, height=height, **planes, sh_degree=sh_degree, tile_size=tile_size,
                  render_mode=render_mode, antialiased=rasterize_mode == "antialiased",
                  backend=backend, interpret=bool(interpret),
                  pallas_gpu_backend=pallas_gpu_backend, pallas_autodiff=pallas_autodiff)
    args = (means, quats, scales, opacities, colors, viewmats, Ks, backgrounds,
            means2d_probe, absgrad_probe)

    concrete = all(is_concrete(a) for a in args if a is not None)
    if isect_capacity is not None and int(isect_capacity) < 1:
        raise ValueError(f"isect_capacity must be >= 1, got {isect_capacity}")
    n_chan = 1 if render_mode in ("D", "ED") else colors.shape[-1] + (
        1 if render_mode in ("RGB+D", "RGB+ED") else 0)
    size = functools.partial(_check_size, c, n, width, height, n_chan, backend,
                             tile_size=tile_size)
    size(capacity=0)
    if not concrete:
        cap = int(isect_capacity) if isect_capacity is not None else default_capacity(
            c, n, width, height, tile_size)
        size(capacity=cap)
        img, alpha, meta = _rasterize_impl(*args, capacity=cap, **static)
        return img, alpha, _static_meta(meta, cap, width, height, tile_size, c)

    if isect_capacity is not None:
        cap = int(isect_capacity)
    else:
        # Measure the exact count first (projection only, cheap) and round up to a power
        # of two so that scenes of similar size share one compilation.
        count = int(_count_jit(*args[:7], **{k: static[k] for k in _COUNT_STATIC}))
        cap = next_pow2(max(count, 1))
    size(capacity=cap)
    out = _rasterize_jit(*args, capacity=cap, **static)
    if bool(out[2]["overflow"]):
        cap = next_pow2(int(out[2]["isect_count"]))
        size(capacity=cap)
        out = _rasterize_jit(*args, capacity=cap, **static)
    img, alpha, meta = out
    return img, alpha, _static_meta(meta, cap, width, height, tile_size, c)


def _rasterize_impl(means, quats, scales, opacities, colors, viewmats, Ks, backgrounds,
                    means2d_probe, absgrad_probe, *, capacity, width, height, near_plane,
                    far_plane, radius_clip, eps2d, sh_degree, tile_size, render_mode,
                    antialiased, backend, interpret, pallas_gpu_backend, pallas_autodiff):
    dt = means.dtype
    c, n = viewmats.shape[0], means.shape[0]
    n_orig = n
    if n == 0:
        # One invisible Gaussian keeps every shape non-empty; sliced off below.
        means = jnp.zeros((1, 3), dt)
        quats = jnp.zeros((1, 4), dt).at[:, 0].set(1)
        scales = jnp.zeros((1, 3), dt)
        opacities = jnp.zeros((1,), dt)
        if sh_degree is not None:  # [N, K, 3]
            colors = jnp.zeros((1,) + colors.shape[1:], dt)
        elif colors.ndim == 2:  # [N, D]
            colors = jnp.zeros((1, colors.shape[1]), dt)
        else:  # [C, N, D]
            colors = jnp.zeros((c, 1, colors.shape[2]), dt)
        if means2d_probe is not None:
            means2d_probe = jnp.zeros((c, 1, 2), dt)
        if absgrad_probe is not None:
            absgrad_probe = jnp.zeros((c, 1, 2), dt)
        n = 1

    proj, viewmats_s, cam_ok = _project(means, quats, scales, opacities, viewmats, Ks,
                                        width, height, near_plane, far_plane, radius_clip,
                                        eps2d, antialiased)
    # flagged Gaussians (a NaN or Inf anywhere, colours included) are culled, not composited
    flagged = nonfinite_gaussians(
        means, quats, scales, opacities,
        # per-camera colours [C, N, D]: a Gaussian is invalid if any camera's is
        jnp.moveaxis(colors, 1, 0) if sh_degree is None and colors.ndim == 3 else colors)
    live = proj["valid"] & ~flagged[None, :]
    radii = jnp.where(live[..., None], proj["radii"], 0)

    if sh_degree is None:
        feats = colors if colors.ndim == 3 else jnp.broadcast_to(colors[None], (c,) + colors.shape)
    else:
        feats = sh_to_colors(sh_degree, colors, means, viewmats_s)
    feats = jnp.where(live[..., None] & jnp.isfinite(feats), feats, 0)
    depths = proj["depths"]
    if render_mode in ("D", "ED"):
        feats = depths[..., None]
    elif render_mode in ("RGB+D", "RGB+ED"):
        feats = jnp.concatenate([feats, depths[..., None]], axis=-1)

    means2d = proj["means2d"]
    if means2d_probe is not None:
        means2d = means2d + jnp.where(jnp.isfinite(means2d_probe), means2d_probe, 0)
    isect = intersect(means2d, radii, depths, tile_size=tile_size, width=width,
                      height=height, capacity=capacity)
    opac = jnp.where(live, proj["opacities"], 0)

    # Both backends take the same arguments; Pallas adds its compilation options.
    composite = dict(width=width, height=height, tile_size=tile_size,
                     absgrad_probe=absgrad_probe)
    if backend == "reference":
        img, alpha = reference.rasterize_tiles(means2d, proj["conics"], feats, opac, isect,
                                               **composite)
    else:
        from .raster import pallas  # imported on first use: loading Pallas takes a while
        img, alpha = pallas.rasterize_tiles(means2d, proj["conics"], feats, opac, isect,
                                            **composite, interpret=interpret,
                                            gpu_backend=pallas_gpu_backend,
                                            autodiff=pallas_autodiff)

    if render_mode in ("ED", "RGB+ED"):
        ed = img[..., -1:] / jnp.maximum(alpha, 1e-10)
        img = jnp.concatenate([img[..., :-1], ed], axis=-1)
    if backgrounds is not None and render_mode not in ("D", "ED"):
        bg = backgrounds if backgrounds.ndim == 2 else jnp.broadcast_to(backgrounds, (c,) + backgrounds.shape)
        bg = jnp.where(jnp.isfinite(bg), bg, 0)
        d_col = bg.shape[-1]
        col = img[..., :d_col] + (1 - alpha) * bg[:, None, None, :]
        img = jnp.concatenate([col, img[..., d_col:]], axis=-1)

    sl = (slice(None), slice(0, n_orig))
    meta = dict(
        means2d=means2d[sl], depths=depths[sl], conics=proj["conics"][sl], radii=radii[sl],
        opacities=opac[sl], compensations=proj["compensations"][sl],
        tiles_per_gauss=isect.tiles_per_gauss[sl], isect_count=isect.count,
        overflow=isect.overflow, invalid_cameras=~cam_ok, invalid_gaussians=flagged[:n_orig],
    )
    return img, alpha, meta


def _project(means, quats, scales, opacities, viewmats, Ks, width, height, near_plane,
             far_plane, radius_clip, eps2d, antialiased):
    """Projection with non-finite Gaussians and invalid cameras culled (radius 0).

    Returns (projection dict as :func:`project_gaussians` with ``valid``/``radii`` masked
    by the camera's validity, sanitised viewmats [C, 4, 4], camera_ok [C] bool).
    """
    finite = jnp.all(jnp.isfinite(scales), -1) & jnp.all(jnp.isfinite(quats), -1)
    covars = quat_scale_to_covar(jnp.where(finite[:, None], quats, 0),
                                 jnp.where(finite[:, None], scales, 0))
    cam_ok = camera_valid(viewmats, Ks)
    vm_ok = pose_finite(viewmats)
    viewmats = jnp.where(vm_ok[:, None, None], viewmats, jnp.eye(4, dtype=viewmats.dtype))
    proj = project_gaussians(
        means, covars, opacities, viewmats, Ks, width, height, near_plane=near_plane,
        far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d, antialiased=antialiased,
        valid_in=finite)
    # An invalid camera (non-finite pose or intrinsics, focal length <= 0) sees nothing.
    live = proj["valid"] & cam_ok[:, None]
    proj = dict(proj, valid=live, radii=jnp.where(live[..., None], proj["radii"], 0))
    return proj, viewmats, cam_ok


def _static_meta(meta, capacity, width, height, tile_size, n_cameras):
    tiles_x, tiles_y = tile_grid(width, height, tile_size)
    meta = dict(meta)
    meta.update(isect_capacity=capacity, width=width, height=height, tile_size=tile_size,
                tile_width=tiles_x, tile_height=tiles_y, n_cameras=n_cameras)
    return meta


_rasterize_jit = jax.jit(
    _rasterize_impl,
    static_argnames=("capacity", "width", "height", "near_plane", "far_plane", "radius_clip",
                     "eps2d", "sh_degree", "tile_size", "render_mode", "antialiased",
                     "backend", "interpret", "pallas_gpu_backend", "pallas_autodiff"))


_COUNT_STATIC = ("width", "height", "near_plane", "far_plane", "radius_clip", "eps2d",
                 "tile_size", "antialiased")


@functools.partial(jax.jit, static_argnames=_COUNT_STATIC)
def _count_jit(means, quats, scales, opacities, colors, viewmats, Ks, *, width, height,
               near_plane, far_plane, radius_clip, eps2d, tile_size, antialiased):
    """Exact number of tile intersections (same culling as the renderer)."""
    del colors
    if means.shape[0] == 0:
        return jnp.zeros((), jnp.int32)
    proj, _, _ = _project(means, quats, scales, opacities, viewmats, Ks, width, height,
                          near_plane, far_plane, radius_clip, eps2d, antialiased)
    radii = proj["radii"]
    tx, ty = tile_grid(width, height, tile_size)
    counts = count_intersections(proj["means2d"], radii, tile_size, tx, ty)
    return jnp.sum(counts, dtype=jnp.int32)
