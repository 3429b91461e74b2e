"""Sweep of the singular points (identity, tiny angles, pi and just below, noisy input).

Values, Jacobians and Hessians must be finite in float32 and float64, and the Jacobian
of ``so3_log`` must equal the closed-form ``Jr(w)^-1`` (the one-sided limit at pi).
Each check runs once, vmapped over the whole sweep, to keep compilation cheap.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgraph import lie

from ._reference import hat, right_jacobian_inverse, rotation

ANGLES = [0.0, 1e-12, 1e-9, 1e-6, 1e-4, 1e-2, 0.5, 2.0, np.pi - 1e-4, np.pi - 1e-6, np.pi]
AXES = [np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0]), np.array([1.0, -2.0, 0.5]) / np.linalg.norm([1.0, -2.0, 0.5])]
SWEEP = [(angle, axis) for angle, axis in itertools.product(ANGLES, AXES)]
W_SWEEP = np.stack([axis * angle for angle, axis in SWEEP])
DTYPES = [jnp.float32, jnp.float64]


def _all_finite(*trees):
    return all(bool(jnp.all(jnp.isfinite(x))) for t in trees for x in jax.tree_util.tree_leaves(t))


def _tolerance(dtype):
    return 2e-4 if dtype == jnp.float32 else 1e-9


def _log_right_jacobian(R):
    return jax.jacfwd(lambda d: lie.so3_log(R @ lie.so3_exp(d)))(jnp.zeros(3, R.dtype))


def _log_right_jacobian_rev(R):
    return jax.jacrev(lambda d: lie.so3_log(R @ lie.so3_exp(d)))(jnp.zeros(3, R.dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_so3_log_value_and_jacobian(dtype):
    R = jnp.asarray(np.stack([rotation(w) for w in W_SWEEP]), dtype=dtype)
    out = jax.jit(lie.so3_log)(R)
    assert out.dtype == dtype
    jac = jax.jit(jax.vmap(_log_right_jacobian))(R)
    jac_rev = jax.jit(jax.vmap(_log_right_jacobian_rev))(R)
    assert _all_finite(out, jac, jac_rev)
    tol = _tolerance(dtype)
    for k, (angle, axis) in enumerate(SWEEP):
        w = axis * angle
        got = np.asarray(out[k], dtype=np.float64)
        if angle < np.pi - 1e-3:
            np.testing.assert_allclose(got, w, atol=tol * max(1.0, angle))
        else:  # the same rotation; at pi itself either sign of the axis
            np.testing.assert_allclose(rotation(got), rotation(w), atol=10 * tol)
        expected = right_jacobian_inverse(got)
        np.testing.assert_allclose(np.asarray(jac[k], np.float64), expected, atol=50 * tol, err_msg=f"{angle} {axis}")
        np.testing.assert_allclose(np.asarray(jac_rev[k], np.float64), expected, atol=50 * tol)


def test_so3_log_jacobian_at_pi_is_the_one_sided_limit():
    """At exactly pi, d log(R Exp(d)) equals the limit of Jr^-1 from below pi (jaxlie's is not)."""
    R = jnp.asarray(rotation(np.pi * np.array([0.0, 0.0, 1.0])))
    jac = np.asarray(_log_right_jacobian(R))
    w = np.asarray(lie.so3_log(R))
    np.testing.assert_allclose(jac, right_jacobian_inverse(w * (1 - 1e-9)), atol=1e-6)
    # The limit is a a^T + (pi/2) hat(a) for w = pi a: the identity and W^2 terms cancel.
    a = w / np.linalg.norm(w)
    np.testing.assert_allclose(jac, np.outer(a, a) + 0.5 * np.pi * hat(a), atol=1e-9)


def _second_order_checks(dtype):
    """(name, scalar function of a tangent, tangent batch) triples over the sweep.

    The group classes' ``exp``/``log`` run these same functions when traced, so they are not
    repeated here (each map's Hessian costs seconds of compilation).
    """
    w = jnp.asarray(W_SWEEP, dtype)
    xi6 = jnp.concatenate([jnp.broadcast_to(jnp.asarray([0.3, -0.1, 0.2], dtype), w.shape), w], axis=-1)
    theta = jnp.asarray([a for a, _ in SWEEP] + [-a for a, _ in SWEEP], dtype)
    xi3 = jnp.stack([jnp.full_like(theta, 0.3), jnp.full_like(theta, -0.1), theta], axis=-1)
    weights9 = jnp.arange(9, dtype=dtype).reshape(3, 3)
    return [
        ("so3_exp", lambda v: jnp.sum(lie.so3_exp(v) * weights9), w),
        ("so3_log", lambda v: jnp.sum(lie.so3_log(lie.so3_exp(v)) ** 2), w),
        ("quaternion_from_matrix", lambda v: jnp.sum(lie.quaternion_from_matrix(lie.so3_exp(v)) * jnp.arange(4, dtype=dtype)), w),
        ("matrix_from_quaternion", lambda v: jnp.sum(lie.matrix_from_quaternion(lie.quaternion_exp(v)) * weights9), w),
        ("se3_log", lambda v: jnp.sum(lie.se3_log(lie.se3_exp(v)) * jnp.arange(6, dtype=dtype)), xi6),
        ("se3_right_jacobian_inverse", lambda v: jnp.sum(lie.se3_right_jacobian_inverse(v)), xi6),
        ("se2_log", lambda v: jnp.sum(lie.se2_log(lie.se2_exp(v)) * jnp.arange(3, dtype=dtype)), xi3),
        ("se2_right_jacobian_inverse", lambda v: jnp.sum(lie.se2_right_jacobian_inverse(v)), xi3),
    ]


@pytest.fixture
def fast_compile():
    """These programs only need to be finite, not fast: skip most XLA optimisation passes."""
    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


# float64 is slow; its float32 twin stays in the fast suite
SLOW_FLOAT64 = [jnp.float32, pytest.param(jnp.float64, marks=pytest.mark.slow)]


# Both dtypes run in the slow set (about 50 s each on the 2-core CI machine, which kept the
# default suite over its 15 minutes); tests/lie/test_series_derivatives.py checks the second
# derivatives of every safe coefficient against mpmath, in float32 and float64, by default.
@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_second_derivatives_finite(dtype, fast_compile):
    checks = _second_order_checks(dtype)

    @jax.jit
    def evaluate(inputs):
        # One compilation for all maps: value, gradient and Hessian of each over the sweep.
        return [jax.vmap(lambda v, f=f: (f(v), jax.grad(f)(v), jax.hessian(f)(v)))(x) for (_, f, _), x in zip(checks, inputs)]

    for (name, _, _), (value, grad, hess) in zip(checks, evaluate([x for _, _, x in checks])):
        assert _all_finite(value, grad, hess), name
        assert grad.dtype == dtype and hess.dtype == dtype, name


@pytest.mark.parametrize("dtype", SLOW_FLOAT64)
def test_noisy_rotation_matrices(dtype, fast_compile):
    rng = np.random.default_rng(0)
    clean = np.stack([rotation(axis * angle) for angle in [0.0, 1e-8, 1.0, np.pi - 1e-6, np.pi] for axis in AXES])
    R = jnp.asarray(clean + 1e-6 * rng.standard_normal(clean.shape), dtype=dtype)
    got = np.asarray(lie.so3_log(R), np.float64)
    for k in range(len(clean)):
        np.testing.assert_allclose(rotation(got[k]), clean[k], atol=2e-5)
    q = np.asarray(lie.quaternion_from_matrix(R), np.float64)
    assert np.all(q[:, 0] >= 0.0)
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=2e-5)  # unit to within the input noise

    def se3_log_of_rotation(m):
        return lie.se3_log(jnp.eye(4, dtype=dtype).at[:3, :3].set(m))

    for f in (lie.so3_log, lie.quaternion_from_matrix, se3_log_of_rotation):
        jac = jax.jit(jax.vmap(jax.jacfwd(f)))(R)
        hess = jax.jit(jax.vmap(jax.hessian(lambda m: jnp.sum(f(m) ** 2))))(R)
        assert _all_finite(jac, hess)


@pytest.mark.parametrize("dtype", DTYPES)
def test_se2_at_pi_and_tiny(dtype):
    thetas = [0.0, 1e-12, 1e-6, 1e-4, np.pi - 1e-6, np.pi, -np.pi + 1e-6]
    xi = jnp.asarray([[0.7, -0.4, t] for t in thetas], dtype)
    T = lie.se2_exp(xi)
    back = lie.se2_log(T)
    assert _all_finite(back, jax.jit(jax.vmap(jax.jacfwd(lie.se2_log)))(T), jax.jit(jax.vmap(jax.jacfwd(lie.se2_exp)))(xi))
    for k, t in enumerate(thetas):
        if abs(t) < np.pi - 1e-3:
            np.testing.assert_allclose(np.asarray(back[k], np.float64), np.asarray(xi[k], np.float64), atol=_tolerance(dtype))
        else:
            np.testing.assert_allclose(np.asarray(lie.se2_exp(back[k]), np.float64), np.asarray(T[k], np.float64), atol=10 * _tolerance(dtype))
