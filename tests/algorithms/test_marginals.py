"""Marginal covariances by selected inversion against a dense float64 inverse and GTSAM."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgraph
from jaxgraph import Problem, VariableGroup, factors, noise

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "posegraph"


def _dense_information(problem, values):
    """J^T J assembled densely from the whitened Jacobians of every group (independent of H's blocks)."""
    st = problem.structure
    kinds = st.kinds
    cols = {}
    c = 0
    for v in problem.variables:
        cols[v.name] = c
        c += v.count * kinds[v.name].tangent_dim
    rows = []
    for g in problem.factors:
        J = [np.asarray(x) for x in problem.jacobians(values, g.name)]
        idx = np.asarray(g.indices.array)
        for m in range(g.count):
            row = np.zeros((J[0].shape[1], c))
            for a, var in enumerate(g.variables):
                t = kinds[var].tangent_dim
                o = cols[var] + idx[m, a] * t
                row[:, o:o + t] += J[a][m]
            rows.append(row)
    Jd = np.concatenate(rows)
    return Jd.T @ Jd, cols


def _loop_problem():
    """SE2 loop (8 poses, odometry + one loop closure, pose 0 fixed) and 3 R2 landmarks."""
    rng = np.random.default_rng(0)
    n = 8
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
    truth = np.stack([3 * np.cos(ang), 3 * np.sin(ang), ang + np.pi / 2], 1)
    i = np.r_[np.arange(n - 1), 0]
    j = np.r_[np.arange(1, n), n - 1]

    def rel(a, b):
        c, s = np.cos(a[2]), np.sin(a[2])
        d = b[:2] - a[:2]
        return np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1], b[2] - a[2]])

    Z = np.stack([rel(truth[a], truth[b]) for a, b in zip(i, j)]) + 0.02 * rng.normal(size=(n, 3))
    info = np.diag([40.0, 25.0, 400.0]) + 5.0
    pts = rng.normal(size=(3, 2)) * 2
    pi_ = np.array([0, 3, 5, 6])
    li = np.array([0, 1, 2, 0])

    def observe(params, z):
        pose, point = params
        c, s = jnp.cos(pose[2]), jnp.sin(pose[2])
        d = point - pose[:2]
        return jnp.stack([c * d[0] + s * d[1], -s * d[0] + c * d[1]]) - z

    zobs = np.stack([rel(truth[p], np.r_[pts[q], 0.0])[:2] for p, q in zip(pi_, li)])
    problem = Problem(
        [VariableGroup("poses", "SE2", n, fixed=(0,)), VariableGroup("landmarks", "R2", 3)],
        [
            factors.between("poses", i, j, jnp.asarray(Z), noise.information(jnp.asarray(np.broadcast_to(info, (n, 3, 3)))),
                            name="odometry"),
            factors.custom(observe, [("poses", pi_), ("landmarks", li)], jnp.asarray(zobs),
                           noise.isotropic(0.1), residual_dim=2, name="observations"),
        ],
    )
    values = {"poses": jnp.asarray(truth + 0.05 * rng.normal(size=truth.shape)),
              "landmarks": jnp.asarray(pts + 0.05 * rng.normal(size=pts.shape))}
    return problem, values


def test_loop_with_landmarks_and_fixed_pose_matches_dense_inverse():
    problem, values = _loop_problem()
    covs = jaxgraph.marginals(problem, values)
    H, cols = _dense_information(problem, values)
    # pose 0 is fixed: its covariance is zero and the others are conditional on it
    free = np.r_[3:H.shape[0]]
    S = np.zeros_like(H)
    S[np.ix_(free, free)] = np.linalg.inv(H[np.ix_(free, free)])
    for name, t in (("poses", 3), ("landmarks", 2)):
        got = np.asarray(covs[name])
        ref = np.stack([S[cols[name] + k * t:cols[name] + (k + 1) * t, cols[name] + k * t:cols[name] + (k + 1) * t]
                        for k in range(got.shape[0])])
        assert got.shape == ref.shape and got.dtype == np.float64
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())
    assert np.all(np.asarray(covs["poses"][0]) == 0)


def test_tinygrid3d_matches_dense_inverse_subsets_and_vmap():
    problem, values = jaxgraph.io.read_g2o(DATA / "tinyGrid3D.g2o", dtype=jnp.float64)
    H, _ = _dense_information(problem, values)
    S = np.linalg.inv(H)
    ref = np.stack([S[6 * k:6 * k + 6, 6 * k:6 * k + 6] for k in range(problem.variables[0].count)])
    got = np.asarray(jaxgraph.marginals(problem, values)["poses"])
    np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-12 * np.abs(ref).max())
    # per-variable subsets come back in the asked order
    sub = jaxgraph.marginals(problem, values, variables={"poses": [5, 0]})
    np.testing.assert_allclose(np.asarray(sub["poses"]), got[[5, 0]], rtol=1e-12, atol=0)
    # vmap over values (and jit): each copy equals its unbatched result
    moved = {"poses": values["poses"].at[:, 4:].add(0.3)}
    batch = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), values, moved)
    covs, info = jax.jit(jax.vmap(lambda v: jaxgraph.marginals_with_info(problem, v)))(batch)
    assert info.singular.shape == (2,) and not np.any(np.asarray(info.singular))
    np.testing.assert_allclose(np.asarray(covs["poses"][0]), got, rtol=1e-10, atol=1e-14)
    one = np.asarray(jaxgraph.marginals(problem, moved)["poses"])
    np.testing.assert_allclose(np.asarray(covs["poses"][1]), one, rtol=1e-10, atol=1e-14)


