"""Robust losses applied to the norm ``s = |e|`` of a whitened residual (IRLS).

Each loss defines ``rho(s)`` (the factor's cost, equal to ``s^2 / 2`` for small ``s``)
and the IRLS weight ``w(s) = rho'(s) / s``. The solver scales the whitened residual
and Jacobian by ``sqrt(w)`` at each linearisation (GTSAM's convention), so that the
Gauss-Newton step is the iteratively-reweighted least-squares step.

===================  =================================================  =======================
loss                 ``rho(s)``                                         ``w(s)``
===================  =================================================  =======================
``Huber(k)``         ``s²/2`` if ``s<=k`` else ``k s - k²/2``           ``1`` or ``k / s``
``Cauchy(k)``        ``k²/2 log(1 + s²/k²)``                            ``1 / (1 + s²/k²)``
``Tukey(k)``         ``k²/6 (1-(1-s²/k²)³)`` if ``s<=k`` else ``k²/6``  ``(1-s²/k²)²`` or ``0``
``GemanMcClure(k)``  ``k² s² / (2 (k² + s²))``                          ``k⁴ / (k² + s²)²``
===================  =================================================  =======================

The threshold ``k`` is a pytree leaf (``[]`` or ``[M]``), so it can be learned.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["RobustLoss", "Huber", "Cauchy", "Tukey", "GemanMcClure"]


class RobustLoss:
    """Base class: a pytree with one leaf ``k``, the threshold in whitened units (standard
    deviations), float of shape ``[]`` (shared by a factor group) or ``[M]`` (per factor).

    ``rho`` and ``weight`` take ``s``, the norms of whitened residuals, float of any shape
    (the solver passes ``[M]``), and return an array of ``s``'s shape and dtype.
    """

    def __init__(self, k):
        self.k = k

    def tree_flatten(self):
        return (self.k,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)

    def _k(self, s):
        return jnp.asarray(self.k, s.dtype)

    def rho(self, s: jax.Array) -> jax.Array:  # pragma: no cover - interface
        """Cost of whitened residuals of norms ``s`` (``s >= 0``, float ``[M]``); ``[M]``."""
        raise NotImplementedError

    def weight(self, s: jax.Array) -> jax.Array:  # pragma: no cover - interface
        """IRLS weights ``rho'(s) / s`` of norms ``s`` (float ``[M]``), finite at ``s = 0``; ``[M]``."""
        raise NotImplementedError

    def check(self, count: int) -> str | None:
        """A message when ``k`` does not fit ``count`` factors: its shape is not ``()`` or
        ``(count,)``, or (when ``k`` is concrete, not traced) a value is not finite and > 0 (a
        threshold of 0 or below makes every cost 0 or negative)."""
        shape = tuple(jnp.shape(self.k))
        if shape not in ((), (count,)):
            return f"{type(self).__name__} threshold k must have shape () or ({count},), got {shape}"
        if isinstance(self.k, jax.core.Tracer):
            return None
        k = np.asarray(self.k)
        if not jnp.issubdtype(k.dtype, jnp.number) or jnp.issubdtype(k.dtype, jnp.complexfloating):
            return f"{type(self).__name__} threshold k must be a real number, got dtype {k.dtype}"
        bad = np.nonzero(~(np.isfinite(k) & (k > 0)).reshape(-1))[0]
        if bad.size:
            where = f"k[{int(bad[0])}]" if k.ndim else "k"
            return (f"{type(self).__name__} threshold {where} must be finite and > 0 (whitened units), "
                    f"got {float(k.reshape(-1)[int(bad[0])])!r}")
        return None

    def __repr__(self):
        return f"{type(self).__name__}(k shape={jnp.shape(self.k)})"


@jax.tree_util.register_pytree_node_class
class Huber(RobustLoss):
    """Huber loss: quadratic up to ``k``, linear beyond (``rho = k s - k²/2``).

    Args:
      k: threshold in whitened units (standard deviations), ``> 0``; float, shape ``[]``
        (every factor of the group) or ``[M]`` (one per factor).
    """

    def rho(self, s):
        k = self._k(s)
        return jnp.where(s <= k, 0.5 * s * s, k * s - 0.5 * k * k)

    def weight(self, s):
        k = self._k(s)
        return jnp.where(s <= k, jnp.ones_like(s), k / jnp.maximum(s, k))


@jax.tree_util.register_pytree_node_class
class Cauchy(RobustLoss):
    """Cauchy (Lorentzian) loss ``rho = k²/2 log(1 + s²/k²)``: never flat, outliers keep a
    small weight ``1 / (1 + s²/k²)``.

    Args:
      k: scale in whitened units, ``> 0``; float, shape ``[]`` or ``[M]``.
    """

    def rho(self, s):
        k2 = self._k(s) ** 2
        return 0.5 * k2 * jnp.log1p(s * s / k2)

    def weight(self, s):
        k2 = self._k(s) ** 2
        return 1.0 / (1.0 + s * s / k2)


@jax.tree_util.register_pytree_node_class
class Tukey(RobustLoss):
    """Tukey's biweight: redescending, a residual beyond ``k`` costs the constant ``k²/6`` and
    has weight 0 (non-convex; start close, or use :func:`jaxgraph.gnc`).

    Args:
      k: cut-off in whitened units, ``> 0``; float, shape ``[]`` or ``[M]``.
    """

    def rho(self, s):
        k2 = self._k(s) ** 2
        u = jnp.minimum(s * s / k2, 1.0)
        return k2 / 6.0 * (1.0 - (1.0 - u) ** 3)

    def weight(self, s):
        k2 = self._k(s) ** 2
        u = s * s / k2
        return jnp.where(u <= 1.0, (1.0 - jnp.minimum(u, 1.0)) ** 2, jnp.zeros_like(s))


@jax.tree_util.register_pytree_node_class
class GemanMcClure(RobustLoss):
    """Geman-McClure loss ``rho = k² s² / (2 (k² + s²))``: bounded by ``k²/2``, weight
    ``k⁴ / (k² + s²)²`` (non-convex; the loss :func:`jaxgraph.gnc` anneals).

    Args:
      k: scale in whitened units, ``> 0``; float, shape ``[]`` or ``[M]``.
    """

    def rho(self, s):
        k2 = self._k(s) ** 2
        return 0.5 * k2 * s * s / (k2 + s * s)

    def weight(self, s):
        k2 = self._k(s) ** 2
        return k2 * k2 / (k2 + s * s) ** 2
