"""Variables of different tangent sizes are not padded: blocks of ``d = gcd`` of the sizes,
unknowns and stored entries equal the true counts, and the normal equations, the solve and
the marginals equal dense float64 references built from the whitened Jacobian of the
stacked residuals (``jax.jacfwd`` through each kind's retraction)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgraph
from jaxgraph import lie
from jaxgraph.factors import between, custom, prior
from jaxgraph.noise import diagonal, isotropic


def _point_in_frame(params, data):
    """The point expressed in the pose frame minus the measurement (2D or 3D pose)."""
    pose, point = params
    n = point.shape[0]
    if n == 3:
        T = lie.SE3(pose)
        return T.inverse().apply(point) - data
    T = lie.SE2.from_xy_theta(pose[0], pose[1], pose[2]) if pose.shape[0] == 3 else lie.SE2(pose)
    return T.inverse().apply(point) - data


def _problem(dim, seed=0, poses=4, points=3):
    """Poses on a line observing points, odometry, a prior on pose 0; the start perturbed."""
    rng = np.random.default_rng(seed)
    if dim == 3:
        kind, pdim = lie.SE3, 3
        truth = np.asarray(lie.SE3.exp(jnp.asarray(np.c_[np.arange(poses)[:, None] * [1.0, 0.1, 0.0],
                                                            0.1 * rng.normal(size=(poses, 3))])).parameters())
    else:
        kind, pdim = "SE2", 2
        truth = np.c_[np.arange(poses), 0.2 * rng.normal(size=poses), 0.1 * rng.normal(size=poses)]
    points_true = rng.uniform(-2, 6, size=(points, pdim))
    pi = np.repeat(np.arange(poses), points)
    li = np.tile(np.arange(points), poses)
    problem_truth = jaxgraph.Problem(
        [jaxgraph.VariableGroup("poses", kind, poses), jaxgraph.VariableGroup("points", pdim, points)], [])
    vals_truth = {"poses": jnp.asarray(truth), "points": jnp.asarray(points_true)}
    # measurements from the truth, then noise
    meas = np.asarray(jax.vmap(lambda p, q: _point_in_frame((p, q), jnp.zeros(pdim)))(
        vals_truth["poses"][pi], vals_truth["points"][li])) + 0.01 * rng.normal(size=(pi.size, pdim))
    kinds = problem_truth.structure.kinds
    rel = kinds["poses"].to_matrix(vals_truth["poses"])
    odo = kinds["poses"].from_matrix(jnp.linalg.inv(rel[:-1]) @ rel[1:])
    factors = [
        prior("poses", [0], vals_truth["poses"][:1], isotropic(0.01), name="anchor"),
        between("poses", np.arange(poses - 1), np.arange(1, poses), odo, isotropic(0.05), name="odo"),
        custom(_point_in_frame, [("poses", pi), ("points", li)], jnp.asarray(meas),
               diagonal(jnp.asarray([0.05] * pdim)), pdim, name="obs"),
    ]
    problem = jaxgraph.Problem(
        [jaxgraph.VariableGroup("poses", kind, poses), jaxgraph.VariableGroup("points", pdim, points)], factors)
    start = problem.retract(vals_truth, jnp.asarray(0.05 * rng.normal(size=(problem.structure.num_blocks,
                                                                             problem.structure.block_dim))))
    return problem, start


def _dense_reference(problem, values):
    """``(H, g)`` from the dense whitened Jacobian of all residuals (float64)."""
    st = problem.structure
    tangent = {v.name: st.kinds[v.name].tangent_dim for v in problem.variables}
    sizes = [v.count * tangent[v.name] for v in problem.variables]

    def residuals(delta):
        moved, start = {}, 0
        for v, size in zip(problem.variables, sizes):
            step = delta[start:start + size].reshape(v.count, tangent[v.name])
            moved[v.name] = st.kinds[v.name].retract(values[v.name], step)
            start += size
        return jnp.concatenate([problem.whitened_errors(moved, g.name).reshape(-1) for g in problem.factors])

    zero = jnp.zeros(sum(sizes))
    J = jax.jacfwd(residuals)(zero)
    e = residuals(zero)
    return J.T @ J, J.T @ e


def _to_dense(st, lin):
    """The dense matrix of a Linearization (block layout of the structure)."""
    n, d = st.num_blocks, st.block_dim
    H = np.zeros((n * d, n * d))
    for i in range(n):
        H[i * d:(i + 1) * d, i * d:(i + 1) * d] += np.asarray(lin.diag[i])
    for k, (r, c) in enumerate(zip(st.off_rows, st.off_cols)):
        B = np.asarray(lin.offdiag[k])
        H[r * d:(r + 1) * d, c * d:(c + 1) * d] += B
        H[c * d:(c + 1) * d, r * d:(r + 1) * d] += B.T
    return H


@pytest.mark.parametrize("dim, block", [(2, 1), (3, 3)])
def test_blocks_are_the_gcd_and_counts_are_true(dim, block):
    problem, _ = _problem(dim)
    st = problem.structure
    tangent = 3 if dim == 2 else 6
    assert st.block_dim == block
    assert st.num_blocks * st.block_dim == 4 * tangent + 3 * dim  # unknowns: no padding
    assert st.blocks_per == {"poses": tangent // block, "points": dim // block}


# Slow (22-25 s each: the linearisation and the dense Jacobian run op by op, eagerly). Covered
# in the fast suite by test_marginals_equal_the_dense_inverse (H, through every variable's
# block of H^-1 against the same dense reference, 1e-8) and by
# test_solve_reaches_a_stationary_point_with_every_linear_solver (g: the dense J^T e vanishes
# where our g does), both dims. Under jax.jit this test takes 6-15 s.
@pytest.mark.slow
@pytest.mark.parametrize("dim", [2, 3])
def test_normal_equations_equal_the_dense_jacobian(dim):
    problem, values = _problem(dim)
    values = {k: jnp.asarray(v, jnp.float64) for k, v in values.items()}
    lin = problem.prepared(jnp.float64).linearize(values)
    H_ref, g_ref = _dense_reference(problem, values)
    np.testing.assert_allclose(_to_dense(problem.structure, lin), H_ref, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(np.asarray(lin.gradient).reshape(-1), g_ref, rtol=1e-10, atol=1e-8)
    # stored entries: the off-diagonal blocks hold exactly the true products, none padded
    assert lin.diag.shape == (problem.structure.num_blocks, problem.structure.block_dim,
                              problem.structure.block_dim)


# dim 3 (37 s) runs in the slow set: the default suite stays within its 15 minutes
@pytest.mark.parametrize("dim", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_solve_reaches_a_stationary_point_with_every_linear_solver(dim):
    problem, values = _problem(dim)
    values = {k: jnp.asarray(v, jnp.float64) for k, v in values.items()}
    costs = {}
    for method in ("dense", "cholesky", "host", "pcg"):
        out, info = jaxgraph.solve(problem, values, jaxgraph.SolverConfig(linear_solver=method))
        assert bool(info.converged), (method, info.status)
        costs[method] = float(info.cost)
        _, g = _dense_reference(problem, out)
        assert np.max(np.abs(g)) < 1e-6 * max(1.0, float(info.initial_cost)), method
    ref = costs["dense"]
    for method, c in costs.items():
        assert abs(c - ref) <= 1e-8 * ref, (method, c, ref)


@pytest.mark.parametrize("dim", [2, 3])
def test_marginals_equal_the_dense_inverse(dim):
    problem, values = _problem(dim)
    values = {k: jnp.asarray(v, jnp.float64) for k, v in values.items()}
    covs = jaxgraph.marginals(problem, values)
    H_ref, _ = _dense_reference(problem, values)
    inv = np.linalg.inv(H_ref)
    start = 0
    for v in problem.variables:
        t = problem.structure.kinds[v.name].tangent_dim
        for i in range(v.count):
            s = start + i * t
            np.testing.assert_allclose(np.asarray(covs[v.name][i]), inv[s:s + t, s:s + t], rtol=1e-8, atol=1e-12)
        start += v.count * t


def test_sized_problem_solves_like_the_exact_one():
    problem, values = _problem(3, points=5)
    values = {k: jnp.asarray(v, jnp.float64) for k, v in values.items()}
    sized = problem.sized({"points": 7, "obs": 40})
    assert sized.structure.num_offdiag == len(sized.index.off_rows)
    config = jaxgraph.SolverConfig(linear_solver="dense")
    out, info = jaxgraph.solve(sized, sized.pad_values(values), config)
    ref, info_ref = jaxgraph.solve(problem, values, config)
    assert abs(float(info.cost) - float(info_ref.cost)) <= 1e-9 * float(info_ref.cost)
    cut = sized.unpad_values(out, problem)
    for k in ref:
        np.testing.assert_allclose(np.asarray(cut[k]), np.asarray(ref[k]), atol=1e-7)
