"""Gaussian noise models: whitening of residuals and Jacobians.

A noise model maps a residual ``r`` (tangent space, dimension ``d``) to a whitened
residual ``e = W r`` such that the cost of a factor is ``0.5 * |e|^2`` (before any robust
loss). Every model is a pytree whose float parameters are leaves, so gradients flow to
noise scales and information matrices. Parameters are either shared by a whole factor
group (no leading axis) or given per factor (leading axis ``M``).

===================  ===========================  =======================================
model                parameter shape              whitening ``W``
===================  ===========================  =======================================
``Isotropic``        ``[]`` or ``[M]``            ``I / sigma``
``Diagonal``         ``[d]`` or ``[M, d]``        ``diag(1 / sigmas)``
``SqrtInformation``  ``[d, d]`` or ``[M, d, d]``  ``R`` (any square root, ``R^T R = Λ``)
``Information``      ``[d, d]`` or ``[M, d, d]``  ``chol(Λ)^T`` (computed once per solve)
===================  ===========================  =======================================

``Information`` keeps the information matrix itself as its leaf (what a g2o file holds),
so that writing a problem back reproduces the file's numbers exactly; its square root is
computed by :meth:`Information.prepare` once at the start of a solve, not per iteration.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from .. import smallmat

__all__ = [
    "NoiseModel",
    "Isotropic",
    "Diagonal",
    "SqrtInformation",
    "Information",
    "isotropic",
    "diagonal",
    "sqrt_information",
    "information",
    "covariance",
]


class NoiseModel:
    """Base class: one parameter array (attribute ``field``) whose one-factor shape has rank
    ``core_ndim`` (``sigma`` 0, ``sigmas`` 1, a matrix 2), shared (``core``) or per factor
    (``[M, *core]``). Subclasses implement ``whiten`` / ``whiten_jacobian``."""

    field: ClassVar[str]
    core_ndim: ClassVar[int]
    positive: ClassVar[bool] = False  # standard deviations must be > 0

    def __init__(self, value):
        setattr(self, self.field, value)

    @property
    def value(self):
        """The parameter array."""
        return getattr(self, self.field)

    @property
    def per_factor_ndim(self) -> int:
        """Rank of the parameter array when it holds one parameter per factor."""
        return self.core_ndim + 1

    def prepare(self) -> "NoiseModel":
        """Return the model in the form used inside the solver loop (default: itself)."""
        return self

    def whiten(self, r: jax.Array) -> jax.Array:  # pragma: no cover - interface
        """Whitened residuals ``W r``: ``r`` is float ``[M, d]``; returns ``[M, d]``."""
        raise NotImplementedError

    def whiten_jacobian(self, J: jax.Array) -> jax.Array:  # pragma: no cover - interface
        """Whitened Jacobians ``W J``: ``J`` is float ``[M, d, n]``; returns ``[M, d, n]``."""
        raise NotImplementedError

    def astype(self, dtype) -> "NoiseModel":
        """The same model with its parameter array cast to ``dtype`` (e.g. ``jnp.float32``)."""
        return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), self)

    def sqrt_information(self, dim: int) -> jax.Array:
        """The whitening matrix ``W`` (``[d, d]`` or ``[M, d, d]``)."""
        eye = jnp.eye(dim, dtype=jnp.result_type(*jax.tree_util.tree_leaves(self)))
        return self.whiten_jacobian(eye)

    def check(self, dim: int, count: int) -> str | None:
        """Return an error message if the parameters do not fit ``count`` factors of ``dim``."""
        core = (dim,) * self.core_ndim
        shape = tuple(np.shape(self.value))  # a list too (jnp.shape of a list is deprecated)
        name = f"{type(self).__name__} {self.field}"
        if shape != core and shape != (count,) + core:
            return f"{name} must have shape {core} or {(count,) + core}, got {shape}"
        return _positive(name, self.value, self.core_ndim) if self.positive else None

    def tree_flatten(self):
        return (self.value,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)

    def __repr__(self):
        return f"{type(self).__name__}({self.field} shape={jnp.shape(self.value)})"


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _positive(what: str, x, core_ndim: int) -> str | None:
    """Message naming the first non-positive standard deviation (concrete values only)."""
    if not _concrete(x):
        return None
    a = np.asarray(x)
    bad = np.argwhere(np.atleast_1d(~(a > 0) & ~np.isnan(a)))  # NaN: reported as non-finite
    if not bad.size:
        return None
    first = tuple(int(i) for i in bad[0])[: a.ndim]
    where = f"factor {first[0]}: " if a.ndim > core_ndim else ""  # per-factor parameters
    return f"{where}{what} must be > 0, got {float(a[first])!r}"


@jax.tree_util.register_pytree_node_class
class Isotropic(NoiseModel):
    """Same standard deviation ``sigma`` on every residual component.

    Args:
      sigma: standard deviation in the residual's units (metres, radians, pixels, ...),
        ``> 0``; float, shape ``[]`` (the whole factor group) or ``[M]`` (per factor).
    """

    field, core_ndim, positive = "sigma", 0, True

    def whiten(self, r):
        return r / jnp.asarray(self.sigma, r.dtype)[..., None]

    def whiten_jacobian(self, J):
        return J / jnp.asarray(self.sigma, J.dtype)[..., None, None]


@jax.tree_util.register_pytree_node_class
class Diagonal(NoiseModel):
    """Independent standard deviations per residual component.

    Args:
      sigmas: standard deviations in each component's units, ``> 0``; float, shape ``[d]``
        (the whole factor group) or ``[M, d]`` (per factor).
    """

    field, core_ndim, positive = "sigmas", 1, True

    def whiten(self, r):
        return r / jnp.asarray(self.sigmas, r.dtype)

    def whiten_jacobian(self, J):
        return J / jnp.asarray(self.sigmas, J.dtype)[..., :, None]


@jax.tree_util.register_pytree_node_class
class SqrtInformation(NoiseModel):
    """Square-root information ``R`` (``R^T R = Λ``); whitened residual ``R r``.

    Args:
      matrix: ``R``, in inverse residual units; float, shape ``[d, d]`` (the whole factor
        group) or ``[M, d, d]`` (per factor). Any square root works (upper triangular or not).
    """

    field, core_ndim = "matrix", 2

    def whiten(self, r):
        return smallmat.matvec(jnp.asarray(self.matrix, r.dtype), r)

    def whiten_jacobian(self, J):
        return smallmat.matmul(jnp.asarray(self.matrix, J.dtype), J)


@jax.tree_util.register_pytree_node_class
class Information(NoiseModel):
    """Information matrix ``Λ`` (inverse covariance), symmetric positive definite.

    Whitening uses ``W = L^T`` with ``Λ = L L^T`` (Cholesky), so ``|W r|^2 = r^T Λ r``.

    Args:
      matrix: ``Λ``, in inverse squared residual units; float, shape ``[d, d]`` (the whole
        factor group) or ``[M, d, d]`` (per factor), as g2o's EDGE lines store it.
    """

    field, core_ndim = "matrix", 2

    def prepare(self):
        m = jnp.asarray(self.matrix)
        # Symmetrise first: files store only the upper triangle and rounding must not
        # make the Cholesky factor depend on which triangle it reads.
        m = 0.5 * (m + jnp.swapaxes(m, -1, -2))
        return SqrtInformation(jnp.swapaxes(_cholesky(m), -1, -2))

    def whiten(self, r):
        return self.prepare().whiten(r)

    def whiten_jacobian(self, J):
        return self.prepare().whiten_jacobian(J)


def isotropic(sigma) -> Isotropic:
    """Isotropic noise, standard deviation ``sigma`` (residual units); ``[]`` or ``[M]``."""
    return Isotropic(sigma)


def diagonal(sigmas) -> Diagonal:
    """Diagonal noise, standard deviations ``sigmas[..., d]``."""
    return Diagonal(sigmas)


def sqrt_information(matrix) -> SqrtInformation:
    """Square-root information ``R[..., d, d]`` with ``R^T R = Λ``."""
    return SqrtInformation(matrix)


def information(matrix) -> Information:
    """Information matrix ``Λ[..., d, d]`` (symmetric positive definite)."""
    return Information(matrix)


def covariance(matrix) -> SqrtInformation:
    """Covariance ``Σ[..., d, d]``; converted to square-root information ``L^{-1}`` (Σ = L L^T)."""
    m = jnp.asarray(matrix)
    m = 0.5 * (m + jnp.swapaxes(m, -1, -2))
    if m.shape[-1] <= smallmat.MAX_UNROLLED:
        return SqrtInformation(smallmat.lower_inverse(smallmat.cholesky(m)))
    L = jnp.linalg.cholesky(m)
    eye = jnp.broadcast_to(jnp.eye(m.shape[-1], dtype=m.dtype), m.shape)
    return SqrtInformation(jax.scipy.linalg.solve_triangular(L, eye, lower=True))


def _cholesky(m):
    # Noise models are prepared inside every compiled program, often several side by
    # side; the unrolled factorisation keeps them off LAPACK's blocking batch kernel
    # (see jaxgraph.smallmat).
    return smallmat.cholesky(m) if m.shape[-1] <= smallmat.MAX_UNROLLED else jnp.linalg.cholesky(m)
