"""Camera factors (snavely_reprojection, reprojection, stereo): residuals equal GTSAM 4.3's (and a
hand-written Snavely projection) on the same random numbers, points behind the camera as GTSAM
treats them, Jacobians equal central differences through the kinds' retractions (float64), clear
errors naming the group, and one small solve each."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxgraph
from jaxgraph import factors, lie, noise
from jaxgraph.graph import Problem, ProductKind, VariableGroup, kind_of

from .test_landmark_factors import (
    assert_jacobians,
    evaluate,
    gtsam_pose3,
    random_quaternions,
)

gtsam = pytest.importorskip("gtsam")

M = 16


def unit(d):
    return gtsam.noiseModel.Unit.Create(d)


def quaternion_matrix(q):
    return np.asarray(gtsam.Rot3.Quaternion(*q).matrix())


# -- Snavely / BAL ------------------------------------------------------------------------------

def bal_scene(rng, m=M):
    """BAL cameras (world to camera, looking down -z), points in front of them, observations."""
    q = random_quaternions(rng, m)
    t = rng.uniform(-1, 1, (m, 3))
    intrinsics = np.stack([rng.uniform(400, 900, m), rng.normal(0, 0.1, m), rng.normal(0, 0.02, m)], 1)
    xc = np.stack([rng.uniform(-1, 1, m), rng.uniform(-1, 1, m), -rng.uniform(2, 6, m)], 1)  # z < 0: in front
    X = np.einsum("mji,mj->mi", np.stack([quaternion_matrix(a) for a in q]), xc - t)  # R^T (x_c - t)
    pixels = snavely_numpy(np.concatenate([q, t, intrinsics], 1), X) + rng.normal(0, 2, (m, 2))
    return np.concatenate([q, t, intrinsics], 1), X, pixels


def snavely_numpy(cams, X):
    """Bundler's projection as Ceres' SnavelyReprojectionError writes it (numpy, float64)."""
    out = []
    for cam, x in zip(cams, X):
        xc = quaternion_matrix(cam[:4]) @ x + cam[4:7]
        p = -xc[:2] / xc[2]
        f, k1, k2 = cam[7:]
        r2 = p @ p
        out.append(f * (1 + k1 * r2 + k2 * r2 * r2) * p)
    return np.asarray(out)


def test_snavely_matches_numpy_and_gtsam_after_its_bal_conversion():
    rng = np.random.default_rng(10)
    cams, X, pixels = bal_scene(rng)
    g = factors.snavely_reprojection("cameras", np.arange(M), "points", np.arange(M), pixels)
    kinds = (factors.BAL_CAMERA, kind_of(3))
    params = [jnp.asarray(cams), jnp.asarray(X)]
    r, _ = evaluate(g, kinds, params)
    np.testing.assert_allclose(np.asarray(r), snavely_numpy(cams, X) - pixels, rtol=1e-12, atol=1e-9)
    # GTSAM's SfmData::FromBalFile: camera-to-world pose openGL2gtsam(R, t) = (R^T Rx(pi), -R^T t),
    # Cal3Bundler(f, k1, k2) centred at 0, observation (u, -v)
    flip = np.diag([1.0, -1.0, -1.0])
    for m in range(M):
        R = quaternion_matrix(cams[m, :4])
        pose = gtsam.Pose3(gtsam.Rot3(R.T @ flip), -R.T @ cams[m, 4:7])
        values = gtsam.Values()
        values.insert(0, pose)
        values.insert(1, X[m])
        values.insert(2, gtsam.Cal3Bundler(*cams[m, 7:], 0.0, 0.0))
        f = gtsam.GeneralSFMFactor2Cal3Bundler(pixels[m] * [1, -1], unit(2), 0, 1, 2)
        assert f.error(values) == pytest.approx(0.5 * float(np.sum(np.asarray(r[m]) ** 2)), rel=1e-10)
        np.testing.assert_allclose(f.unwhitenedError(values), np.asarray(r[m]) * [1, -1], rtol=1e-10, atol=1e-9)


def test_snavely_jacobians_are_central_differences():
    rng = np.random.default_rng(11)
    cams, X, pixels = bal_scene(rng)
    g = factors.snavely_reprojection("cameras", np.arange(M), "points", np.arange(M), pixels, noise.isotropic(2.0))
    kinds = (factors.BAL_CAMERA, kind_of("R3"))
    assert_jacobians(g, kinds, [jnp.asarray(cams), jnp.asarray(X)])
    # float32 values give float32 residuals and Jacobians (BAL problems solve in float32)
    r32, J32 = evaluate(g, kinds, [jnp.asarray(cams, jnp.float32), jnp.asarray(X, jnp.float32)])
    r64, J64 = evaluate(g, kinds, [jnp.asarray(cams), jnp.asarray(X)])
    assert r32.dtype == jnp.float32 and all(Ja.dtype == jnp.float32 for Ja in J32)
    np.testing.assert_allclose(np.asarray(r32), np.asarray(r64), rtol=1e-4, atol=1e-2)
    for a, b in zip(J32, J64):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-3 * float(jnp.max(jnp.abs(b))))


def test_small_bal_solve_recovers_the_points():
    rng = np.random.default_rng(12)
    cams, X, _ = bal_scene(rng, 3)
    points = np.tile(X.mean(0), (5, 1)) + rng.normal(0, 0.3, (5, 3))
    i, j = np.repeat(np.arange(3), 5), np.tile(np.arange(5), 3)
    pixels = snavely_numpy(cams[i], points[j])
    problem = Problem([VariableGroup("cameras", factors.BAL_CAMERA, 3, fixed=(0, 1, 2)),
                       VariableGroup("points", 3, 5)],
                      [factors.snavely_reprojection("cameras", i, "points", j, pixels)])
    values, info = jaxgraph.solve(problem, {"cameras": jnp.asarray(cams), "points": jnp.asarray(points + 0.05)},
                                  tolerance=1e-14, absolute_tolerance=1e-20)
    assert info.converged and float(info.cost) < 1e-12
    np.testing.assert_allclose(np.asarray(values["points"]), points, atol=1e-6)


# -- pinhole -----------------------------------------------------------------------------------

K5 = np.array([520.0, 480.0, 0.7, 320.0, 240.0])
K9 = np.array([520.0, 480.0, 0.7, 320.0, 240.0, -0.25, 0.07, 0.0012, -0.0021])


def gtsam_calibration(K):
    return gtsam.Cal3_S2(*K) if len(K) == 5 else gtsam.Cal3DS2(*K)


def pinhole_scene(rng, m=M, behind=3):
    """Camera-to-world poses (GTSAM's, z forward) and points; the first ``behind`` behind the camera."""
    poses = np.concatenate([random_quaternions(rng, m), rng.uniform(-2, 2, (m, 3))], 1)
    pc = np.stack([rng.uniform(-1, 1, m), rng.uniform(-1, 1, m), rng.uniform(2, 6, m)], 1)
    pc[:behind, 2] *= -1
    X = np.asarray([gtsam_pose3(p).transformFrom(c) for p, c in zip(poses, pc)])
    return poses, X, rng.uniform(0, 640, (m, 2))


def pinhole_group(layout, K, pixels, m=M):
    idx = np.arange(m)
    if layout == "camera":
        return factors.reprojection("points", idx, pixels, None, camera=("cameras", idx)), \
            (ProductKind(lie.SE3, len(K), name="camera"), kind_of(3))
    if layout == "variable":
        return factors.reprojection("points", idx, pixels, None, pose=("poses", idx), calibration=("K", np.zeros(m, int))), \
            (kind_of("SE3"), kind_of(3), kind_of(len(K)))
    return factors.reprojection("points", idx, pixels, None, pose=("poses", idx), calibration=K), \
        (kind_of(lie.SE3), kind_of(3))


def pinhole_params(layout, K, poses, X):
    if layout == "camera":
        return [jnp.asarray(np.concatenate([poses, np.tile(K, (len(poses), 1))], 1)), jnp.asarray(X)]
    if layout == "variable":
        return [jnp.asarray(poses), jnp.asarray(X), jnp.asarray(np.tile(K, (len(poses), 1)))]
    return [jnp.asarray(poses), jnp.asarray(X)]


def gtsam_reprojection(layout, K, pose, X, pixel):
    cal = gtsam_calibration(K)
    values = gtsam.Values()
    values.insert(1, X)
    suffix = "Cal3_S2" if len(K) == 5 else "Cal3DS2"
    if layout == "camera":
        values.insert(0, getattr(gtsam, f"PinholeCamera{suffix}")(pose, cal))
        f = getattr(gtsam, f"GeneralSFMFactor{suffix}")(pixel, unit(2), 0, 1)
    elif layout == "variable":
        values.insert(0, pose)
        values.insert(2, cal)
        f = getattr(gtsam, f"GeneralSFMFactor2{suffix}")(pixel, unit(2), 0, 1, 2)
    else:
        values.insert(0, pose)
        f = getattr(gtsam, f"GenericProjectionFactor{suffix}")(pixel, unit(2), 0, 1, cal)
    return f.unwhitenedError(values)


@pytest.mark.parametrize("layout", ["camera", "variable", "constant"])
@pytest.mark.parametrize("size", [5, 9], ids=["Cal3_S2", "Cal3DS2"])
def test_reprojection_matches_gtsam_and_differences(layout, size):
    rng = np.random.default_rng(20 + size)
    K = K5 if size == 5 else K9
    poses, X, pixels = pinhole_scene(rng)
    g, kinds = pinhole_group(layout, K, pixels)
    params = pinhole_params(layout, K, poses, X)
    r, J = evaluate(g, kinds, params)
    ref = [gtsam_reprojection(layout, K, gtsam_pose3(poses[m]), X[m], pixels[m]) for m in range(M)]
    np.testing.assert_allclose(np.asarray(r), ref, rtol=1e-12, atol=1e-9)
    behind = np.asarray(r)[:3]
    np.testing.assert_array_equal(behind, 2 * K[0] if layout == "constant" else 0.0)  # GTSAM's cheirality values
    assert all(np.all(np.asarray(Ja)[:3] == 0) for Ja in J)
    assert_jacobians(g, kinds, params)


def test_reprojection_solve_with_a_shared_calibration_variable():
    rng = np.random.default_rng(30)
    poses = np.array([[1.0, 0, 0, 0, 0, 0, 0], [np.cos(0.05), 0, np.sin(0.05), 0, 1, 0, 0]])
    points = np.stack([rng.uniform(-1, 2, 6), rng.uniform(-1, 1, 6), rng.uniform(4, 7, 6)], 1)
    i, j = np.repeat(np.arange(2), 6), np.tile(np.arange(6), 2)
    pixels = np.asarray([gtsam.PinholeCameraCal3DS2(gtsam_pose3(poses[a]), gtsam_calibration(K9)).project(points[b])
                         for a, b in zip(i, j)])
    problem = Problem([VariableGroup("poses", "SE3", 2, fixed=(0, 1)), VariableGroup("points", 3, 6),
                       VariableGroup("K", 9, 1, fixed=(0,))],
                      [factors.reprojection("points", j, pixels, noise.isotropic(1.0), pose=("poses", i),
                                            calibration=("K", np.zeros(12, int)))])
    start = {"poses": jnp.asarray(poses), "points": jnp.asarray(points + rng.normal(0, 0.05, points.shape)),
             "K": jnp.asarray(K9[None])}
    values, info = jaxgraph.solve(problem, start, tolerance=1e-14, absolute_tolerance=1e-20)
    assert info.converged and float(info.cost) < 1e-12
    np.testing.assert_allclose(np.asarray(values["points"]), points, atol=1e-6)


# -- stereo ------------------------------------------------------------------------------------

KS = np.array([520.0, 480.0, 0.7, 320.0, 240.0, 0.12])


def test_stereo_matches_gtsam_and_differences():
    rng = np.random.default_rng(40)
    poses, X, _ = pinhole_scene(rng)
    meas = rng.uniform(0, 640, (M, 3))
    g = factors.stereo("poses", np.arange(M), "points", np.arange(M), meas, KS, None)
    kinds, params = (kind_of("SE3"), kind_of(3)), [jnp.asarray(poses), jnp.asarray(X)]
    r, J = evaluate(g, kinds, params)
    cal = gtsam.Cal3_S2Stereo(*KS)
    ref = []
    for m in range(M):
        f = gtsam.GenericStereoFactor3D(gtsam.StereoPoint2(*meas[m]), unit(3), 0, 1, cal)
        values = gtsam.Values()
        values.insert(0, gtsam_pose3(poses[m]))
        values.insert(1, X[m])
        ref.append(f.unwhitenedError(values))
    np.testing.assert_allclose(np.asarray(r), ref, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(r)[:3], 2 * KS[0])  # behind the camera: GTSAM's 2 fx
    assert all(np.all(np.asarray(Ja)[:3] == 0) for Ja in J)
    assert_jacobians(g, kinds, params)


def test_small_stereo_solve_reaches_the_truth():
    rng = np.random.default_rng(41)
    poses = np.array([[1.0, 0, 0, 0, 0, 0, 0], [np.cos(0.05), 0, np.sin(0.05), 0, 0.5, 0, 0]])
    points = np.stack([rng.uniform(-1, 2, 5), rng.uniform(-1, 1, 5), rng.uniform(4, 7, 5)], 1)
    i, j = np.repeat(np.arange(2), 5), np.tile(np.arange(5), 2)
    cal = gtsam.Cal3_S2Stereo(*KS)
    meas = np.asarray([gtsam.StereoCamera(gtsam_pose3(poses[a]), cal).project(points[b]).vector()
                       for a, b in zip(i, j)])
    problem = Problem([VariableGroup("poses", lie.SE3, 2), VariableGroup("points", "R3", 5)], [
        factors.prior("poses", [0, 1], poses, noise.isotropic(1e-3)),
        factors.stereo("poses", i, "points", j, meas, KS, noise.isotropic(1.0)),
    ])
    start = {"poses": jnp.asarray(poses), "points": jnp.asarray(points + rng.normal(0, 0.05, points.shape))}
    values, info = jaxgraph.solve(problem, start, tolerance=1e-14, absolute_tolerance=1e-20)
    assert info.converged and float(info.cost) < 1e-12
    np.testing.assert_allclose(np.asarray(values["points"]), points, atol=1e-6)


# -- errors ------------------------------------------------------------------------------------

def test_camera_factor_errors_name_the_group():
    cams = VariableGroup("cameras", factors.BAL_CAMERA, 2)
    pts = VariableGroup("points", 3, 2)
    poses = VariableGroup("poses", "SE3", 2)
    with pytest.raises(ValueError, match=r"factor group 'obs' \(snavely_reprojection\): pixels must have shape \(2, 2\)"):
        Problem([cams, pts], [factors.snavely_reprojection("cameras", [0, 1], "points", [0, 1], np.zeros((2, 3)),
                                                           name="obs")])
    with pytest.raises(TypeError, match=r"factor group 'obs' \(snavely_reprojection\): slot 1 .*'poses'.* camera"):
        Problem([poses, pts], [factors.snavely_reprojection("poses", [0, 1], "points", [0, 1], np.zeros((2, 2)),
                                                            name="obs")])
    with pytest.raises(TypeError, match=r"factor group 'obs' \(snavely_reprojection\): slot 2 .*'cameras'.* 3-D point"):
        Problem([cams, pts], [factors.snavely_reprojection("cameras", [0, 1], "cameras", [1, 0], np.zeros((2, 2)),
                                                           name="obs")])
    with pytest.raises(TypeError, match=r"factor group 'px' \(reprojection\): slot 1 .* camera, ProductKind"):
        Problem([VariableGroup("cameras", ProductKind(lie.SE3, 4), 2), pts],
                [factors.reprojection("points", [0, 1], np.zeros((2, 2)), None, camera=("cameras", [0, 1]), name="px")])
    with pytest.raises(TypeError, match=r"factor group 'px' \(reprojection\): slot 3 .*'K'.* calibration"):
        Problem([poses, pts, VariableGroup("K", 6, 1)],
                [factors.reprojection("points", [0, 1], np.zeros((2, 2)), None, pose=("poses", [0, 1]),
                                      calibration=("K", [0, 0]), name="px")])
    with pytest.raises(ValueError, match=r"factor group 'px': calibration must have shape \(k,\) or \(M, k\)"):
        factors.reprojection("points", [0, 1], np.zeros((2, 2)), None, pose=("poses", [0, 1]), calibration=np.ones(7),
                             name="px")
    with pytest.raises(ValueError, match=r"factor group 'px' \(reprojection\): calibration must have shape \(M, k\)"):
        Problem([poses, pts], [factors.reprojection("points", [0, 1], np.zeros((2, 2)), None, pose=("poses", [0, 1]),
                                                    calibration=np.ones((3, 5)), name="px")])
    with pytest.raises(TypeError, match=r"factor group 'px': give either camera=\(group, idx\) or pose="):
        factors.reprojection("points", [0], np.zeros((1, 2)), None, name="px")
    with pytest.raises(ValueError, match=r"factor group 'st' \(stereo\): measurement must have shape \(2, 3\)"):
        Problem([poses, pts], [factors.stereo("poses", [0, 1], "points", [0, 1], np.zeros((2, 2)), KS, None, name="st")])
    with pytest.raises(ValueError, match=r"factor group 'st': calibration must have shape"):
        factors.stereo("poses", [0, 1], "points", [0, 1], np.zeros((2, 3)), KS[:5], None, name="st")
    with pytest.raises(TypeError, match=r"factor group 'st' \(stereo\): slot 1 .*'points'.* 3-D pose"):
        Problem([poses, pts], [factors.stereo("points", [0, 1], "poses", [0, 1], np.zeros((2, 3)), KS, None, name="st")])


def test_jit_float32_jacobians_on_a_large_batch_equal_float64():
    """33,511 Snavely factors: the jit-compiled float32 Jacobians equal the float64 ones (XLA:CPU
    once compiled a float32 sum in the pose Jacobian to wrong numbers for most rows)."""
    from jaxgraph.io.bal import bundle_problem, quaternion_from_angle_axis
    from jaxgraph.io.synthetic import synthetic_bal

    d = synthetic_bal(40, 8000)
    cams = np.concatenate([quaternion_from_angle_axis(d["cameras_init"][:, :3]), d["cameras_init"][:, 3:]], 1)
    problem, values = bundle_problem(cams, d["points_init"], d["camera_index"], d["point_index"],
                                     d["observations"], dtype=jnp.float64)
    J64 = problem.jacobians(values, "observations")
    J32 = problem.jacobians({k: v.astype(jnp.float32) for k, v in values.items()}, "observations")
    for a, b in zip(J32, J64):
        scale = np.abs(np.asarray(b)).max(axis=(1, 2), keepdims=True)
        assert np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b)) / scale) < 1e-3