def test_singular_system_names_unconstrained_variables():
    problem, values = _loop_problem()
    # a second, unanchored pose chain: nothing fixes where it is
    extra = Problem(
        list(problem.variables) + [VariableGroup("drift", "SE2", 3)],
        list(problem.factors) + [factors.between("drift", [0, 1], [1, 2], jnp.zeros((2, 3)), noise.isotropic(0.1),
                                                 name="drift_odometry")],
    )
    vals = dict(values, drift=jnp.asarray(np.arange(9.0).reshape(3, 3) * 0.1))
    with pytest.raises(ValueError, match=r"unconstrained variables.*drift\[0\.\.2\]"):
        jaxgraph.marginals(extra, vals)
    covs, info = jaxgraph.marginals_with_info(extra, vals)  # the flag form (as under jit) never raises
    assert bool(info.singular) and np.all(np.isnan(np.asarray(covs["poses"])))
    with pytest.raises(ValueError, match="unknown variable group 'points'"):
        jaxgraph.marginals(problem, values, variables={"points": [0]})
    with pytest.raises(ValueError, match="index 8 out of range"):
        jaxgraph.marginals(problem, values, variables={"poses": [8]})


# ----------------------------------------------------------------------------------
# GTSAM's Marginals (optional dependency)
# ----------------------------------------------------------------------------------
def _gtsam_reference(name):
    gtsam = pytest.importorskip("gtsam")
    path = DATA / f"{name}.g2o"
    if not path.exists():
        pytest.skip("shared data not available")
    problem, _ = jaxgraph.io.read_g2o(path, dtype=jnp.float64)
    three = problem.variables[0].kind == "SE3"
    graph, initial = gtsam.readG2o(str(path), three)
    # the same gauge prior as read_g2o's "anchor" group
    if three:
        graph.add(gtsam.PriorFactorPose3(0, initial.atPose3(0), gtsam.noiseModel.Isotropic.Sigma(6, 1e-6)))
    else:
        graph.add(gtsam.PriorFactorPose2(0, initial.atPose2(0), gtsam.noiseModel.Isotropic.Sigma(3, 1e-6)))
    result = gtsam.LevenbergMarquardtOptimizer(graph, initial, gtsam.LevenbergMarquardtParams()).optimize()
    n = problem.variables[0].count
    if three:
        rows = []
        for k in range(n):
            p = result.atPose3(k)
            q, t = p.rotation().toQuaternion(), p.translation()
            rows.append([q.w(), q.x(), q.y(), q.z(), t[0], t[1], t[2]])
    else:
        rows = [[result.atPose2(k).x(), result.atPose2(k).y(), result.atPose2(k).theta()] for k in range(n)]
    marg = gtsam.Marginals(graph, result)
    keys = list(range(0, n, max(1, n // 200)))  # GTSAM's per-key queries are slow on big graphs
    ref = np.stack([marg.marginalCovariance(k) for k in keys])
    if three:  # GTSAM's Pose3 tangent is (rotation, translation); ours translation first
        perm = np.r_[3:6, 0:3]
        ref = ref[:, perm][:, :, perm]
    return problem, {"poses": jnp.asarray(np.array(rows))}, keys, ref


# intel in the fast suite; smallGrid3D and sphere2500 (SE3) with the slow tests (their numbers,
# every pose: benchmarks/results/marginals_cpu.json)
@pytest.mark.parametrize("name", ["intel", pytest.param("smallGrid3D", marks=pytest.mark.slow),
                                  pytest.param("sphere2500", marks=pytest.mark.slow)])
def test_matches_gtsam_marginals(name):
    problem, values, keys, ref = _gtsam_reference(name)
    got = np.asarray(jaxgraph.marginals(problem, values, variables={"poses": keys})["poses"])
    rel = np.linalg.norm(got - ref, axis=(1, 2)) / np.linalg.norm(ref, axis=(1, 2))
    assert rel.max() <= 1e-6, (name, rel.max())


def test_cli_report_includes_marginals(tmp_path):
    from jaxgraph.cli import main

    path = DATA / "tinyGrid3D.g2o"
    rep, out = tmp_path / "r.json", tmp_path / "o.g2o"
    assert main(["solve", str(path), "--output", str(out), "--report", str(rep), "--marginals"]) == 0
    got = json.loads(rep.read_text())["marginals"]["poses"]
    assert got["kind"] == "SE3" and got["tangent"] == ["vx", "vy", "vz", "wx", "wy", "wz"]
    problem, solved = jaxgraph.io.read_g2o(out, dtype=jnp.float64)
    ref = np.asarray(jaxgraph.marginals(problem, solved)["poses"])
    np.testing.assert_allclose(np.asarray(got["covariances"]), ref, rtol=1e-6, atol=1e-18)
