"""Tangent-space helpers over pytrees that contain group objects (the names of ``jaxlie.manifold``).

Group objects are treated as single leaves; every other leaf is Euclidean (``x + d``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import jax
import jax.numpy as jnp

from ._base import MatrixLieGroup


def _is_group(x) -> bool:
    return isinstance(x, MatrixLieGroup)


def _map(on_group: Callable, on_array: Callable, tree, *rest):
    def step(x, *others):
        return on_group(x, *others) if _is_group(x) else on_array(x, *others)

    return jax.tree_util.tree_map(step, tree, *rest, is_leaf=_is_group)


def rplus(transform, delta):
    """``T @ exp(d)`` for every group leaf of a pytree, ``x + d`` for other leaves."""
    return _map(lambda x, d: x.rplus(d), jnp.add, transform, delta)


def rminus(a, b):
    """``log(a^-1 @ b)`` for every group leaf of two matching pytrees (``b - a`` otherwise)."""
    return _map(lambda x, y: x.rminus(y), lambda x, y: jnp.subtract(y, x), a, b)


def rplus_jacobian_parameters_wrt_delta(transform: MatrixLieGroup) -> jax.Array:
    """Jacobian [..., parameters_dim, tangent_dim] of ``rplus(transform, d).parameters()`` at d = 0,
    in closed form."""
    return transform.rplus_jacobian_parameters_wrt_delta()


def zero_tangents(tree) -> Any:
    """Zero tangent vectors [..., tangent_dim] for the group leaves (parameters' dtype), zeros
    for the others."""

    def zero(x: MatrixLieGroup):
        return jnp.zeros(x.get_batch_axes() + (x.tangent_dim,), x.parameters().dtype)

    return _map(zero, jnp.zeros_like, tree)


def normalize_all(tree):
    """``normalize()`` every group leaf of a pytree (other leaves unchanged)."""
    return _map(lambda x: x.normalize(), lambda x: x, tree)


def _in_tangent_space(transform: Callable, name: str, doc: str) -> Callable:
    """``transform`` (``jax.grad`` or ``jax.value_and_grad``) with group arguments differentiated
    in their tangent space: the derivative for a group leaf ``x`` is that of
    ``d -> fun(x @ exp(d))`` at ``d = 0`` (a tangent vector [..., tangent_dim], the parameters'
    dtype); other leaves are differentiated as ``transform`` does."""

    def lifted(
        fun: Callable,
        argnums: Union[int, Sequence[int]] = 0,
        has_aux: bool = False,
        holomorphic: bool = False,
        allow_int: bool = False,
    ) -> Callable:
        def wrapped(*args, **kwargs):
            def on_tangents(*tangent_args, **tangent_kwargs):
                return fun(*rplus(args, tangent_args), **rplus(kwargs, tangent_kwargs))

            return transform(on_tangents, argnums, has_aux, holomorphic, allow_int)(
                *zero_tangents(args), **zero_tangents(kwargs)
            )

        return wrapped

    # Named as module-level functions, so that import finds them again by name.
    lifted.__name__ = lifted.__qualname__ = name
    lifted.__doc__ = doc
    return lifted


value_and_grad = _in_tangent_space(
    jax.value_and_grad,
    "value_and_grad",
    """``jax.value_and_grad`` with group arguments differentiated in their tangent space:
    the gradient of a group leaf ``x`` is that of ``d -> fun(x @ exp(d))`` at ``d = 0``.""",
)
grad = _in_tangent_space(
    jax.grad,
    "grad",
    """``jax.grad`` in the tangent spaces of group arguments (see ``value_and_grad``); with
    ``has_aux`` it returns ``(gradient, aux)`` like ``jax.grad``.""",
)


__all__ = [
    "rplus",
    "rminus",
    "rplus_jacobian_parameters_wrt_delta",
    "zero_tangents",
    "normalize_all",
    "grad",
    "value_and_grad",
]
