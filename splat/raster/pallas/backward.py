"""Pallas backward kernel: back to front from each pixel's last contributor.

One program per (camera, tile), walking the tile's intersections from the largest
last-contributor index down to the tile start. Transmittance is restored per pixel as
T_before = T_after / (1 - alpha); the colour accumulated behind the current Gaussian is
carried along. Each intersection's gradient (summed over the tile's pixels inside the
program, a deterministic in-register reduction) is written to that intersection's own
column of the output: no two programs write the same column, so there are no atomics.
A per-Gaussian segment sum in XLA finishes the reduction.

Output rows: dL/dmean x, y, dL/dconic a, b, c, dL/dopacity, dL/dcolour (D rows), and the
absgrad rows sum_pixels |dL/dmean x|, sum_pixels |dL/dmean y|.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from ...constants import ALPHA_MAX, ALPHA_MIN
from .forward import N_GEOM, gpu_compiler_params, load_gaussian, pixel_centres


def _backward_kernel(ranges_ref, feats_ref, trans_ref, last_ref, gcol_ref, galpha_ref,
                     _grads_in_ref, grads_ref, *, tile_size, tiles_x, n_tiles, n_chan):
    dt = feats_ref.dtype
    pid = pl.program_id(0)
    px, py = pixel_centres(pid, tile_size, tiles_x, n_tiles, dt)
    start = ranges_ref[0, pid]
    t_final = trans_ref[0, :]
    last = last_ref[0, :]
    g_alpha = galpha_ref[0, :]
    g_col = tuple(gcol_ref[0, d, :] for d in range(n_chan))
    p = tile_size * tile_size

    def body(state):
        i, trans, behind = state
        mx, my, ca, cb, cc, op = load_gaussian(feats_ref, i)
        dx = mx - px
        dy = my - py
        sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
        vis = op * jnp.exp(-sigma)
        alpha = jnp.minimum(ALPHA_MAX, vis)
        contrib = (sigma >= 0) & (alpha >= ALPHA_MIN) & (i <= last)
        ra = 1 / (1 - alpha)
        t_before = jnp.where(contrib, trans * ra, trans)
        w = alpha * t_before
        g_a = g_alpha * t_final * ra
        new_behind = []
        for d in range(n_chan):
            c_d = feats_ref[N_GEOM + d, i]
            g_a = g_a + g_col[d] * (c_d * t_before - behind[d] * ra)
            grads_ref[N_GEOM + d, i] = jnp.sum(jnp.where(contrib, g_col[d] * w, 0))
            new_behind.append(jnp.where(contrib, behind[d] + c_d * w, behind[d]))
        live = contrib & (vis <= ALPHA_MAX)
        g_sigma = jnp.where(live, -vis * g_a, 0)
        g_op = jnp.where(live, jnp.exp(-sigma) * g_a, 0)
        g_mx = g_sigma * (ca * dx + cb * dy)
        g_my = g_sigma * (cb * dx + cc * dy)
        grads_ref[0, i] = jnp.sum(g_mx)
        grads_ref[1, i] = jnp.sum(g_my)
        grads_ref[2, i] = jnp.sum(0.5 * g_sigma * dx * dx)
        grads_ref[3, i] = jnp.sum(g_sigma * dx * dy)
        grads_ref[4, i] = jnp.sum(0.5 * g_sigma * dy * dy)
        grads_ref[5, i] = jnp.sum(g_op)
        grads_ref[N_GEOM + n_chan, i] = jnp.sum(jnp.abs(g_mx))
        grads_ref[N_GEOM + n_chan + 1, i] = jnp.sum(jnp.abs(g_my))
        return i - 1, t_before, tuple(new_behind)

    init = (jnp.max(last), t_final, tuple(jnp.zeros((p,), dt) for _ in range(n_chan)))
    lax.while_loop(lambda s: s[0] >= start, body, init)


def backward_call(feats, tile_ranges, trans, last, g_col, g_alpha, *, tile_size, tiles_x,
                  n_tiles, n_chan, interpret, gpu_backend="triton"):
    """Per-intersection gradients [6 + D + 2, M] (zero for unused or non-contributing columns).

    feats [6 + D, M]; tile_ranges [2, C * T]; trans, last, g_alpha [C * T, P];
    g_col [C * T, D, P].
    """
    n_prog = tile_ranges.shape[1]
    p = tile_size * tile_size
    n_rows = N_GEOM + n_chan + 2
    m = feats.shape[1]
    kernel = functools.partial(_backward_kernel, tile_size=tile_size, tiles_x=tiles_x,
                               n_tiles=n_tiles, n_chan=n_chan)
    zeros = jnp.zeros((n_rows, m), feats.dtype)
    full = lambda shape: pl.BlockSpec(shape, lambda t: (0,) * len(shape))  # noqa: E731
    return pl.pallas_call(
        kernel,
        grid=(n_prog,),
        in_specs=[
            full(tile_ranges.shape),
            full(feats.shape),
            pl.BlockSpec((1, p), lambda t: (t, 0)),
            pl.BlockSpec((1, p), lambda t: (t, 0)),
            pl.BlockSpec((1, n_chan, p), lambda t: (t, 0, 0)),
            pl.BlockSpec((1, p), lambda t: (t, 0)),
            full(zeros.shape),
        ],
        out_specs=full(zeros.shape),
        out_shape=jax.ShapeDtypeStruct(zeros.shape, feats.dtype),
        # Columns no program writes (unused capacity, Gaussians behind the last
        # contributor) must read as zero: start from a zero buffer.
        input_output_aliases={6: 0},
        interpret=interpret,
        compiler_params=gpu_compiler_params(gpu_backend) if not interpret else None,
    )(tile_ranges, feats, trans, last, g_col, g_alpha, zeros)
