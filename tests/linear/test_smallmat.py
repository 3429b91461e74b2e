"""Unrolled small-matrix factorisations against numpy's LAPACK, and the hang they avoid."""

import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

from jaxgraph import noise, smallmat


@pytest.mark.parametrize("m", [1, 2, 3, 6, 8])
def test_cholesky_and_substitution_match_numpy(m):
    rng = np.random.default_rng(m)
    A = rng.standard_normal((40, m, m))
    A = A @ np.swapaxes(A, -1, -2) + 0.1 * np.eye(m)
    L = np.asarray(smallmat.cholesky(jnp.asarray(A)))
    Lref = np.linalg.cholesky(A)
    np.testing.assert_allclose(L, Lref, rtol=1e-5, atol=1e-5)
    b = rng.standard_normal((40, m))
    np.testing.assert_allclose(
        np.asarray(smallmat.forward_substitution(jnp.asarray(Lref), jnp.asarray(b))),
        np.linalg.solve(Lref, b[..., None])[..., 0],
        rtol=1e-4,
        atol=1e-4,
    )
    np.testing.assert_allclose(np.asarray(smallmat.lower_inverse(jnp.asarray(Lref))), np.linalg.inv(Lref), rtol=1e-4, atol=1e-4)


def test_cholesky_of_an_indefinite_matrix_is_nan_like_lapack():
    A = jnp.asarray(np.stack([np.eye(3), np.diag([1.0, -1.0, 1.0]), np.zeros((3, 3))]))
    L = np.asarray(smallmat.cholesky(A))
    np.testing.assert_array_equal(L, np.asarray(jnp.linalg.cholesky(A)))  # LAPACK's convention
    assert np.all(np.isfinite(L[0])) and np.all(np.isnan(L[1:][:, np.tril_indices(3)[0], np.tril_indices(3)[1]]))


def test_too_large_is_an_error():
    with pytest.raises(ValueError, match="MAX_UNROLLED"):
        smallmat.cholesky(jnp.eye(smallmat.MAX_UNROLLED + 1))


def test_covariance_is_the_inverse_square_root():
    rng = np.random.default_rng(3)
    S = rng.standard_normal((5, 4, 4))
    S = S @ np.swapaxes(S, -1, -2) + np.eye(4)
    R = np.asarray(noise.covariance(jnp.asarray(S)).matrix)
    np.testing.assert_allclose(np.swapaxes(R, -1, -2) @ R, np.linalg.inv(S), rtol=1e-4, atol=1e-5)


def test_side_by_side_noise_models_do_not_hang_xla_cpu():
    # Six information-matrix noise models prepared side by side in one program. With
    # jnp.linalg.cholesky this hangs forever on a 2-core machine: jaxlib's batched LAPACK
    # kernel blocks a pool thread while waiting for its chunks (see jaxgraph.smallmat).
    code = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np
        from jaxgraph import noise
        A = np.random.default_rng(0).standard_normal((5000, 6, 6))
        A = A @ A.transpose(0, 2, 1) + 6 * np.eye(6)
        f = jax.jit(lambda a: tuple(noise.information(jnp.sin(a) * 1e-3 + a * (i + 1)).prepare().matrix for i in range(6)))
        for _ in range(30):
            jax.block_until_ready(f(A))
        print("done")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0 and "done" in out.stdout, out.stderr[-2000:]


@pytest.mark.parametrize("m", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eigh_matches_lapack(m, dtype):
    rng = np.random.default_rng(10 + m)
    A = rng.standard_normal((300, m, m))
    A = A + np.swapaxes(A, -1, -2)  # symmetric, indefinite
    Q = np.linalg.qr(rng.standard_normal((m, m)))[0]
    special = np.stack([np.zeros((m, m)), np.eye(m), np.diag(1 + 1e-8 * np.arange(m)),  # zero, repeated, clustered
                        Q @ np.diag(10.0 ** (3 * np.arange(m))) @ Q.T])  # 1e9 spread
    A = np.concatenate([A, special]).astype(dtype)
    w, V = (np.asarray(x, np.float64) for x in smallmat.eigh(jnp.asarray(A)))
    A64 = A.astype(np.float64)
    scale = np.maximum(np.abs(A64).max(axis=(-2, -1)), 1e-30)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_array_less(np.abs(V @ (w[..., None] * np.swapaxes(V, -1, -2)) - A64).max(axis=(-2, -1)) / scale, tol)
    np.testing.assert_array_less(np.abs(np.swapaxes(V, -1, -2) @ V - np.eye(m)).max(axis=(-2, -1)), tol)
    np.testing.assert_array_less(np.abs(np.sort(w, axis=-1) - np.linalg.eigvalsh(A64)).max(axis=-1) / scale, tol)


def test_eigh_too_large_is_an_error():
    with pytest.raises(ValueError, match="MAX_EIGH"):
        smallmat.eigh(jnp.eye(smallmat.MAX_EIGH + 1))
