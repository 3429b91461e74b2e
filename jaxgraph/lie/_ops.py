"""Small array helpers shared by the group files: hat/vee, quaternion products, float casts,
and the ``custom_jvp`` pattern of the maps."""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import jax
import jax.numpy as jnp

from ..smallmat import matmul, matvec  # noqa: F401  (small products of the group maps)


def hat3(w: jnp.ndarray) -> jnp.ndarray:
    """Skew-symmetric matrix [...,3,3] of w[...,3], so hat3(w) @ v = cross(w, v)."""
    x, y, z = w[..., 0], w[..., 1], w[..., 2]
    zero = jnp.zeros_like(x)
    return jnp.stack(
        [
            jnp.stack([zero, -z, y], axis=-1),
            jnp.stack([z, zero, -x], axis=-1),
            jnp.stack([-y, x, zero], axis=-1),
        ],
        axis=-2,
    )


def vee3(m: jnp.ndarray) -> jnp.ndarray:
    """Vector of the skew-symmetric part of m[...,3,3] (the inverse of hat3 on skew input)."""
    return 0.5 * jnp.stack(
        [m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]],
        axis=-1,
    )


def cross(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Cross product along the last axis (written out: faster than jnp.cross on CPU)."""
    ax, ay, az = a[..., 0], a[..., 1], a[..., 2]
    bx, by, bz = b[..., 0], b[..., 1], b[..., 2]
    return jnp.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], axis=-1)


def dot(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Inner product along a short last axis, unrolled (XLA's minor-axis reductions are slow on CPU)."""
    out = a[..., 0] * b[..., 0]
    for i in range(1, a.shape[-1]):
        out = out + a[..., i] * b[..., i]
    return out


def quaternion_multiply(p: jnp.ndarray, q: jnp.ndarray) -> jnp.ndarray:
    """Hamilton product of wxyz quaternions [...,4]."""
    pw, px, py, pz = p[..., 0], p[..., 1], p[..., 2], p[..., 3]
    qw, qx, qy, qz = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return jnp.stack(
        [
            pw * qw - px * qx - py * qy - pz * qz,
            pw * qx + px * qw + py * qz - pz * qy,
            pw * qy - px * qz + py * qw + pz * qx,
            pw * qz + px * qy - py * qx + pz * qw,
        ],
        axis=-1,
    )


def quaternion_conjugate(q: jnp.ndarray) -> jnp.ndarray:
    """Conjugate ``(w, -x, -y, -z)`` of wxyz quaternions ``q [..., 4]`` (the inverse of a unit one)."""
    return q * jnp.asarray([1.0, -1.0, -1.0, -1.0], dtype=q.dtype)


def default_float():
    """JAX's default floating dtype: float64 when ``jax_enable_x64`` is on, float32 otherwise."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def float_dtype(x: jnp.ndarray):
    """The floating dtype to compute in, as ``jnp.sin`` would: a float input keeps its dtype,
    64-bit integers become JAX's default float and narrower integers (and bool) float32."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x.dtype
    return default_float() if x.dtype.itemsize == 8 else jnp.dtype(jnp.float32)


def as_float(x) -> jnp.ndarray:
    """``x`` as an array of the floating dtype ``float_dtype`` picks (float input unchanged)."""
    x = jnp.asarray(x)
    return x.astype(float_dtype(x))


def custom_jvp_with(tangent: Callable) -> Callable:
    """Decorator: make a map ``y = f(x)`` of one array a ``jax.custom_jvp`` whose derivative is
    ``dy = tangent(x, y, dx)`` (same shapes and dtypes as ``x``, ``y``, ``dx``).

    The rule takes the primal from the decorated map itself, not from its undecorated body, so
    JAX differentiates the rule again for Hessians and every order goes through the safe
    closed-form derivatives.
    """

    def decorate(value: Callable) -> jax.custom_jvp:
        f = jax.custom_jvp(value)

        @f.defjvp
        def jvp(primals, tangents):
            (x,), (dx,) = primals, tangents
            y = f(x)
            return y, tangent(x, y, dx)

        return f

    return decorate


def check_trailing(x, shape: tuple, who: str, name: str) -> None:
    """Raise ValueError unless ``x`` (an array or array-like) ends in the axes ``shape``:
    a wrong-sized input would otherwise broadcast into a wrong answer or fail deep inside a
    map with an error that names neither the map nor the argument. Shapes are static, so this
    costs nothing in compiled code."""
    # arrays and tracers by their .shape; a list (of numbers or, in a jitted method, tracers) as an array
    got = tuple(x.shape if hasattr(x, "shape") else jnp.asarray(x).shape)
    if got[len(got) - len(shape):] != tuple(shape):  # a shorter shape gives a shorter slice
        want = ", ".join(str(n) for n in shape)
        raise ValueError(f"{who}: {name} must have shape [..., {want}], got shape {got}")


def trailing_shapes(*shapes: tuple) -> Callable:
    """Decorator: the map's leading array arguments must end in ``shapes`` (one tuple each,
    in order); see :func:`check_trailing`."""

    def decorate(fn: Callable) -> Callable:
        names = list(inspect.signature(fn).parameters)

        @functools.wraps(fn)
        def checked(*args):
            for x, shape, name in zip(args, shapes, names):
                check_trailing(x, shape, fn.__name__, name)
            return fn(*args)

        return checked

    return decorate
