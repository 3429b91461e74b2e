"""Scalar coefficients of the Lie-group maps, safe at every angle.

Every coefficient is a smooth function of ``t = theta**2``. Near ``t = 0`` the closed
forms are 0/0 (or lose digits to cancellation), so below a per-dtype threshold we
evaluate a truncated Taylor series in ``t`` instead. Both branches are evaluated on
"safe" inputs (the double-``where`` pattern), so values *and* derivatives of every
order stay finite: the branch that is not selected sees a harmless constant.

Thresholds (see docs/lie.md): the closed forms are used for ``t >= T``, where the
relative cancellation error is about ``eps / t`` at worst (``eps`` the dtype's machine
epsilon); the series has enough terms that its truncation error at ``t = T`` is below
``eps``. float32: T = 1.0 (error of the series < 3e-10), float64: T = 0.1 (< 1e-18).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

_SERIES_TERMS = 8


def threshold(dtype) -> float:
    """The ``t = theta**2`` below which the series branch is used for ``dtype``."""
    return 1.0 if jnp.finfo(dtype).bits <= 32 else 0.1


def _horner(t: jnp.ndarray, coefficients: list[float]) -> jnp.ndarray:
    out = jnp.full_like(t, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        out = out * t + c
    return out


def _safe_value(t, series, exact):
    limit = threshold(t.dtype)
    small = t < limit
    # lax.select, not jnp.where (a nested jit of its own): every coefficient of every map takes
    # three, and each nested jit is traced, lowered and (in reverse mode) transposed apart
    t_series = lax.select(small, t, jnp.zeros_like(t))
    t_exact = lax.select(small, jnp.full_like(t, limit), t)
    return lax.select(small, _horner(t_series, list(series)), exact(t_exact))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _safe(t: jnp.ndarray, series: tuple, exact: Callable[[jnp.ndarray], jnp.ndarray]) -> jnp.ndarray:
    """Series for small ``t``, ``exact(t)`` otherwise, finite in every derivative.

    A ``custom_jvp``: the derivative of a safe coefficient is again a safe coefficient (the
    term-by-term derivative of the series below the threshold, the closed form's derivative
    above it), so reverse mode keeps one array per coefficient instead of every Horner step
    and every sin/cos/sqrt of both branches (intel's ``jit(value_and_grad)``: 48 of 248
    backward kernels). Every order goes through this rule again, so Hessians stay finite.
    """
    return _safe_value(t, series, exact)


@_safe.defjvp
def _safe_jvp(series, exact, primals, tangents):
    (t,), (dt,) = primals, tangents
    return _safe(t, series, exact), _safe(t, _series_derivative(series), _derivative(exact)) * dt


@functools.lru_cache(maxsize=None)
def _series_derivative(series: tuple) -> tuple:
    # d/dt sum_k c_k t^k = sum_k (k + 1) c_(k+1) t^k; one term fewer, which at the thresholds
    # above still truncates below eps (the next term is (k+1)/(2k+..)! times T^k)
    return tuple(k * c for k, c in enumerate(series))[1:] or (0.0,)


@functools.lru_cache(maxsize=None)
def _derivative(exact):
    # one derivative function per closed form (the closed forms are module-level functions): the
    # nondiff arguments of equal rules compare equal and the cache stays bounded
    def d(s):
        return jax.jvp(exact, (s,), (jnp.ones_like(s),))[1]

    return d


def _alternating(denominators: list[float]) -> tuple:
    return tuple((-1.0) ** k / d for k, d in enumerate(denominators))


_SIN_OVER_THETA = _alternating([math.factorial(2 * k + 1) for k in range(_SERIES_TERMS)])
_ONE_MINUS_COS = _alternating([math.factorial(2 * k + 2) for k in range(_SERIES_TERMS)])
_THETA_MINUS_SIN = _alternating([math.factorial(2 * k + 3) for k in range(_SERIES_TERMS)])
_C2 = _alternating([math.factorial(2 * k + 4) for k in range(_SERIES_TERMS)])
_C3 = tuple((-1.0) ** k * (k - 1) / math.factorial(2 * k + 1) for k in range(2, 2 + _SERIES_TERMS))
_HALF_COS = tuple((-1.0) ** k / (4.0**k * math.factorial(2 * k)) for k in range(_SERIES_TERMS))
_HALF_SIN = tuple((-1.0) ** k / (2.0 ** (2 * k + 1) * math.factorial(2 * k + 1)) for k in range(_SERIES_TERMS))
# Bernoulli numbers B_2 .. B_18 for (1 - (x/2) cot(x/2)) / x^2 = sum_n (-1)^(n+1) B_2n t^(n-1) / (2n)!
_BERNOULLI_EVEN = [1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6, -3617 / 510, 43867 / 798]
_COT = tuple((-1.0) ** (n + 1) * b / math.factorial(2 * n) for n, b in enumerate(_BERNOULLI_EVEN, start=1))


# The closed forms, module-level so that each has one cached derivative (see _derivative).
def _sin_over_theta_exact(s):
    return jnp.sin(jnp.sqrt(s)) / jnp.sqrt(s)


def _one_minus_cos_exact(s):
    return (1.0 - jnp.cos(jnp.sqrt(s))) / s


def _theta_minus_sin_exact(s):
    return (jnp.sqrt(s) - jnp.sin(jnp.sqrt(s))) / (s * jnp.sqrt(s))


def _c2_exact(s):
    return (s + 2.0 * jnp.cos(jnp.sqrt(s)) - 2.0) / (2.0 * s * s)


def _c3_exact(s):
    theta = jnp.sqrt(s)
    return (2.0 * theta - 3.0 * jnp.sin(theta) + theta * jnp.cos(theta)) / (2.0 * s * s * theta)


def _half_sin_exact(s):
    return jnp.sin(0.5 * jnp.sqrt(s)) / jnp.sqrt(s)


def _cot_exact(s):
    half = 0.5 * jnp.sqrt(s)
    return (1.0 - half * jnp.cos(half) / jnp.sin(half)) / s


def _half_cos_exact(s):
    return jnp.cos(0.5 * jnp.sqrt(s))


def sin_over_theta(t):
    """sin(theta) / theta."""
    return _safe(t, _SIN_OVER_THETA, _sin_over_theta_exact)


def one_minus_cos_over_theta2(t):
    """(1 - cos(theta)) / theta^2."""
    return _safe(t, _ONE_MINUS_COS, _one_minus_cos_exact)


def theta_minus_sin_over_theta3(t):
    """(theta - sin(theta)) / theta^3."""
    return _safe(t, _THETA_MINUS_SIN, _theta_minus_sin_exact)


def se3_q_c2(t):
    """(theta^2 + 2 cos(theta) - 2) / (2 theta^4), a coefficient of the SE(3) Jacobian."""
    return _safe(t, _C2, _c2_exact)


def se3_q_c3(t):
    """(2 theta - 3 sin(theta) + theta cos(theta)) / (2 theta^5), a coefficient of the SE(3) Jacobian."""
    return _safe(t, _C3, _c3_exact)


def half_sin_over_theta(t):
    """sin(theta / 2) / theta (the vector part of the quaternion exponential)."""
    return _safe(t, _HALF_SIN, _half_sin_exact)


def inverse_jacobian_coefficient(t):
    """(1 - (theta/2) cot(theta/2)) / theta^2: the W^2 coefficient of J^-1.

    Equal to 1/theta^2 - (1 + cos theta) / (2 theta sin theta); written with the
    half-angle cotangent so it is finite (-> 1/pi^2) at theta = pi.
    """
    return _safe(t, _COT, _cot_exact)


def cos_half_theta(t):
    """cos(theta / 2) (the scalar part of the quaternion exponential)."""
    return _safe(t, _HALF_COS, _half_cos_exact)
