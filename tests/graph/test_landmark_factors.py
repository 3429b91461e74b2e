"""Pose-point factors (relative_point, bearing_range): residuals equal GTSAM 4.3's on the same
random numbers, Jacobians equal central differences through the kinds' retractions (float64),
clear errors naming the group, and one small solve each."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgraph
from jaxgraph import factors, lie, noise
from jaxgraph.graph import Problem, VariableGroup, kind_of

gtsam = pytest.importorskip("gtsam")

jax.config.update("jax_enable_x64", True)  # float64 references (tests/conftest.py does the same)

M = 24


def random_quaternions(rng, m):
    q = rng.normal(size=(m, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def se3_rows(rng, m, spread=2.0):
    return np.concatenate([random_quaternions(rng, m), rng.uniform(-spread, spread, (m, 3))], 1)


def xytheta_rows(rng, m, spread=2.0):
    return np.concatenate([rng.uniform(-spread, spread, (m, 2)), rng.uniform(-np.pi, np.pi, (m, 1))], 1)


def as_kind_rows(spec, xyt):
    """SE2 poses ``(x, y, theta)`` as rows of ``spec`` (the alias keeps them, lie.SE2 is (cos, sin, x, y))."""
    if spec == "SE2":
        return xyt
    return np.asarray(lie.SE2.from_xy_theta(xyt[:, 0], xyt[:, 1], xyt[:, 2]).parameters())


def gtsam_pose3(row):
    return gtsam.Pose3(gtsam.Rot3.Quaternion(*row[:4]), row[4:7])


@functools.partial(jax.jit, static_argnums=(1, 3))
def evaluate(group, kinds, params, with_jacobians=True):
    """``group.residual_and_jacobians`` compiled (eager, its many small ops each dispatch)."""
    return group.residual_and_jacobians(kinds, params, with_jacobians)


@functools.partial(jax.jit, static_argnums=(1,))
def central_differences(group, kinds, params, h=1e-6):
    """``[M, rdim, t]`` per slot: (r(X Exp(h e)) - r(X Exp(-h e))) / 2h, all factors and
    directions at once (vmapped: one copy of the residual in the compiled program)."""
    out = []
    for a, (kind, p) in enumerate(zip(kinds, params)):
        t = kind.tangent_dim
        steps = jnp.concatenate([jnp.eye(t, dtype=p.dtype), -jnp.eye(t, dtype=p.dtype)]) * h  # [2t, t]

        def residual(step, a=a, kind=kind, p=p, t=t):
            moved = list(params)
            moved[a] = kind.retract(p, jnp.broadcast_to(step, (p.shape[0], t)))
            return group.residual_and_jacobians(kinds, moved, False)[0]

        r = jax.vmap(residual)(steps)  # [2t, M, rdim]
        out.append(jnp.moveaxis((r[:t] - r[t:]) / (2 * h), 0, -1))
    return out


def assert_jacobians(group, kinds, params, rtol=1e-6):
    kinds = tuple(kinds)
    r, J = evaluate(group, kinds, params)
    assert r.dtype == jnp.float64 and all(Ja.dtype == jnp.float64 for Ja in J)
    fd = central_differences(group, kinds, params)
    for a, (Ja, Fa) in enumerate(zip(J, fd)):
        assert Ja.shape == (r.shape[0], r.shape[1], kinds[a].tangent_dim)
        scale = max(1.0, float(jnp.max(jnp.abs(Fa))))
        np.testing.assert_allclose(np.asarray(Ja), np.asarray(Fa), rtol=0, atol=rtol * scale, err_msg=f"slot {a}")


def unit_values(key_pose, pose, key_point, point):
    v = gtsam.Values()
    v.insert(key_pose, pose)
    v.insert(key_point, np.asarray(point, np.float64))
    return v


# -- relative_point ----------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["SE2", lie.SE2], ids=["alias", "lie.SE2"])
def test_relative_point_2d_matches_gtsam_and_differences(spec):
    rng = np.random.default_rng(0)
    xyt, pts, z = xytheta_rows(rng, M), rng.uniform(-3, 3, (M, 2)), rng.normal(size=(M, 2))
    g = factors.relative_point("poses", np.arange(M), "points", np.arange(M), z, None)
    kinds = [kind_of(spec), kind_of("R2")]
    params = [jnp.asarray(as_kind_rows(spec, xyt)), jnp.asarray(pts)]
    r, _ = evaluate(g, tuple(kinds), params)
    ref = [np.asarray(gtsam.Pose2(*xyt[m]).transformTo(pts[m])) - z[m] for m in range(M)]
    np.testing.assert_allclose(np.asarray(r), ref, rtol=0, atol=1e-12)
    assert_jacobians(g, kinds, params)


@pytest.mark.parametrize("spec", ["SE3", lie.SE3], ids=["alias", "lie.SE3"])
def test_relative_point_3d_matches_gtsam_and_differences(spec):
    rng = np.random.default_rng(1)
    poses, pts, z = se3_rows(rng, M), rng.uniform(-3, 3, (M, 3)), rng.normal(size=(M, 3))
    g = factors.relative_point("poses", np.arange(M), "points", np.arange(M), z, noise.isotropic(0.1))
    kinds = [kind_of(spec), kind_of(3)]
    params = [jnp.asarray(poses), jnp.asarray(pts)]
    r, _ = evaluate(g, tuple(kinds), params)
    ref = [np.asarray(gtsam_pose3(poses[m]).transformTo(pts[m])) - z[m] for m in range(M)]
    np.testing.assert_allclose(np.asarray(r), ref, rtol=0, atol=1e-12)
    assert_jacobians(g, kinds, params)


def test_relative_point_float32_follows_the_values():
    rng = np.random.default_rng(2)
    g = factors.relative_point("poses", np.arange(4), "points", np.arange(4), rng.normal(size=(4, 3)), None)
    params = [jnp.asarray(se3_rows(rng, 4), jnp.float32), jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)]
    r, J = evaluate(g, (kind_of("SE3"), kind_of(3)), params)
    assert r.dtype == jnp.float32 and J[0].dtype == jnp.float32 and J[1].dtype == jnp.float32
    r64, _ = evaluate(g, (kind_of("SE3"), kind_of(3)), [p.astype(jnp.float64) for p in params])
    np.testing.assert_allclose(np.asarray(r), np.asarray(r64), atol=1e-5)


# -- bearing_range -----------------------------------------------------------------------------

def noisy_bearing_range_2d(rng, xyt, pts):
    d = np.asarray([gtsam.Pose2(*xyt[m]).transformTo(pts[m]) for m in range(len(pts))])
    return (np.arctan2(d[:, 1], d[:, 0]) + rng.normal(0, 0.1, len(pts)),
            np.linalg.norm(d, axis=1) + rng.normal(0, 0.1, len(pts)))


@pytest.mark.parametrize("spec", ["SE2", lie.SE2], ids=["alias", "lie.SE2"])
def test_bearing_range_2d_matches_gtsam_and_differences(spec):
    rng = np.random.default_rng(3)
    xyt, pts = xytheta_rows(rng, M), rng.uniform(-3, 3, (M, 2))
    bearing, rng_ = rng.uniform(-np.pi, np.pi, M), rng.uniform(0.1, 5, M)  # arbitrary: errors wrap
    g = factors.bearing_range("poses", np.arange(M), "points", np.arange(M), bearing, rng_, None)
    kinds, params = (kind_of(spec), kind_of(2)), [jnp.asarray(as_kind_rows(spec, xyt)), jnp.asarray(pts)]
    r, _ = evaluate(g, kinds, params)
    unit = gtsam.noiseModel.Unit.Create(2)
    ref = []
    for m in range(M):
        f = gtsam.BearingRangeFactor2D(0, 1, gtsam.Rot2(bearing[m]), rng_[m], unit)
        ref.append(f.unwhitenedError(unit_values(0, gtsam.Pose2(*xyt[m]), 1, pts[m])))
    np.testing.assert_allclose(np.asarray(r), ref, rtol=0, atol=1e-12)
    assert np.all(np.abs(np.asarray(r)[:, 0]) <= np.pi)
    assert np.any(np.abs(np.asarray(r)[:, 0]) > np.pi / 2)  # the wrap was exercised
    # Jacobians where the bearing error is away from the wrap at +-pi
    b, d = noisy_bearing_range_2d(rng, xyt, pts)
    assert_jacobians(g.replace(measurement={"bearing": b, "range": d}), kinds, params)


def random_bearings_3d(rng, m):
    """Directions: random, a quarter of them near an axis."""
    b = rng.normal(size=(m, 3))
    b[: m // 4] = np.eye(3)[np.arange(m // 4) % 3] + 0.01 * rng.normal(size=(m // 4, 3))
    return b * rng.uniform(0.5, 2, (m, 1))  # not normalised: GTSAM's Unit3 normalises


@pytest.mark.parametrize("spec", ["SE3", lie.SE3], ids=["alias", "lie.SE3"])
def test_bearing_range_3d_matches_gtsam(spec):
    rng = np.random.default_rng(5)
    poses, pts = se3_rows(rng, M), rng.uniform(-3, 3, (M, 3))
    bearing, dist = random_bearings_3d(rng, M), rng.uniform(0.1, 5, M)
    g = factors.bearing_range("poses", np.arange(M), "points", np.arange(M), bearing, dist, None)
    r, _ = evaluate(g, (kind_of(spec), kind_of(3)), [jnp.asarray(poses), jnp.asarray(pts)])
    unit = gtsam.noiseModel.Unit.Create(3)
    ref = []
    for m in range(M):
        f = gtsam.BearingRangeFactor3D(0, 1, gtsam.Unit3(bearing[m]), dist[m], unit)
        ref.append(f.unwhitenedError(unit_values(0, gtsam_pose3(poses[m]), 1, pts[m])))
    # GTSAM's acos(x) / sqrt(1 - x^2) loses ~1e-8 of relative precision near x = 1 (atan2 here)
    np.testing.assert_allclose(np.asarray(r), ref, rtol=0, atol=1e-9)


def test_bearing_range_3d_near_zero_error_and_jacobians():
    rng = np.random.default_rng(6)
    poses, pts = se3_rows(rng, M), rng.uniform(-3, 3, (M, 3))
    local = np.asarray([gtsam_pose3(poses[m]).transformTo(pts[m]) for m in range(M)])
    bearing = local + rng.normal(0, 0.05, (M, 3))
    bearing[:4] = local[:4]  # exact: error 0 (the small-angle series)
    dist = np.linalg.norm(local, axis=1) + rng.normal(0, 0.1, M)
    g = factors.bearing_range("poses", np.arange(M), "points", np.arange(M), bearing, dist, None)
    kinds, params = [kind_of("SE3"), kind_of(3)], [jnp.asarray(poses), jnp.asarray(pts)]
    r, J = evaluate(g, tuple(kinds), params)
    np.testing.assert_allclose(np.asarray(r)[:4, :2], 0, atol=1e-12)
    assert all(np.isfinite(np.asarray(Ja)).all() for Ja in J)
    assert_jacobians(g, kinds, params)


# -- errors ------------------------------------------------------------------------------------

def problem_with(group, pose_kind="SE2", point_kind="R2"):
    return Problem([VariableGroup("poses", pose_kind, 3), VariableGroup("points", point_kind, 3)], [group])


def test_errors_name_the_group():
    with pytest.raises(ValueError, match=r"factor group 'obs' \(relative_point\): measurement must have shape \(2, 2\)"):
        problem_with(factors.relative_point("poses", [0, 1], "points", [0, 1], np.zeros((2, 3)), None, name="obs"))
    with pytest.raises(TypeError, match=r"factor group 'obs' \(relative_point\): slot 1 .*'poses'.* must be a 3-D pose"):
        problem_with(factors.relative_point("poses", [0, 1], "points", [0, 1], np.zeros((2, 3)), None, name="obs"),
                     "SE2", "R3")
    with pytest.raises(TypeError, match=r"factor group 'obs' \(relative_point\): slot 2 .*'poses'.* Euclidean point"):
        problem_with(factors.relative_point("points", [0, 1], "poses", [0, 1], np.zeros((2, 2)), None, name="obs"))
    with pytest.raises(TypeError, match=r"factor group 'br' \(bearing_range\): slot 1 .* must be a 2-D pose"):
        problem_with(factors.bearing_range("poses", [0], "points", [0], [0.1], [1.0], None, name="br"), "R2", "R2")
    with pytest.raises(ValueError, match=r"factor group 'br' \(bearing_range\): bearing must have shape \(1, 3\)"):
        problem_with(factors.bearing_range("poses", [0], "points", [0], [0.1], [1.0], None, name="br"), "SE3", 3)
    with pytest.raises(ValueError, match=r"factor group 'br' \(bearing_range\): range must have shape \(2,\)"):
        problem_with(factors.bearing_range("poses", [0, 1], "points", [0, 1], [0.1, 0.2], [[1.0, 2.0]], None,
                                           name="br"))
    with pytest.raises(ValueError, match=r"factor group 'br', factor 1: the bearing is a zero vector"):
        problem_with(factors.bearing_range("poses", [0, 1], "points", [0, 1], [[1.0, 0, 0], [0, 0, 0]], [1.0, 1.0],
                                           None, name="br"), lie.SE3, "R3")
    with pytest.raises(ValueError, match=r"factor group 'br': index arrays of different lengths"):
        factors.bearing_range("poses", [0, 1], "points", [0], [0.1, 0.2], [1.0, 1.0], None, name="br")
    with pytest.raises(ValueError, match=r"factor group 'br': Diagonal sigmas must have shape \(2,\)"):
        problem_with(factors.bearing_range("poses", [0], "points", [0], [0.1], [1.0], noise.diagonal([1.0, 1, 1]),
                                           name="br"))


# -- solves ------------------------------------------------------------------------------------

def odometry(kind_rows, spec):
    kind = kind_of(spec)
    T = kind.to_matrix(jnp.asarray(kind_rows))
    Z = kind.from_matrix(jnp.einsum("mij,mjk->mik", kind.inverse_matrix(T[:-1]), T[1:]))
    return factors.between("poses", np.arange(len(kind_rows) - 1), np.arange(1, len(kind_rows)), Z,
                           noise.isotropic(0.01))


def test_small_2d_landmark_solve_reaches_the_truth():
    rng = np.random.default_rng(7)
    xyt = np.array([[0.0, 0, 0], [1.0, 0.2, 0.3], [2.0, 0.5, 0.5]])
    pts = rng.uniform(-2, 4, (4, 2))
    i, j = np.repeat(np.arange(3), 4), np.tile(np.arange(4), 3)
    local = np.asarray([gtsam.Pose2(*xyt[a]).transformTo(pts[b]) for a, b in zip(i, j)])
    problem = Problem([VariableGroup("poses", "SE2", 3), VariableGroup("points", 2, 4)], [
        factors.prior("poses", [0], xyt[:1], noise.isotropic(1e-3)),
        odometry(xyt, "SE2"),
        factors.relative_point("poses", i, "points", j, local, noise.isotropic(0.1)),
        factors.bearing_range("poses", i, "points", j, np.arctan2(local[:, 1], local[:, 0]),
                              np.linalg.norm(local, axis=1), noise.diagonal([0.05, 0.1])),
    ])
    start = {"poses": jnp.asarray(xyt + rng.normal(0, 0.05, xyt.shape)), "points": jnp.asarray(pts + 0.3)}
    values, info = jaxgraph.solve(problem, start, tolerance=1e-12, absolute_tolerance=1e-20)
    assert info.converged and float(info.cost) < 1e-12
    np.testing.assert_allclose(np.asarray(values["points"]), pts, atol=1e-6)
