"""Bundle adjustment solved with the points eliminated first (Schur complement, the default)
reaches the solution of the whole-system solve (``schur=False``), in float64."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxgraph
from jaxgraph.io.bal import bundle_problem, quaternion_from_angle_axis
from jaxgraph.io.synthetic import synthetic_bal


@pytest.fixture(scope="module")
def bal():
    d = synthetic_bal(6, 150, seed=3)
    cams = np.concatenate([quaternion_from_angle_axis(d["cameras_init"][:, :3]), d["cameras_init"][:, 3:]], 1)
    return bundle_problem(cams, d["points_init"], d["camera_index"], d["point_index"], d["observations"],
                          dtype=jnp.float64)


@pytest.mark.parametrize("linear_solver", ["auto", "cholesky", "pcg"])
def test_schur_solve_equals_the_whole_system_solve(bal, linear_solver):
    problem, values = bal
    assert problem.structure.schur_groups() == ("points",)
    config = jaxgraph.SolverConfig(linear_solver=linear_solver).replace(diagonal_damping=True)
    out, info = jaxgraph.solve(problem, values, config)
    ref, info_ref = jaxgraph.solve(problem, values, config.replace(schur=False))
    assert bool(info.converged) and bool(info_ref.converged)
    assert int(info.iterations) == int(info_ref.iterations)
    assert abs(float(info.cost) - float(info_ref.cost)) <= 1e-9 * float(info_ref.cost)
    # the gauge of bundle adjustment (no priors) leaves the values free along 7 directions:
    # compare what is observable, the reprojection residuals (pixels)
    np.testing.assert_allclose(np.asarray(problem.residuals(out, "observations")),
                               np.asarray(problem.residuals(ref, "observations")), rtol=0, atol=1e-6)
