"""Plain-JAX rasterisation: the test oracle and the fast CPU path (``backend="reference"``).

Two implementations of the same compositing rule, both differentiated by JAX autodiff:

* :func:`rasterize_tiles` uses the sorted intersection buffer from :mod:`splat.tiling`
  (the same input the Pallas kernels see) and evaluates every (intersection, pixel of its
  tile) pair at once, with a segmented cumulative product for the transmittance. Work is
  O(M * tile_size^2) like the kernels, fully vectorised, memory O(M * tile_size^2).
* :func:`rasterize_dense` ignores tiles altogether: every pixel composites every visible
  Gaussian in depth order. O(H * W * N): only for small scenes, but it also checks the
  tiling (a Gaussian missing from a tile would show up as a difference).

Compositing rule (3DGS / gsplat), per pixel, front to back over Gaussians k:
  sigma_k = 0.5 (a dx^2 + c dy^2) + b dx dy,  d = mean2d_k - pixel centre,
  alpha_k = min(0.99, opacity_k exp(-sigma_k)); skipped if alpha_k < 1/255 or sigma_k < 0;
  the first Gaussian that would bring the transmittance T to <= 1e-4 is not composited
  and stops the pixel; colour = sum_k c_k alpha_k T_k with T_k = prod_{j<k} (1 - alpha_j).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ..constants import ALPHA_MAX, ALPHA_MIN, T_MIN
from ..tiling import Intersections, depth_ranks, tile_grid, tiles_to_image


@jax.custom_vjp
def abs_tap(x, probe):
    """Identity in ``x``; the cotangent reaching ``probe`` is |cotangent of x| (elementwise).

    Used to read gsplat's absgrad out of autodiff: the per-pixel copy of each 2D mean is
    tapped, so the probe collects sum over pixels of |dL/dmean2d at that pixel|.
    """
    del probe
    return x


def _abs_tap_fwd(x, probe):
    del probe
    return x, None


def _abs_tap_bwd(_, g):
    return g, jnp.abs(g)


abs_tap.defvjp(_abs_tap_fwd, _abs_tap_bwd)


def _alpha(mx, my, px, py, conic_a, conic_b, conic_c, opac):
    dx = mx - px
    dy = my - py
    sigma = 0.5 * (conic_a * dx * dx + conic_c * dy * dy) + conic_b * dx * dy
    alpha = jnp.minimum(ALPHA_MAX, opac * jnp.exp(-sigma))
    ok = (sigma >= 0) & (alpha >= ALPHA_MIN)
    return alpha, ok


def rasterize_tiles(means2d, conics, colors, opacities, isect: Intersections, *, width: int,
                    height: int, tile_size: int, absgrad_probe=None):
    """Composite Gaussians per tile from the sorted intersection buffer.

    means2d: [C, N, 2]; conics: [C, N, 3]; colors: [C, N, D]; opacities: [C, N];
    absgrad_probe: optional [C, N, 2] zeros whose gradient becomes the absgrad.
    Returns (colors [C, H, W, D], alphas [C, H, W, 1]) without background.
    """
    c, n, d = colors.shape
    dt = colors.dtype
    tiles_x, tiles_y = tile_grid(width, height, tile_size)
    n_tiles = tiles_x * tiles_y
    p = tile_size * tile_size
    gid = isect.gauss_ids
    tid = isect.tile_ids
    used = tid < c * n_tiles

    t_local = tid % n_tiles
    lane = jnp.arange(p, dtype=jnp.int32)
    px = ((t_local % tiles_x)[:, None] * tile_size + lane % tile_size).astype(dt) + 0.5
    py = ((t_local // tiles_x)[:, None] * tile_size + lane // tile_size).astype(dt) + 0.5

    m = means2d.reshape(-1, 2)[gid]  # [M, 2]
    m = jnp.broadcast_to(m[:, None, :], (m.shape[0], p, 2))
    if absgrad_probe is not None:
        probe = absgrad_probe.reshape(-1, 2)[gid]
        m = abs_tap(m, jnp.broadcast_to(probe[:, None, :], m.shape))
    con = conics.reshape(-1, 3)[gid]
    op = opacities.reshape(-1)[gid]
    alpha, ok = _alpha(m[..., 0], m[..., 1], px, py, con[:, 0:1], con[:, 1:2], con[:, 2:3],
                       op[:, None])
    ok = ok & used[:, None]
    a = jnp.where(ok, alpha, 0)

    seg_start = jnp.concatenate([jnp.ones((1,), bool), tid[1:] != tid[:-1]])[:, None]

    def seg_mul(lhs, rhs):
        f1, v1 = lhs
        f2, v2 = rhs
        return f1 | f2, jnp.where(f2, v2, v1 * v2)

    flags = jnp.broadcast_to(seg_start, a.shape)
    _, t_incl = lax.associative_scan(seg_mul, (flags, 1 - a), axis=0)
    t_excl = jnp.where(seg_start, 1, jnp.concatenate([jnp.ones((1, p), dt), t_incl[:-1]], 0))
    included = ok & (lax.stop_gradient(t_incl) > T_MIN)
    w = jnp.where(included, a * t_excl, 0)  # [M, P]

    col = colors.reshape(-1, d)[gid]  # [M, D]
    img = jax.ops.segment_sum(w[:, :, None] * col[:, None, :], tid, num_segments=c * n_tiles)
    acc = jax.ops.segment_sum(w, tid, num_segments=c * n_tiles)
    return (tiles_to_image(img, c, width, height, tile_size),
            tiles_to_image(acc[..., None], c, width, height, tile_size))


def composite_pixel(px, py, means2d, conics, colors, opacities, order_valid):
    """Composite one pixel over N Gaussians already in depth order.

    px, py: scalars; means2d [N, 2]; conics [N, 3]; colors [N, D]; opacities [N];
    order_valid [N] bool. Returns (colour [D], alpha scalar).
    """
    alpha, ok = _alpha(means2d[:, 0], means2d[:, 1], px, py, conics[:, 0], conics[:, 1],
                       conics[:, 2], opacities)
    ok = ok & order_valid
    a = jnp.where(ok, alpha, 0)
    t_incl = jnp.cumprod(1 - a)
    t_excl = jnp.concatenate([jnp.ones((1,), a.dtype), t_incl[:-1]])
    included = ok & (lax.stop_gradient(t_incl) > T_MIN)
    w = jnp.where(included, a * t_excl, 0)
    return w @ colors, jnp.sum(w)


def rasterize_dense(means2d, conics, colors, opacities, radii, depths, *, width: int,
                    height: int):
    """Brute-force oracle: every pixel composites every visible Gaussian (no tiles).

    Shapes as :func:`rasterize_tiles` plus radii [C, N, 2] int32 and depths [C, N].
    Returns (colors [C, H, W, D], alphas [C, H, W, 1]).
    """
    dt = colors.dtype
    live = (radii[..., 0] > 0) & (radii[..., 1] > 0)
    ranks = depth_ranks(depths, live)
    order = jnp.argsort(ranks, axis=-1)
    ii, jj = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    px = (jj.reshape(-1) + 0.5).astype(dt)
    py = (ii.reshape(-1) + 0.5).astype(dt)

    def per_cam(m, con, col, op, lv, od):
        args = (m[od], con[od], col[od], op[od], lv[od])
        return jax.vmap(lambda x, y: composite_pixel(x, y, *args))(px, py)

    img, acc = jax.vmap(per_cam)(means2d, conics, colors, opacities, live, order)
    c = colors.shape[0]
    return img.reshape(c, height, width, -1), acc.reshape(c, height, width, 1)
