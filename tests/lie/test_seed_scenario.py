"""The Theseus failure as a test: identity-initialised SE3 poses must give finite, exact gradients.

Pipeline: batch of identity SE3 poses -> rotation matrix -> quaternion -> matrix -> loss.
With R = I and loss = sum ||R - R_target||^2, the gradient with respect to the pose's
quaternion parameters (w, x, y, z) at w = 1 is, in closed form, (0, -8 vee(R_target)):
dR = hat(delta) with delta = 2 dq_xyz (the w direction is radial and normalised away),
and <I - R_target, hat(delta)> = -2 vee(R_target) . delta.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgraph import lie
from jaxgraph.lie import SE3


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_identity_poses_give_the_analytic_gradient(dtype):
    batch = 8
    targets = lie.so3_exp(jnp.asarray(np.random.default_rng(1).normal(size=(batch, 3)), dtype))
    params = SE3.identity((batch,), dtype).wxyz_xyz

    def loss(p):
        R = SE3(p).rotation().as_matrix()
        q = lie.quaternion_from_matrix(R)
        R2 = lie.matrix_from_quaternion(q)
        return jnp.sum((R2 - targets) ** 2)

    with jax.debug_nans(True):
        grad = jax.jit(jax.grad(loss))(params)
    assert bool(jnp.all(jnp.isfinite(grad)))
    vee = 0.5 * jnp.stack(
        [targets[:, 2, 1] - targets[:, 1, 2], targets[:, 0, 2] - targets[:, 2, 0], targets[:, 1, 0] - targets[:, 0, 1]], -1
    )
    expected = jnp.concatenate([jnp.zeros((batch, 1), dtype), -8.0 * vee, jnp.zeros((batch, 3), dtype)], -1)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(expected), atol=1e-5 if dtype == jnp.float32 else 1e-12)
