"""The derivative rule of the safe coefficients (``lie._series._safe``'s ``custom_jvp``).

Each coefficient is checked against its closed form differentiated in 60-digit arithmetic
(mpmath, 120 digits; the closed forms are entire in ``t``, so below 0 the complex square root gives the
same analytic function), first and second derivatives, in float64 at the identity, on both
sides of the series threshold and up to ``theta = pi``; and in float32 across its threshold.
First derivatives must equal plain autodiff through both branches (the rule before the
``custom_jvp``) to rounding.
"""

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

from jaxgraph.lie import _series

mpmath.mp.dps = 120


def _sq(t):
    return mpmath.sqrt(t)


# closed forms in mpmath (the docstrings of jaxgraph.lie._series), written independently
REFERENCES = {
    "sin_over_theta": lambda t: mpmath.sin(_sq(t)) / _sq(t),
    "one_minus_cos_over_theta2": lambda t: (1 - mpmath.cos(_sq(t))) / t,
    "theta_minus_sin_over_theta3": lambda t: (_sq(t) - mpmath.sin(_sq(t))) / (t * _sq(t)),
    "se3_q_c2": lambda t: (t + 2 * mpmath.cos(_sq(t)) - 2) / (2 * t * t),
    "se3_q_c3": lambda t: (2 * _sq(t) - 3 * mpmath.sin(_sq(t)) + _sq(t) * mpmath.cos(_sq(t))) / (2 * t * t * _sq(t)),
    "half_sin_over_theta": lambda t: mpmath.sin(_sq(t) / 2) / _sq(t),
    "inverse_jacobian_coefficient": lambda t: 1 / t - (1 + mpmath.cos(_sq(t))) / (2 * _sq(t) * mpmath.sin(_sq(t))),
    "cos_half_theta": lambda t: mpmath.cos(_sq(t) / 2),
}

T64 = [0.0, 1e-12, 1e-6, 0.05, 0.0999, 0.1, 0.1001, 0.5, 1.0, 2.0, 5.0, (np.pi - 1e-4) ** 2, np.pi**2]
T32 = [0.0, 1e-6, 0.3, 0.999, 1.0, 1.001, 2.0, 5.0, np.pi**2]


def _reference(name, t, order):
    f = REFERENCES[name]
    # at 0 the closed forms are 0/0: differentiate at t = 1e-30 instead (the derivatives change
    # by about 1e-30 relative there, far below float64's reach)
    x = mpmath.mpf(t) if t != 0.0 else mpmath.mpf("1e-30")
    return float(mpmath.re(mpmath.diff(f, x, order)))


def _derivatives(fn, t):
    d1 = jax.vmap(jax.grad(fn))(t)
    d2 = jax.vmap(jax.grad(jax.grad(fn)))(t)
    return np.asarray(d1), np.asarray(d2)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_float64_derivatives_match_the_closed_form(name):
    fn = getattr(_series, name)
    t = jnp.asarray(T64, jnp.float64)
    d1, d2 = _derivatives(fn, t)
    r1 = np.array([_reference(name, x, 1) for x in T64])
    r2 = np.array([_reference(name, x, 2) for x in T64])
    # just above t = 0.1 the closed forms' derivatives lose digits to cancellation (se3_q_c3:
    # 7e-10 relative at t = 0.1001, as much as plain autodiff of the closed form did)
    np.testing.assert_allclose(d1, r1, rtol=2e-9, atol=1e-14)
    # second derivatives: se3_q_c3 6e-7 and se3_q_c2 4e-8 relative at t = 0.1001 (plain autodiff
    # of the closed forms: 4e-7 and 4e-8), every other coefficient and point below 6e-10
    np.testing.assert_allclose(d2, r2, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_float32_derivatives_are_finite_and_close(name):
    fn = getattr(_series, name)
    t = jnp.asarray(T32, jnp.float32)
    d1, d2 = _derivatives(fn, t)
    assert np.isfinite(d1).all() and np.isfinite(d2).all()
    r1 = np.array([_reference(name, x, 1) for x in T32])
    r2 = np.array([_reference(name, x, 2) for x in T32])
    np.testing.assert_allclose(d1, r1, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(d2, r2, rtol=2e-2, atol=1e-5)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_first_derivative_equals_autodiff_through_both_branches(name):
    fn = getattr(_series, name)
    # the coefficient's (series, closed form) pair, recovered by calling it with a spy
    seen = {}
    real = _series._safe

    def spy(t, series, exact):
        seen["args"] = (series, exact)
        return real(t, series, exact)

    _series._safe = spy
    try:
        fn(jnp.zeros((), jnp.float64))
    finally:
        _series._safe = real
    series, exact = seen["args"]
    t = jnp.asarray(T64, jnp.float64)
    plain = jax.vmap(jax.grad(lambda s: _series._safe_value(s, series, exact)))(t)
    rule = jax.vmap(jax.grad(fn))(t)
    # equal to rounding; forward and reverse mode round differently, and just above the
    # threshold the closed forms' cancellation amplifies that (se3_q_c3: 3e-10 at t = 0.1001)
    small = np.asarray(t) < _series.threshold(jnp.float64)
    np.testing.assert_allclose(np.asarray(rule)[small], np.asarray(plain)[small], rtol=1e-14, atol=1e-18)
    np.testing.assert_allclose(np.asarray(rule), np.asarray(plain), rtol=1e-9, atol=1e-18)
