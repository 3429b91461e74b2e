"""SO(2): exponential and logarithm of planar rotations.

Tangent ``theta[..., 1]`` (radians), matrices ``R[..., 2, 2]``. ``so2_log`` returns the
angle in (-pi, pi]; its derivative treats the input as a rotation (``dR`` projected on
the tangent, like SO(3)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._ops import matmul
from .so3 import _as_float


def _rotation(c, s):
    return jnp.stack([jnp.stack([c, -s], axis=-1), jnp.stack([s, c], axis=-1)], axis=-2)


def _hat2(theta):
    zero = jnp.zeros_like(theta)
    return _rotation(zero, theta)  # [[0, -theta], [theta, 0]]


@jax.custom_jvp
def _so2_exp(theta):
    return _rotation(jnp.cos(theta[..., 0]), jnp.sin(theta[..., 0]))


@_so2_exp.defjvp
def _so2_exp_jvp(primals, tangents):
    (theta,), (d,) = primals, tangents
    R = _so2_exp(theta)
    return R, matmul(R, _hat2(d[..., 0]))


def so2_exp(theta: jnp.ndarray) -> jnp.ndarray:
    """Rotation matrix R[...,2,2] of angle theta[...,1] (radians)."""
    return _so2_exp(_as_float(theta))


def _tangent(R, dR):
    m = matmul(jnp.swapaxes(R, -1, -2), dR)
    return 0.5 * (m[..., 1, 0] - m[..., 0, 1])


@jax.custom_jvp
def _so2_log(R):
    return jnp.arctan2(R[..., 1, 0] - R[..., 0, 1], R[..., 0, 0] + R[..., 1, 1])[..., None]


@_so2_log.defjvp
def _so2_log_jvp(primals, tangents):
    (R,), (dR,) = primals, tangents
    return _so2_log(R), _tangent(R, dR)[..., None]


def so2_log(R: jnp.ndarray) -> jnp.ndarray:
    """Angle theta[...,1] in (-pi, pi] of rotation matrix R[...,2,2]."""
    return _so2_log(_as_float(R))


__all__ = ["so2_exp", "so2_log"]
