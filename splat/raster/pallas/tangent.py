"""Pallas forward-tangent kernel: front-to-back compositing carrying K tangent directions
at once, one program per (camera, tile).

The forward-mode twin of :mod:`.forward` (``jax.jvp`` / ``jax.jacfwd`` through the Pallas
backend, e.g. the Jacobian of an image with respect to a camera pose): it carries each
pixel's colour and transmittance derivatives along tangents of the per-intersection
features ``dfeats`` (same layout as ``feats``). With ``s`` the Gaussian's exponent, ``a`` its
alpha and ``T`` the transmittance before it, along a tangent:

    ds = (A dx + B dy) dmx + (C dy + B dx) dmy + dx^2 dA / 2 + dx dy dB + dy^2 dC / 2
    da = dop exp(-s) - a ds            (0 where a is clipped at ALPHA_MAX)
    dcolour += (da T + a dT) c + a T dc
    dT <- dT (1 - a) - T da

for the Gaussians that contribute (which ones is decided by the primal values, exactly as
the forward kernel decides: the same masks, so the tangent is the derivative of the image
that kernel renders). It writes the tangents only: the values come from the forward kernel.
The plain-JAX reference of the same derivative is ``jax.jvp`` of
:func:`splat.raster.reference.rasterize_tiles` (tests/splat/test_pallas.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from ...constants import ALPHA_MAX
from .forward import N_GEOM, composite_step, gpu_compiler_params, jax_shape, load_gaussian, tile_walk


def _tangent_kernel(ranges_ref, feats_ref, dfeats_ref, dcolor_ref, dtrans_ref, *, tile_size,
                    tiles_x, n_tiles, n_chan, n_tan):
    dt = feats_ref.dtype
    px, py, start, cond = tile_walk(ranges_ref, tile_size, tiles_x, n_tiles, dt)
    p = tile_size * tile_size

    def body(state):
        # the K tangents as rows of [K, P] arrays (K a power of two: Triton's blocks)
        i, trans, dtrans, daccs, done = state
        gaussian = load_gaussian(feats_ref, i)
        _, _, ca, cb, cc, op = gaussian
        s = composite_step(gaussian, px, py, trans, done)
        dx, dy, g, alpha, contrib = s.dx, s.dy, s.falloff, s.alpha, s.contrib
        raw = op * g
        w = jnp.where(contrib, alpha * trans, 0)
        dmx, dmy, dca, dcb, dcc, dop = (dfeats_ref[:, f, i][:, None] for f in range(N_GEOM))
        dsigma = ((ca * dx + cb * dy) * dmx + (cc * dy + cb * dx) * dmy
                  + 0.5 * (dca * dx * dx + dcc * dy * dy) + dcb * dx * dy)  # [K, P]
        dalpha = jnp.where(raw < ALPHA_MAX, dop * g - raw * dsigma, 0)
        dw = jnp.where(contrib, dalpha * trans + alpha * dtrans, 0)
        daccs = tuple(dacc + dw * feats_ref[N_GEOM + d, i] + w * dfeats_ref[:, N_GEOM + d, i][:, None]
                      for d, dacc in enumerate(daccs))
        dtrans = jnp.where(contrib, dtrans * (1 - alpha) - trans * dalpha, dtrans)
        trans = jnp.where(contrib, s.next_t, trans)
        return i + 1, trans, dtrans, daccs, done | s.stop

    zeros = lambda: jnp.zeros((n_tan, p), dt)  # noqa: E731
    init = (start, jnp.ones((p,), dt), zeros(), tuple(zeros() for _ in range(n_chan)),
            jnp.zeros((p,), jnp.bool_))
    _, _, dtrans, daccs, _ = lax.while_loop(cond, body, init)
    for d in range(n_chan):
        dcolor_ref[:, 0, d, :] = daccs[d]
    dtrans_ref[:, 0, :] = dtrans


def _call(feats, dfeats, tile_ranges, *, tile_size, tiles_x, n_tiles, n_chan, interpret,
          gpu_backend):
    """The kernel on K tangents at once: dfeats [K, 6 + D, M] -> [K, C * T, D, P], [K, C * T, P]."""
    n_given = dfeats.shape[0]
    n_tan = 1 << max(n_given - 1, 0).bit_length()  # padded with zero tangents
    if n_tan != n_given:
        dfeats = jnp.concatenate([dfeats, jnp.zeros((n_tan - n_given,) + dfeats.shape[1:], dfeats.dtype)])
    n_prog = tile_ranges.shape[1]
    p = tile_size * tile_size
    kernel = functools.partial(_tangent_kernel, tile_size=tile_size, tiles_x=tiles_x,
                               n_tiles=n_tiles, n_chan=n_chan, n_tan=n_tan)
    dt = feats.dtype
    whole = lambda x: pl.BlockSpec(x.shape, lambda t: (0,) * x.ndim)  # noqa: E731
    dcol, dtrans = pl.pallas_call(
        kernel,
        grid=(n_prog,),
        in_specs=[whole(tile_ranges), whole(feats), whole(dfeats)],
        out_specs=[pl.BlockSpec((n_tan, 1, n_chan, p), lambda t: (0, t, 0, 0)),
                   pl.BlockSpec((n_tan, 1, p), lambda t: (0, t, 0))],
        out_shape=[jax_shape((n_tan, n_prog, n_chan, p), dt), jax_shape((n_tan, n_prog, p), dt)],
        interpret=interpret,
        compiler_params=gpu_compiler_params(gpu_backend) if not interpret else None,
    )(tile_ranges, feats, dfeats)
    return dcol[:n_given], dtrans[:n_given]


def tangent_call(feats, dfeats, tile_ranges, *, tile_size, tiles_x, n_tiles, n_chan, interpret,
                 gpu_backend="triton"):
    """Run the forward-tangent kernel.

    feats, dfeats: [6 + D, M] features and their tangent; tile_ranges: [2, C * T] int32.
    Returns the tangents of the per-tile colour [C * T, D, P] and of the final
    transmittance [C * T, P], P = tile_size^2 (the values themselves are the forward
    kernel's: under ``jax.vmap`` over tangents they stay unbatched there).

    Under ``jax.vmap`` over the tangent alone (``jax.jacfwd``: K directions) one kernel
    carries all K: each Gaussian's values and masks are computed once, not K times. A vmap
    that also batches the values or the ranges runs the kernel once per batch element.
    """
    call = functools.partial(_call, tile_size=tile_size, tiles_x=tiles_x, n_tiles=n_tiles,
                             n_chan=n_chan, interpret=interpret, gpu_backend=gpu_backend)

    @jax.custom_batching.custom_vmap
    def one(feats, dfeats, tile_ranges):
        dcol, dtrans = call(feats, dfeats[None], tile_ranges)
        return dcol[0], dtrans[0]

    @one.def_vmap
    def _batched(axis_size, in_batched, feats, dfeats, tile_ranges):
        f_b, d_b, r_b = in_batched
        if not (f_b or r_b):
            return call(feats, dfeats if d_b else jnp.broadcast_to(dfeats, (axis_size,) + dfeats.shape),
                        tile_ranges), (True, True)
        wide = lambda x, b: x if b else jnp.broadcast_to(x, (axis_size,) + x.shape)  # noqa: E731
        return lax.map(lambda a: one(*a), (wide(feats, f_b), wide(dfeats, d_b),
                                            wide(tile_ranges, r_b))), (True, True)

    return one(feats, dfeats, tile_ranges)
