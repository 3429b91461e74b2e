"""Tile intersection with static shapes.

Every (camera, Gaussian) pair with a non-zero radius covers a rectangle of tiles.
The pairs are expanded into a fixed-capacity buffer of *intersections*, sorted by
(camera, tile) and, within a tile, by depth, and per-tile [start, end) ranges are
found by binary search. All sort keys are 32-bit: a depth rank (from one argsort of
the depths per camera) replaces the float depth inside the key, so the sort is a
two-key int32 sort instead of a 64-bit one (64-bit sorts are far slower on GPU).

If the true number of intersections exceeds the capacity, the overflowing pairs are
dropped and ``overflow`` is set; :func:`splat.rasterization` retries outside jit.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class Intersections(NamedTuple):
    """Sorted intersection buffer (capacity M) and per-tile ranges.

    gauss_ids: [M] int32 flat index c * N + n of each intersection's Gaussian (0 for
      unused slots); tile_ids: [M] int32 global tile index c * T + t (C * T for unused
      slots, which sort last); tile_ranges: [2, C * T] int32 start/end into the buffer;
      tiles_per_gauss: [C, N] int32; count: () int32 true number of intersections
      (may exceed M); overflow: () bool.
    """

    gauss_ids: jax.Array
    tile_ids: jax.Array
    tile_ranges: jax.Array
    tiles_per_gauss: jax.Array
    count: jax.Array
    overflow: jax.Array


def tile_grid(width: int, height: int, tile_size: int) -> tuple[int, int]:
    """Number of tiles (tiles_x, tiles_y) covering a width x height image."""
    return -(-width // tile_size), -(-height // tile_size)


def next_pow2(k: int) -> int:
    """Smallest power of two >= k (>= 1): buffer sizes rounded so that problems of
    similar size share one compilation."""
    return 1 << max(0, int(k - 1).bit_length())


def default_capacity(n_cameras: int, n_gaussians: int, width: int, height: int,
                     tile_size: int) -> int:
    """Static intersection capacity used when it cannot be measured (inputs traced).

    C * N * min(number of tiles, 16): exact upper bound for images of <= 16 tiles,
    otherwise room for an average of 16 tiles per visible Gaussian.
    """
    tx, ty = tile_grid(width, height, tile_size)
    return max(1, n_cameras * n_gaussians * min(tx * ty, 16))


def tiles_to_image(x, n_cams: int, width: int, height: int, tile_size: int):
    """[C * T, tile_size^2, ...] per-tile pixel values -> [C, H, W, ...] image (cropped).

    Tiles are in row-major tile order, pixels in row-major order within a tile.
    """
    tiles_x, tiles_y = tile_grid(width, height, tile_size)
    rest = x.shape[2:]
    x = x.reshape((n_cams, tiles_y, tiles_x, tile_size, tile_size) + rest)
    x = jnp.moveaxis(x, 3, 2)  # [C, ty, py, tx, px, ...]
    x = x.reshape((n_cams, tiles_y * tile_size, tiles_x * tile_size) + rest)
    return x[:, :height, :width]


def image_to_tiles(img, width: int, height: int, tile_size: int):
    """[C, H, W, K] -> [C * T, tile_size^2, K]: inverse of :func:`tiles_to_image`
    (the padding beyond the image is zero)."""
    c, _, _, k = img.shape
    tiles_x, tiles_y = tile_grid(width, height, tile_size)
    img = jnp.pad(img, ((0, 0), (0, tiles_y * tile_size - height),
                        (0, tiles_x * tile_size - width), (0, 0)))
    img = img.reshape(c, tiles_y, tile_size, tiles_x, tile_size, k)
    img = jnp.moveaxis(img, 2, 3)
    return img.reshape(c * tiles_x * tiles_y, tile_size * tile_size, k)


def tile_bounds(means2d, radii, tile_size: int, tiles_x: int, tiles_y: int):
    """Per-Gaussian tile rectangle [x0, x1) x [y0, y1), int32 [C, N] each, clipped to the grid."""
    dt = means2d.dtype
    m = lax.stop_gradient(means2d)
    r = radii.astype(dt)
    ts = jnp.asarray(tile_size, dt)

    def rng(center, rad, n):
        lo = jnp.floor(jnp.clip((center - rad) / ts, 0, n))
        hi = jnp.ceil(jnp.clip((center + rad) / ts, 0, n))
        return lo.astype(jnp.int32), hi.astype(jnp.int32)

    x0, x1 = rng(m[..., 0], r[..., 0], tiles_x)
    y0, y1 = rng(m[..., 1], r[..., 1], tiles_y)
    return x0, x1, y0, y1


def count_intersections(means2d, radii, tile_size: int, tiles_x: int, tiles_y: int):
    """tiles_per_gauss [C, N] int32 (0 where culled)."""
    x0, x1, y0, y1 = tile_bounds(means2d, radii, tile_size, tiles_x, tiles_y)
    live = (radii[..., 0] > 0) & (radii[..., 1] > 0)
    return jnp.where(live, (x1 - x0) * (y1 - y0), 0).astype(jnp.int32)


def depth_ranks(depths, valid):
    """Rank [C, N] int32 of each Gaussian in its camera's front-to-back order.

    Ties are broken by Gaussian index (stable sort), so every backend composites in
    exactly the same order.
    """
    c, n = depths.shape
    key = jnp.where(valid, lax.stop_gradient(depths), jnp.inf)
    order = jnp.argsort(key, axis=-1, stable=True).astype(jnp.int32)
    ranks = jnp.zeros((c, n), jnp.int32)
    rows = jnp.arange(c, dtype=jnp.int32)[:, None]
    return ranks.at[rows, order].set(jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (c, n)))


def intersect(means2d, radii, depths, *, tile_size: int, width: int, height: int,
              capacity: int) -> Intersections:
    """Build the sorted intersection buffer of static size ``capacity``.

    means2d: [C, N, 2] pixels; radii: [C, N, 2] int32; depths: [C, N].
    """
    c, n = depths.shape
    tiles_x, tiles_y = tile_grid(width, height, tile_size)
    n_tiles = tiles_x * tiles_y
    x0, x1, y0, y1 = tile_bounds(means2d, radii, tile_size, tiles_x, tiles_y)
    live = (radii[..., 0] > 0) & (radii[..., 1] > 0)
    counts = jnp.where(live, (x1 - x0) * (y1 - y0), 0).astype(jnp.int32)
    ranks = depth_ranks(depths, live)

    flat_counts = counts.reshape(-1)
    ends = jnp.cumsum(flat_counts, dtype=jnp.int32)
    total = ends[-1]
    slots = jnp.arange(capacity, dtype=jnp.int32)
    # Slot s belongs to the first pair whose running end exceeds s.
    owner = jnp.searchsorted(ends, slots, side="right").astype(jnp.int32)
    owner = jnp.minimum(owner, c * n - 1)
    local = slots - (ends[owner] - flat_counts[owner])
    w = jnp.maximum((x1 - x0).reshape(-1)[owner], 1)
    tx = x0.reshape(-1)[owner] + local % w
    ty = y0.reshape(-1)[owner] + local // w
    cam = owner // n
    used = slots < total
    tile_key = jnp.where(used, cam * n_tiles + ty * tiles_x + tx, c * n_tiles).astype(jnp.int32)
    rank_key = jnp.where(used, ranks.reshape(-1)[owner], 0).astype(jnp.int32)
    gid = jnp.where(used, owner, 0).astype(jnp.int32)
    tile_sorted, _, gid_sorted = lax.sort((tile_key, rank_key, gid), num_keys=2)
    bounds = jnp.searchsorted(
        tile_sorted, jnp.arange(c * n_tiles + 1, dtype=jnp.int32), side="left"
    ).astype(jnp.int32)
    tile_ranges = jnp.stack([bounds[:-1], bounds[1:]], axis=0)
    return Intersections(
        gauss_ids=gid_sorted,
        tile_ids=tile_sorted,
        tile_ranges=tile_ranges,
        tiles_per_gauss=counts,
        count=total,
        overflow=total > capacity,
    )
