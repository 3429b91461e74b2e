"""Compositing backends: :mod:`.reference` (plain JAX, the test oracle and fast CPU path)
and :mod:`.pallas` (Pallas kernels). Both provide ``rasterize_tiles(means2d, conics,
colors, opacities, isect, *, width, height, tile_size, absgrad_probe=None)`` over the
sorted intersection buffer of :func:`splat.tiling.intersect` (Pallas adds its compilation
options), returning (colors [C, H, W, D], alphas [C, H, W, 1]) without background."""
