"""jaxlie.manifold-style helpers over pytrees that contain group objects."""

from __future__ import annotations

import jax

from .groups import MatrixLieGroup


def _is_group(x) -> bool:
    return isinstance(x, MatrixLieGroup)


def rplus(transform, delta):
    """Apply ``x @ exp(d)`` to every group leaf of a pytree; other leaves get ``x + d``."""

    def step(x, d):
        return x.rplus(d) if _is_group(x) else x + d

    return jax.tree_util.tree_map(step, transform, delta, is_leaf=_is_group)


def rminus(a, b):
    """``log(a^-1 @ b)`` for every group leaf of two matching pytrees (``b - a`` otherwise)."""

    def diff(x, y):
        return x.rminus(y) if _is_group(x) else y - x

    return jax.tree_util.tree_map(diff, a, b, is_leaf=_is_group)
