"""2D-mean gradients and absgrad without ``retain_grad()``.

In gsplat, ``meta["means2d"].retain_grad()`` must be called on the exact tensor before
``backward()`` to read dL/dmeans2d, and absgrad is a side attribute set by the CUDA
backward. Here both are ordinary gradients with respect to two probe inputs of
:func:`splat.rasterization`:

* ``means2d_probe`` [C, N, 2] zeros, added to the projected means: its gradient is
  dL/dmeans2d in pixels.
* ``absgrad_probe`` [C, N, 2] zeros, value unused: the custom VJP defines its gradient
  as sum over pixels of |dL/dmeans2d contributed by that pixel|, per component.

:func:`value_and_grad_2d` creates the probes and returns their gradients.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp


def value_and_grad_2d(loss_fn: Callable, probe_shape: Sequence[int], argnums=0,
                      has_aux: bool = False, dtype=jnp.float32):
    """Like ``jax.value_and_grad`` but also returns the 2D-mean gradient and absgrad.

    ``loss_fn(*args, means2d_probe=..., absgrad_probe=...)`` must pass both probes on to
    :func:`splat.rasterization` and return a scalar loss (or (loss, aux) if has_aux).
    probe_shape: (C, N), the number of cameras and Gaussians rendered. dtype: the probes'
    dtype (use the parameters' dtype).

    Returns a function of ``*args`` giving ``(value, grads, grads2d)`` where ``value`` and
    ``grads`` are as in ``jax.value_and_grad(loss_fn, argnums, has_aux)`` and ``grads2d``
    is a dict with ``means2d`` and ``absgrad``, both [C, N, 2] in pixels.
    """
    c, n = (int(s) for s in probe_shape)
    single = isinstance(argnums, int)
    nums = (argnums,) if single else tuple(argnums)

    def wrapped(*args):
        n_args = len(args)

        def inner(*all_args):
            *user, m_probe, a_probe = all_args
            return loss_fn(*user, means2d_probe=m_probe, absgrad_probe=a_probe)

        probes = (jnp.zeros((c, n, 2), dtype), jnp.zeros((c, n, 2), dtype))
        vg = jax.value_and_grad(inner, argnums=nums + (n_args, n_args + 1), has_aux=has_aux)
        value, grads = vg(*args, *probes)
        g_user = grads[0] if single else tuple(grads[:-2])
        return value, g_user, dict(means2d=grads[-2], absgrad=grads[-1])

    return wrapped
