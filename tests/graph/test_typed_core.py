"""Typed kinds and factor types: every check holds for every kind, priors on every kind, and
an honest gauge (the two silent wrong answers of issue 21)."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgraph
from jaxgraph import factors, lie, noise
from jaxgraph.graph import Problem, ProductKind, VariableGroup, kind_of

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "landmarks"

# The same SE3 rotation kind declared four ways; the product kind is a user-defined camera-like
# kind (pose, then three numbers) whose validity comes from its SE3 part.
QUATERNION_KINDS = [("SE3", 7), (lie.SE3, 7), (lie.SO3, 4), (ProductKind(lie.SE3, 3, name="camera"), 10)]
# and the kinds whose rows start with a unit complex number
COMPLEX_KINDS = [lie.SE2, lie.SO2, ProductKind(lie.SE2, 1, name="planar camera")]


def _identity_rows(spec, n):
    return np.tile(kind_of(spec).identity_row(np.float64), (n, 1))


@pytest.mark.parametrize("spec, width", QUATERNION_KINDS, ids=["alias", "lie.SE3", "lie.SO3", "product"])
def test_zero_quaternion_initial_value_is_a_clear_error_for_every_kind(spec, width):
    problem = Problem([VariableGroup("x", spec, 3)],
                      [factors.between("x", [0, 1], [1, 2], _identity_rows(spec, 2), noise.isotropic(0.1))])
    values = _identity_rows(spec, 3)
    values[1, :4] = 0.0
    with pytest.raises(ValueError, match=r"initial values\['x'\]\[1\] .* has a zero quaternion"):
        jaxgraph.solve(problem, {"x": jnp.asarray(values)})


def test_rows_are_checked_again_for_every_new_or_mutable_array_and_once_for_an_immutable_one(monkeypatch):
    """The row check remembers jax arrays that passed (they cannot change): a new array, a
    numpy array changed in place and another kind are still checked."""
    spec = "SE3"
    problem = Problem([VariableGroup("x", spec, 3)],
                      [factors.between("x", [0, 1], [1, 2], _identity_rows(spec, 2), noise.isotropic(0.1))])
    kind = problem.structure.kinds["x"]
    searched = []
    real = type(kind).invalid_rows
    monkeypatch.setattr(type(kind), "invalid_rows", lambda self, rows: searched.append(1) or real(self, rows))
    good = jnp.asarray(_identity_rows(spec, 3))
    problem.check_value_rows({"x": good})
    problem.check_value_rows({"x": good})
    assert len(searched) == 1  # the same jax array: once
    bad = np.asarray(good).copy()
    problem.check_value_rows({"x": bad})  # numpy: checked every time, and caught once changed
    bad[1, :4] = 0.0
    with pytest.raises(ValueError, match="zero quaternion"):
        problem.check_value_rows({"x": bad})
    with pytest.raises(ValueError, match="zero quaternion"):
        problem.check_value_rows({"x": jnp.asarray(bad)})
    with pytest.raises(ValueError, match="not finite"):
        problem.check_value_rows({"x": good.at[2, 5].set(jnp.nan)})
    assert len(searched) == 4


@pytest.mark.parametrize("spec, width", QUATERNION_KINDS, ids=["alias", "lie.SE3", "lie.SO3", "product"])
def test_zero_quaternion_measurement_is_a_clear_error_for_every_kind(spec, width):
    z = _identity_rows(spec, 2)
    z[1, :4] = 0.0
    for make in (lambda: factors.between("x", [0, 1], [1, 2], z, noise.isotropic(0.1), name="odo"),
                 lambda: factors.prior("x", [0, 2], z, noise.isotropic(0.1), name="odo")):
        with pytest.raises(ValueError, match=r"factor group 'odo', factor 1: zero quaternion( in its lie.SE3 part)? in the measurement"):
            Problem([VariableGroup("x", spec, 3)], [make()])


@pytest.mark.parametrize("spec", COMPLEX_KINDS, ids=["lie.SE2", "lie.SO2", "product"])
def test_zero_unit_complex_number_is_a_clear_error_for_every_kind(spec):
    values = _identity_rows(spec, 3)
    values[1, :2] = 0.0
    problem = Problem([VariableGroup("x", spec, 3)],
                      [factors.between("x", [0, 1], [1, 2], _identity_rows(spec, 2), noise.isotropic(0.1))])
    with pytest.raises(ValueError, match=r"initial values\['x'\]\[1\] .* has a zero unit complex number"):
        jaxgraph.solve(problem, {"x": jnp.asarray(values)})
    with pytest.raises(ValueError, match=r"factor group 'p', factor 1: zero unit complex number"):
        Problem([VariableGroup("x", spec, 3)], [factors.prior("x", [0, 1], values[:2], noise.isotropic(0.1),
                                                              name="p")])


def test_the_g2o_alias_has_no_unit_part():
    """``"SE2"`` rows are (x, y, theta): every finite row is a pose, zeros included."""
    assert kind_of("SE2").invalid_rows(np.zeros((2, 3)))[0].size == 0


def test_product_kind_priors_and_betweens_compose_part_by_part():
    """A chain of (SE2 pose, focal length) cameras with exact measurements: the solution is the
    composition, part by part (SE2 product, sum of the lengths), from the prior on camera 0."""
    camera = ProductKind(lie.SE2, 1, name="planar camera")
    x0 = lie.SE2.from_xy_theta(1.0, -2.0, 0.4)
    z = lie.SE2.from_xy_theta(0.5, 0.1, -0.3)
    prior = np.concatenate([np.asarray(x0.parameters()), [500.0]])[None]
    step = np.concatenate([np.asarray(z.parameters()), [2.0]])[None]
    problem = Problem([VariableGroup("cams", camera, 2)], [
        factors.prior("cams", [0], prior, noise.isotropic(1e-3)),
        factors.between("cams", [0], [1], step, noise.isotropic(0.1)),
    ])
    assert problem.anchored is None
    out, info = jaxgraph.solve(problem, {"cams": jnp.asarray(np.repeat(camera.identity_row(np.float64)[None], 2, 0))})
    assert bool(info.converged) and float(info.cost) < 1e-12
    expected = np.concatenate([np.asarray((x0 @ z).parameters()), [502.0]])
    np.testing.assert_allclose(np.asarray(out["cams"][1]), expected, atol=1e-8)


def test_euclidean_priors_and_betweens_solve_the_linear_least_squares_problem():
    """Points on a line with priors and differences: the optimum is a weighted linear least-squares
    solution, computed here with numpy in float64."""
    rng = np.random.default_rng(0)
    n = 5
    zp = rng.normal(size=(2, 3))  # priors on points 0 and 4
    zb = rng.normal(size=(n - 1, 3))  # x_{k+1} - x_k
    problem = Problem([VariableGroup("pts", 3, n)], [
        factors.prior("pts", [0, 4], zp, noise.isotropic(0.5), name="p"),
        factors.between("pts", np.arange(n - 1), np.arange(1, n), zb, noise.isotropic(0.2), name="d"),
    ])
    assert problem.anchored is None  # Euclidean priors fix the gauge
    out, info = jaxgraph.solve(problem, {"pts": jnp.zeros((n, 3))})
    assert bool(info.converged) and not bool(info.anchored)
    A = np.zeros((2 + n - 1, n))
    A[0, 0] = A[1, 4] = 1 / 0.5
    for k in range(n - 1):
        A[2 + k, k], A[2 + k, k + 1] = -1 / 0.2, 1 / 0.2
    b = np.concatenate([zp / 0.5, zb / 0.2])
    expected = np.linalg.lstsq(A, b, rcond=None)[0]
    np.testing.assert_allclose(np.asarray(out["pts"]), expected, atol=1e-9)


def _read_landmark_file(path):
    """Poses, points and point observations (the point in the pose frame, with its information
    matrix) of a g2o file with VERTEX_TRACKXYZ / EDGE_SE3_TRACKXYZ lines."""
    poses, points, odo, obs = {}, {}, [], []
    for line in path.read_text().splitlines():
        t = line.split()
        if t[0] == "VERTEX_SE3:QUAT":
            x, y, z, qx, qy, qz, qw = map(float, t[2:9])
            poses[int(t[1])] = [qw, qx, qy, qz, x, y, z]
        elif t[0] == "VERTEX_TRACKXYZ":
            points[int(t[1])] = list(map(float, t[2:5]))
        elif t[0] == "EDGE_SE3:QUAT":
            odo.append((int(t[1]), int(t[2]), list(map(float, t[3:10])), list(map(float, t[10:31]))))
        elif t[0] == "EDGE_SE3_TRACKXYZ":
            obs.append((int(t[1]), int(t[2]), list(map(float, t[4:7])), list(map(float, t[7:13]))))
    return poses, points, odo, obs


def _information(upper, d):
    m = np.zeros((d, d))
    m[np.triu_indices(d)] = upper
    return m + np.triu(m, 1).T


def _point_in_pose(params, z):
    pose, point = params
    T = lie.SE3(pose)
    return T.inverse().apply(point) - z


def _landmark_problem(landmark_priors):
    poses, points, odo, obs = _read_landmark_file(DATA / "known_landmark_localization_20.g2o")
    P = np.asarray([poses[k] for k in sorted(poses)])
    P[:, :4] /= np.linalg.norm(P[:, :4], axis=1, keepdims=True)  # as GTSAM's Rot3.Quaternion does
    L = np.asarray([points[k] for k in sorted(points)])
    i, j, zo, io = zip(*odo)
    zo = np.asarray([[m[6], m[3], m[4], m[5], m[0], m[1], m[2]] for m in zo])  # g2o: x y z qx qy qz qw
    zo[:, :4] /= np.linalg.norm(zo[:, :4], axis=1, keepdims=True)
    # g2o's SE3 information is (translation, rotation), jaxgraph's tangent order too
    fs = [factors.between("poses", i, j, zo, noise.information(np.stack([_information(u, 6) for u in io])), name="odo")]
    pi, lj, zl, il = zip(*obs)
    fs.append(factors.custom(_point_in_pose, [("poses", pi), ("landmarks", lj)], jnp.asarray(zl),
                             noise.information(np.stack([_information(u, 3) for u in il])), 3, name="obs"))
    if landmark_priors is not None:
        fs.append(landmark_priors(L))
    problem = Problem([VariableGroup("poses", lie.SE3, len(P)), VariableGroup("landmarks", 3, len(L))], fs)
    return problem, {"poses": jnp.asarray(P), "landmarks": jnp.asarray(L)}


@pytest.fixture(scope="module")
def _landmark_solves():
    if not (DATA / "known_landmark_localization_20.g2o").exists():
        pytest.skip("shared data not available")
    sigma = noise.isotropic(1e-6)
    with_prior = _landmark_problem(lambda L: factors.prior("landmarks", np.arange(len(L)), L, sigma, name="known"))
    with_custom = _landmark_problem(lambda L: factors.custom(lambda ps, z: ps[0] - z, [("landmarks", np.arange(len(L)))],
                                                             jnp.asarray(L), sigma, 3, name="known"))
    return {name: (p, v, *jaxgraph.solve(p, v, **TIGHT)) for name, (p, v) in [("prior", with_prior), ("custom", with_custom)]}


# converged to working precision: the costs are compared with GTSAM's to 1e-9
TIGHT = dict(max_iterations=100, tolerance=1e-12, absolute_tolerance=1e-12)


def test_landmark_priors_fix_the_gauge_instead_of_pose_zero(_landmark_solves):
    """Known landmarks (priors written with factors.prior, or as one-variable custom factors) fix
    the gauge: no pose is anchored, and the solution is a stationary point of the whole problem,
    pose 0 included (pose 0 held at its start was the silent wrong answer)."""
    for name in ("prior", "custom"):
        problem, start, out, info = _landmark_solves[name]
        assert problem.anchored is None and not bool(info.anchored), name
        assert bool(info.converged), name
    problem, start, out, info = _landmark_solves["prior"]
    g = jax.grad(lambda d: problem.cost(problem.retract(out, d)))(jnp.zeros((problem.structure.num_blocks,
                                                                              problem.structure.block_dim)))
    assert float(jnp.max(jnp.abs(g[0]))) < 1e-4 * max(1.0, float(info.cost))  # pose 0 moved to its optimum
    # the custom-factor priors state the same problem: the same optimum
    custom_out, custom_info = _landmark_solves["custom"][2:]
    np.testing.assert_allclose(float(custom_info.cost), float(info.cost), rtol=1e-9)
    np.testing.assert_allclose(np.asarray(custom_out["poses"]), np.asarray(out["poses"]), atol=1e-9)
    # holding pose 0 fixed (what the old gauge rule did) solves a different, costlier problem
    held = Problem([VariableGroup("poses", lie.SE3, 20, (0,)), VariableGroup("landmarks", 3, 4)], problem.factors)
    _, held_info = jaxgraph.solve(held, start, **TIGHT)
    assert float(held_info.cost) > 1.005 * float(_landmark_solves["prior"][3].cost)


def test_an_added_anchor_is_reported():
    """Without a factor that fixes absolute values the constructor holds the first pose, and says so."""
    if not (DATA / "known_landmark_localization_20.g2o").exists():
        pytest.skip("shared data not available")
    assert _landmark_problem(None)[0].anchored == ("poses", 0)
    loop = Problem([VariableGroup("poses", lie.SE2, 3)],
                   [factors.between("poses", [0, 1], [1, 2], _identity_rows(lie.SE2, 2), noise.isotropic(0.1))])
    assert loop.anchored == ("poses", 0)
    _, info = jaxgraph.solve(loop, {"poses": jnp.asarray(_identity_rows(lie.SE2, 3))})
    assert bool(info.converged) and bool(info.anchored)


def _gtsam_optimum():
    """GTSAM's LM optimum of the same problem: BetweenFactorPose3 (information permuted to GTSAM's
    (rotation, translation) order), the point-in-pose-frame error as a CustomFactor with
    Pose3.transformTo's Jacobians, PriorFactorPoint3 on every landmark."""
    gtsam = pytest.importorskip("gtsam")
    poses, points, odo, obs = _read_landmark_file(DATA / "known_landmark_localization_20.g2o")

    def pose3(qw, qx, qy, qz, x, y, z):
        q = np.array([qw, qx, qy, qz]) / np.linalg.norm([qw, qx, qy, qz])
        return gtsam.Pose3(gtsam.Rot3.Quaternion(*q), gtsam.Point3(x, y, z))

    def X(k):
        return gtsam.symbol("x", k)

    def L(k):
        return gtsam.symbol("l", k)

    graph, values = gtsam.NonlinearFactorGraph(), gtsam.Values()
    for k, p in poses.items():
        values.insert(X(k), pose3(*p))
    for k, p in points.items():
        values.insert(L(k), np.array(p))
    swap = np.zeros((6, 6))
    swap[:3, 3:] = swap[3:, :3] = np.eye(3)
    for i, j, (x, y, z, qx, qy, qz, qw), u in odo:
        info = swap @ _information(u, 6) @ swap
        graph.add(gtsam.BetweenFactorPose3(X(i), X(j), pose3(qw, qx, qy, qz, x, y, z),
                                           gtsam.noiseModel.Gaussian.Information(info)))

    def point_error(z):
        def error(factor, vals, H):
            H1, H2 = np.zeros((3, 6), order="F"), np.zeros((3, 3), order="F")
            e = vals.atPose3(factor.keys()[0]).transformTo(vals.atPoint3(factor.keys()[1]), H1, H2) - z
            if H is not None:
                H[0], H[1] = H1, H2
            return e
        return error

    for i, j, z, u in obs:
        graph.add(gtsam.CustomFactor(gtsam.noiseModel.Gaussian.Information(_information(u, 3)), [X(i), L(j)],
                                     point_error(np.array(z))))
    for k, p in points.items():
        graph.add(gtsam.PriorFactorPoint3(L(k), np.array(p), gtsam.noiseModel.Isotropic.Sigma(3, 1e-6)))
    params = gtsam.LevenbergMarquardtParams()
    params.setRelativeErrorTol(1e-12)
    params.setAbsoluteErrorTol(1e-12)
    return graph.error(gtsam.LevenbergMarquardtOptimizer(graph, values, params).optimize())


def test_landmark_priors_reach_gtsams_optimum(_landmark_solves):
    """The same problem in GTSAM (its own factors, one CustomFactor): our optimum with the priors
    written with factors.prior equals GTSAM's cost (float64)."""
    reference = _gtsam_optimum()
    info = _landmark_solves["prior"][3]
    assert bool(info.converged)
    np.testing.assert_allclose(float(info.cost), reference, rtol=1e-9)
