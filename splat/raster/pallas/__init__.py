"""The Pallas backend (``backend="pallas"``): per-tile kernels for the forward and
backward passes (:mod:`.forward`, :mod:`.backward`) and their ``jax.custom_vjp`` wiring, and
for forward mode a tangent kernel (:mod:`.tangent`) wired as a ``jax.custom_jvp`` (JAX
takes one custom rule per function: ``autodiff`` picks which one a call supports).
:func:`rasterize_tiles` has the signature of :func:`splat.raster.reference.rasterize_tiles`
plus the Pallas options."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ...tiling import Intersections, image_to_tiles, tile_grid, tiles_to_image
from .backward import backward_call
from .forward import forward_call
from .tangent import tangent_call

__all__ = ["AUTODIFF_MODES", "rasterize_tiles"]

# which derivatives a Pallas rasterisation supports: JAX's reverse or forward mode
AUTODIFF_MODES = ("reverse", "forward")


def _gather_feats(means2d, conics, colors, opacities, gauss_ids):
    c, n, d = colors.shape
    table = jnp.concatenate(
        [means2d.reshape(c * n, 2), conics.reshape(c * n, 3), opacities.reshape(c * n, 1),
         colors.reshape(c * n, d)], axis=1)
    return table[gauss_ids].T  # [6 + D, M]


def _forward(means2d, conics, colors, opacities, gauss_ids, tile_ranges, width, height,
             tile_size, interpret, gpu_backend):
    c, _, d = colors.shape
    tiles_x, tiles_y = tile_grid(width, height, tile_size)
    feats = _gather_feats(means2d, conics, colors, opacities, gauss_ids)
    col_t, trans_t, last_t = forward_call(
        feats, tile_ranges, tile_size=tile_size, tiles_x=tiles_x, n_tiles=tiles_x * tiles_y,
        n_chan=d, interpret=interpret, gpu_backend=gpu_backend)
    img = tiles_to_image(jnp.swapaxes(col_t, 1, 2), c, width, height, tile_size)
    alpha = tiles_to_image((1 - trans_t)[..., None], c, width, height, tile_size)
    return (img, alpha), (feats, trans_t, last_t)


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9, 10, 11))
def _rasterize(means2d, conics, colors, opacities, absgrad_probe, gauss_ids, tile_ranges,
               width, height, tile_size, interpret, gpu_backend):
    del absgrad_probe
    return _forward(means2d, conics, colors, opacities, gauss_ids, tile_ranges, width,
                    height, tile_size, interpret, gpu_backend)[0]


def _rasterize_fwd(means2d, conics, colors, opacities, absgrad_probe, gauss_ids,
                   tile_ranges, width, height, tile_size, interpret, gpu_backend):
    del absgrad_probe
    out, (feats, trans_t, last_t) = _forward(means2d, conics, colors, opacities, gauss_ids,
                                             tile_ranges, width, height, tile_size, interpret,
                                             gpu_backend)
    c, n, d = colors.shape
    return out, (feats, trans_t, last_t, gauss_ids, tile_ranges, (c, n, d))


def _rasterize_bwd(width, height, tile_size, interpret, gpu_backend, res, cts):
    feats, trans_t, last_t, gauss_ids, tile_ranges, (c, n, d) = res
    g_img, g_alpha = cts
    tiles_x, tiles_y = tile_grid(width, height, tile_size)
    g_col = jnp.swapaxes(image_to_tiles(g_img, width, height, tile_size), 1, 2)
    g_a = image_to_tiles(g_alpha, width, height, tile_size)[..., 0]
    rows = backward_call(
        feats, tile_ranges, trans_t, last_t, g_col, g_a, tile_size=tile_size,
        tiles_x=tiles_x, n_tiles=tiles_x * tiles_y, n_chan=d, interpret=interpret,
        gpu_backend=gpu_backend)
    per_gauss = jax.ops.segment_sum(rows.T, gauss_ids, num_segments=c * n)  # [C*N, 8 + D]
    per_gauss = per_gauss.reshape(c, n, -1)
    g_means2d = per_gauss[..., 0:2]
    g_conics = per_gauss[..., 2:5]
    g_opac = per_gauss[..., 5]
    g_colors = per_gauss[..., 6:6 + d]
    g_abs = per_gauss[..., 6 + d:8 + d]
    return g_means2d, g_conics, g_colors, g_opac, g_abs, None, None


_rasterize.defvjp(_rasterize_fwd, _rasterize_bwd)


@functools.partial(jax.custom_jvp, nondiff_argnums=(7, 8, 9, 10, 11))
def _rasterize_forward_mode(means2d, conics, colors, opacities, absgrad_probe, gauss_ids,
                            tile_ranges, width, height, tile_size, interpret, gpu_backend):
    del absgrad_probe
    return _forward(means2d, conics, colors, opacities, gauss_ids, tile_ranges, width,
                    height, tile_size, interpret, gpu_backend)[0]


@_rasterize_forward_mode.defjvp
def _rasterize_jvp(width, height, tile_size, interpret, gpu_backend, primals, tangents):
    means2d, conics, colors, opacities, _, gauss_ids, tile_ranges = primals
    d_means2d, d_conics, d_colors, d_opacities = tangents[:4]
    c, _, d = colors.shape
    tiles_x, tiles_y = tile_grid(width, height, tile_size)
    out, (feats, _, _) = _forward(means2d, conics, colors, opacities, gauss_ids, tile_ranges,
                                  width, height, tile_size, interpret, gpu_backend)
    dcol_t, dtrans_t = tangent_call(
        feats, _gather_feats(d_means2d, d_conics, d_colors, d_opacities, gauss_ids),
        tile_ranges, tile_size=tile_size, tiles_x=tiles_x, n_tiles=tiles_x * tiles_y,
        n_chan=d, interpret=interpret, gpu_backend=gpu_backend)
    return out, (tiles_to_image(jnp.swapaxes(dcol_t, 1, 2), c, width, height, tile_size),
                 tiles_to_image(-dtrans_t[..., None], c, width, height, tile_size))


def rasterize_tiles(means2d, conics, colors, opacities, isect: Intersections, *, width: int,
                    height: int, tile_size: int, absgrad_probe=None, interpret: bool,
                    gpu_backend: str = "triton", autodiff: str = "reverse"):
    """Differentiable Pallas rasterisation of the sorted intersection buffer.

    means2d [C, N, 2] pixels, conics [C, N, 3], colors [C, N, D], opacities [C, N];
    isect from :func:`splat.tiling.intersect`; absgrad_probe: optional [C, N, 2] (value
    unused; its gradient is the absgrad). interpret: run the kernels in Pallas interpret
    mode (CPU). gpu_backend: "triton" (default; both kernels lower to Triton) or "mosaic"
    (Mosaic GPU; currently rejected by its lowering, see docs/splat.md), ignored when
    interpreting. autodiff: "reverse" (``jax.grad``/``vjp``: the backward kernel) or
    "forward" (``jax.jvp``/``jacfwd``: the tangent kernel; absgrad_probe then has no use).
    Returns (colors [C, H, W, D], alphas [C, H, W, 1]) without background.
    """
    if autodiff not in AUTODIFF_MODES:
        raise ValueError(f"autodiff must be one of {AUTODIFF_MODES}, got {autodiff!r}")
    if absgrad_probe is None:
        absgrad_probe = jnp.zeros(means2d.shape, means2d.dtype)
    wired = _rasterize if autodiff == "reverse" else _rasterize_forward_mode
    return wired(means2d, conics, colors, opacities, absgrad_probe, isect.gauss_ids,
                 isect.tile_ranges, width, height, tile_size, interpret, gpu_backend)
