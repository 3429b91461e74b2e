"""Pallas forward kernel: front-to-back compositing, one program per (camera, tile).

Per-intersection data are pre-gathered in XLA into a feature matrix ``feats`` [F, M]
(rows: mean x, mean y, conic a, b, c, opacity, then D colour channels), columns in
sorted intersection order, so the kernel only does scalar loads at a dynamic column
index: no gathers inside the kernel (Mosaic GPU rejects array-indexed loads). Each
program loops over its tile's column range [start, end) with a while loop that also
exits once every pixel of the tile is saturated; per pixel, early termination is a mask.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from ...constants import ALPHA_MAX, ALPHA_MIN, T_MIN

N_GEOM = 6  # mean x, mean y, conic a, b, c, opacity


def pixel_centres(pid, tile_size, tiles_x, n_tiles, dtype):
    """Pixel-centre coordinates [tile_size^2] of the tile handled by program ``pid``."""
    t = pid % n_tiles
    lane = lax.broadcasted_iota(jnp.int32, (tile_size * tile_size,), 0)
    px = ((t % tiles_x) * tile_size + lane % tile_size).astype(dtype) + 0.5
    py = ((t // tiles_x) * tile_size + lane // tile_size).astype(dtype) + 0.5
    return px, py


def load_gaussian(feats_ref, i):
    mx, my = feats_ref[0, i], feats_ref[1, i]
    ca, cb, cc = feats_ref[2, i], feats_ref[3, i], feats_ref[4, i]
    op = feats_ref[5, i]
    return mx, my, ca, cb, cc, op


class Step(NamedTuple):
    """One Gaussian's front-to-back step over a tile's pixels (each field [P])."""

    dx: object  # mean minus pixel centre, x and y (pixels)
    dy: object
    sigma: object  # the exponent 0.5 d^T conic d
    falloff: object  # exp(-sigma)
    alpha: object  # min(ALPHA_MAX, opacity * falloff)
    next_t: object  # transmittance after this Gaussian
    stop: object  # the pixel saturates here (this Gaussian does not contribute)
    contrib: object  # the Gaussian contributes to the pixel


def composite_step(gaussian, px, py, trans, done) -> Step:
    """One Gaussian (:func:`load_gaussian`'s scalars) against pixel centres px, py [P] with
    transmittance ``trans`` and saturation flags ``done`` [P]: the masks the forward kernel
    composites with (the tangent kernel differentiates the same ones)."""
    mx, my, ca, cb, cc, op = gaussian
    dx = mx - px
    dy = my - py
    sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
    falloff = jnp.exp(-sigma)
    alpha = jnp.minimum(ALPHA_MAX, op * falloff)
    ok = jnp.logical_not(done) & (sigma >= 0) & (alpha >= ALPHA_MIN)
    next_t = trans * (1 - alpha)
    stop = ok & (next_t <= T_MIN)
    return Step(dx, dy, sigma, falloff, alpha, next_t, stop, ok & jnp.logical_not(stop))


def tile_walk(ranges_ref, tile_size, tiles_x, n_tiles, dtype):
    """This program's pixel centres px, py [P], the start of its tile's column range, and the
    front-to-back while loop's condition on a state ``(i, ..., done)``: columns left and a
    pixel still open."""
    pid = pl.program_id(0)
    px, py = pixel_centres(pid, tile_size, tiles_x, n_tiles, dtype)
    end = ranges_ref[1, pid]

    def cond(state):
        i, done = state[0], state[-1]
        # "any pixel still open" as an integer max: Triton has no boolean reductions.
        return (i < end) & (jnp.max(jnp.where(done, 0, 1)) > 0)

    return px, py, ranges_ref[0, pid], cond


def _forward_kernel(ranges_ref, feats_ref, color_ref, trans_ref, last_ref, *, tile_size,
                    tiles_x, n_tiles, n_chan):
    dt = feats_ref.dtype
    px, py, start, cond = tile_walk(ranges_ref, tile_size, tiles_x, n_tiles, dt)
    p = tile_size * tile_size

    def body(state):
        i, trans, accs, last, done = state
        s = composite_step(load_gaussian(feats_ref, i), px, py, trans, done)
        w = jnp.where(s.contrib, s.alpha * trans, 0)
        accs = tuple(acc + w * feats_ref[N_GEOM + d, i] for d, acc in enumerate(accs))
        trans = jnp.where(s.contrib, s.next_t, trans)
        last = jnp.where(s.contrib, i, last)
        return i + 1, trans, accs, last, done | s.stop

    init = (
        start,
        jnp.ones((p,), dt),
        tuple(jnp.zeros((p,), dt) for _ in range(n_chan)),
        jnp.full((p,), -1, jnp.int32),
        jnp.zeros((p,), jnp.bool_),
    )
    _, trans, accs, last, _ = lax.while_loop(cond, body, init)
    for d, acc in enumerate(accs):
        color_ref[0, d, :] = acc
    trans_ref[0, :] = trans
    last_ref[0, :] = last


def forward_call(feats, tile_ranges, *, tile_size, tiles_x, n_tiles, n_chan, interpret,
                 gpu_backend="triton"):
    """Run the forward kernel.

    feats: [6 + D, M]; tile_ranges: [2, C * T] int32. Returns per-tile colour
    [C * T, D, P], final transmittance [C * T, P] and last contributor index [C * T, P]
    (int32 column into feats, -1 when none), P = tile_size^2.
    """
    n_prog = tile_ranges.shape[1]
    p = tile_size * tile_size
    kernel = functools.partial(_forward_kernel, tile_size=tile_size, tiles_x=tiles_x,
                               n_tiles=n_tiles, n_chan=n_chan)
    dt = feats.dtype
    return pl.pallas_call(
        kernel,
        grid=(n_prog,),
        in_specs=[
            pl.BlockSpec(tile_ranges.shape, lambda t: (0, 0)),
            pl.BlockSpec(feats.shape, lambda t: (0, 0)),
        ],
        out_specs=[
            pl.BlockSpec((1, n_chan, p), lambda t: (t, 0, 0)),
            pl.BlockSpec((1, p), lambda t: (t, 0)),
            pl.BlockSpec((1, p), lambda t: (t, 0)),
        ],
        out_shape=[
            jax_shape((n_prog, n_chan, p), dt),
            jax_shape((n_prog, p), dt),
            jax_shape((n_prog, p), jnp.int32),
        ],
        interpret=interpret,
        compiler_params=gpu_compiler_params(gpu_backend) if not interpret else None,
    )(tile_ranges, feats)


def gpu_compiler_params(gpu_backend):
    """Compiler params selecting the Pallas GPU backend: "triton" or "mosaic"."""
    if gpu_backend == "triton":
        from jax.experimental.pallas import triton as pltriton

        return pltriton.CompilerParams()
    if gpu_backend == "mosaic":
        from jax.experimental.pallas import mosaic_gpu as plgpu

        return plgpu.CompilerParams()
    raise ValueError(f"gpu_backend must be 'triton' or 'mosaic', got {gpu_backend!r}")


def jax_shape(shape, dtype):
    import jax

    return jax.ShapeDtypeStruct(shape, dtype)
