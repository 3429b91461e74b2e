"""``Group.adjoint_of_matrix(T)``, the adjoint read off the matrix (what between and prior
factors use), against its defining property ``T Exp(x) T^-1 = Exp(Ad x)`` and against the
parameters' ``adjoint()``, in float64, for every group."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgraph import lie

GROUPS = [lie.SO2, lie.SE2, lie.SO3, lie.SE3]


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.__name__)
def test_adjoint_of_matrix_satisfies_its_definition(group):
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(3)
        X = group.sample_uniform(key, (4,), dtype=jnp.float64)
        T = np.asarray(X.as_matrix())
        Ad = np.asarray(group.adjoint_of_matrix(jnp.asarray(T)))
        np.testing.assert_allclose(Ad, np.asarray(X.adjoint()), atol=1e-12)
        x = np.random.default_rng(0).normal(size=(4, group.tangent_dim)) * 0.3

        def Exp(v):  # noqa: N802  (the group exponential, as a matrix)
            return np.asarray(group.exp(jnp.asarray(v)).as_matrix())

        for i in range(4):
            left = T[i] @ Exp(x[i]) @ np.linalg.inv(T[i])
            np.testing.assert_allclose(left, Exp(Ad[i] @ x[i]), atol=1e-10)
