"""Every Jacobian against central finite differences in float64 (independent of our rules)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgraph import lie

from ._reference import expm, hat, se2_hat, se3_hat, vee

RNG = np.random.default_rng(42)
EPS = 1e-6


def _fd(f, x, eps=EPS):
    """Central differences of f (numpy in, numpy out) at x, one column per input entry."""
    x = np.asarray(x, np.float64)
    cols = []
    for i in range(x.size):
        e = np.zeros_like(x).reshape(-1)
        e[i] = eps
        e = e.reshape(x.shape)
        cols.append((np.asarray(f(x + e)) - np.asarray(f(x - e))).reshape(-1) / (2 * eps))
    return np.stack(cols, axis=-1)


def _se3_vee(m):
    return np.concatenate([m[:3, 3], vee(m[:3, :3])])


def _se2_vee(m):
    return np.array([m[0, 2], m[1, 2], 0.5 * (m[1, 0] - m[0, 1])])


TANGENTS3 = [RNG.normal(size=3) * s for s in (1e-7, 0.3, 1.5)] + [np.array([0.0, 0.0, np.pi - 1e-3])]
TANGENTS6 = [np.concatenate([RNG.normal(size=3), w]) for w in TANGENTS3]
TANGENTS_SE2 = [np.array([0.4, -0.3, t]) for t in (1e-7, 0.3, 2.5, -np.pi + 1e-3)]


@pytest.mark.parametrize("k", range(len(TANGENTS3)))
def test_so3_jacobians(k):
    w = TANGENTS3[k]
    R = expm(hat(w))
    # Right Jacobian: Exp(w + d) = Exp(w) Exp(Jr d)  =>  Jr = d/dd vee(log(R^T Exp(w + d))) ~ vee(R^T dR)
    jr = _fd(lambda x: vee(R.T @ expm(hat(x))), w)
    jl = _fd(lambda x: vee(expm(hat(x)) @ R.T), w)
    np.testing.assert_allclose(np.asarray(lie.so3_right_jacobian(jnp.asarray(w))), jr, atol=1e-8)
    np.testing.assert_allclose(np.asarray(lie.so3_left_jacobian(jnp.asarray(w))), jl, atol=1e-8)
    np.testing.assert_allclose(np.asarray(lie.so3_right_jacobian_inverse(jnp.asarray(w))), np.linalg.inv(jr), atol=1e-7)
    np.testing.assert_allclose(np.asarray(lie.so3_left_jacobian_inverse(jnp.asarray(w))), np.linalg.inv(jl), atol=1e-7)
    # The maps' own derivatives (custom_jvp rules), forward and reverse, against differences.
    np.testing.assert_allclose(np.asarray(jax.jacfwd(lie.so3_exp)(jnp.asarray(w))).reshape(9, 3), _fd(lambda x: expm(hat(x)), w), atol=1e-8)
    np.testing.assert_allclose(np.asarray(jax.jacrev(lie.so3_exp)(jnp.asarray(w))).reshape(9, 3), _fd(lambda x: expm(hat(x)), w), atol=1e-8)
    # so3_log along rotations: d/dd log(R Exp(d)).
    log_fd = _fd(lambda d: np.asarray(lie.so3_log(jnp.asarray(R @ expm(hat(d))))), np.zeros(3))
    np.testing.assert_allclose(np.asarray(jax.jacrev(lambda d: lie.so3_log(jnp.asarray(R) @ lie.so3_exp(d)))(jnp.zeros(3))), log_fd, atol=1e-7)
    q_fd = _fd(lambda d: np.asarray(lie.quaternion_from_matrix(jnp.asarray(R @ expm(hat(d))))), np.zeros(3))
    np.testing.assert_allclose(np.asarray(jax.jacfwd(lambda d: lie.quaternion_from_matrix(jnp.asarray(R) @ lie.so3_exp(d)))(jnp.zeros(3))), q_fd, atol=1e-7)


def test_matrix_from_quaternion_all_directions():
    """Unnormalised quaternions: the derivative includes the normalisation (radial part 0)."""
    for q in [np.array([2.0, 0.0, 0.0, 0.0]), RNG.normal(size=4), np.array([0.0, 0.3, -1.0, 0.2])]:
        expected = _fd(lambda x: np.asarray(lie.matrix_from_quaternion(jnp.asarray(x))), q)
        np.testing.assert_allclose(np.asarray(jax.jacfwd(lie.matrix_from_quaternion)(jnp.asarray(q))).reshape(9, 4), expected, atol=1e-8)
        if abs(q[0]) < 1e-3:
            continue  # log jumps between the two antipodal vectors across w = 0 (angle pi)
        np.testing.assert_allclose(np.asarray(jax.jacrev(lie.quaternion_log)(jnp.asarray(q))), _fd(lambda x: np.asarray(lie.quaternion_log(jnp.asarray(x))), q), atol=1e-7)


@pytest.mark.parametrize("k", range(len(TANGENTS6)))
def test_se3_jacobians(k):
    xi = TANGENTS6[k]
    T = expm(se3_hat(xi))
    np.testing.assert_allclose(np.asarray(lie.se3_exp(jnp.asarray(xi))), T, atol=1e-10)
    jr = _fd(lambda x: _se3_vee(np.linalg.inv(T) @ expm(se3_hat(x))), xi)
    jl = _fd(lambda x: _se3_vee(expm(se3_hat(x)) @ np.linalg.inv(T)), xi)
    np.testing.assert_allclose(np.asarray(lie.se3_right_jacobian(jnp.asarray(xi))), jr, atol=1e-7)
    np.testing.assert_allclose(np.asarray(lie.se3_left_jacobian(jnp.asarray(xi))), jl, atol=1e-7)
    np.testing.assert_allclose(np.asarray(lie.se3_right_jacobian_inverse(jnp.asarray(xi))), np.linalg.inv(jr), atol=1e-6)
    np.testing.assert_allclose(np.asarray(lie.se3_left_jacobian_inverse(jnp.asarray(xi))), np.linalg.inv(jl), atol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.jacfwd(lie.se3_exp)(jnp.asarray(xi))).reshape(16, 6), _fd(lambda x: expm(se3_hat(x)), xi), atol=1e-7)
    log_fd = _fd(lambda d: np.asarray(lie.se3_log(jnp.asarray(T @ expm(se3_hat(d))))), np.zeros(6))
    np.testing.assert_allclose(np.asarray(jax.jacrev(lambda d: lie.se3_log(jnp.asarray(T) @ lie.se3_exp(d)))(jnp.zeros(6))), log_fd, atol=1e-6)
    # Translation directions of a full matrix perturbation are tangent too.
    np.testing.assert_allclose(np.asarray(lie.se3_log(jnp.asarray(T))), xi, atol=1e-9)
    # Adjoint: T Exp(x) T^-1 = Exp(Ad(T) x).
    x = RNG.normal(size=6)
    lhs = T @ expm(se3_hat(x)) @ np.linalg.inv(T)
    np.testing.assert_allclose(expm(se3_hat(np.asarray(lie.se3_adjoint(jnp.asarray(T))) @ x)), lhs, atol=1e-9)


@pytest.mark.parametrize("k", range(len(TANGENTS_SE2)))
def test_se2_jacobians(k):
    xi = TANGENTS_SE2[k]
    T = expm(se2_hat(xi))
    np.testing.assert_allclose(np.asarray(lie.se2_exp(jnp.asarray(xi))), T, atol=1e-10)
    np.testing.assert_allclose(np.asarray(lie.se2_log(jnp.asarray(T))), xi, atol=1e-9)
    jr = _fd(lambda x: _se2_vee(np.linalg.inv(T) @ expm(se2_hat(x))), xi)
    jl = _fd(lambda x: _se2_vee(expm(se2_hat(x)) @ np.linalg.inv(T)), xi)
    np.testing.assert_allclose(np.asarray(lie.se2_right_jacobian(jnp.asarray(xi))), jr, atol=1e-7)
    np.testing.assert_allclose(np.asarray(lie.se2_left_jacobian(jnp.asarray(xi))), jl, atol=1e-7)
    np.testing.assert_allclose(np.asarray(lie.se2_right_jacobian_inverse(jnp.asarray(xi))), np.linalg.inv(jr), atol=1e-6)
    np.testing.assert_allclose(np.asarray(lie.se2_left_jacobian_inverse(jnp.asarray(xi))), np.linalg.inv(jl), atol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.jacfwd(lie.se2_exp)(jnp.asarray(xi))).reshape(9, 3), _fd(lambda x: expm(se2_hat(x)), xi), atol=1e-7)
    log_fd = _fd(lambda d: np.asarray(lie.se2_log(jnp.asarray(T @ expm(se2_hat(d))))), np.zeros(3))
    np.testing.assert_allclose(np.asarray(jax.jacrev(lambda d: lie.se2_log(jnp.asarray(T) @ lie.se2_exp(d)))(jnp.zeros(3))), log_fd, atol=1e-6)
    x = RNG.normal(size=3)
    lhs = T @ expm(se2_hat(x)) @ np.linalg.inv(T)
    np.testing.assert_allclose(expm(se2_hat(np.asarray(lie.se2_adjoint(jnp.asarray(T))) @ x)), lhs, atol=1e-9)


def test_so2_maps():
    for t in (0.0, 1e-9, 1.0, np.pi - 1e-6, -2.0):
        R = expm(se2_hat(np.array([0.0, 0.0, t])))[:2, :2]
        np.testing.assert_allclose(np.asarray(lie.so2_exp(jnp.asarray([t]))), R, atol=1e-12)
        np.testing.assert_allclose(np.asarray(lie.so2_log(jnp.asarray(R))), [t], atol=1e-12)
        d = jax.jacfwd(lambda a: lie.so2_log(jnp.asarray(R) @ lie.so2_exp(a)))(jnp.zeros(1))
        np.testing.assert_allclose(np.asarray(d), [[1.0]], atol=1e-12)
