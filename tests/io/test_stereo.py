"""Stereo visual odometry files (GTSAM's StereoVOExample_large): paths beside the factors file,
the problem read (poses fixed at the first, landmarks from their first observation), malformed
lines named by file and line, write -> read, GTSAM's initial cost and the VO large solve."""

import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import jaxgraph
from jaxgraph import factors
from jaxgraph.io import FormatError, read_stereo_vo, stereo_vo_paths, write_stereo_vo
from jaxgraph.io._convert import matrix_from_quaternion

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "bundle_adjustment"
VO = DATA / "VO_stereo_factors_large.txt"
K = [700.0, 710.0, 0.0, 320.0, 240.0, 0.5]
POSES = {5: (0.3, [1.0, 2.0, 0.5]), 2: (0.0, [0.0, 0.0, 0.0]), 9: (-0.2, [2.0, 1.0, 0.0])}  # yaw, position


def _matrix(yaw, t):
    c, s = np.cos(yaw), np.sin(yaw)
    m = np.eye(4)
    m[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]  # about the camera's y axis (down)
    m[:3, 3] = t
    return m


def _project(X):
    fx, fy, _, cx, cy, b = K
    return [float(cx + fx * X[0] / X[2]), float(cx + fx * (X[0] - b) / X[2]), float(cy + fy * X[1] / X[2])]


def small_vo(tmp_path, suffix="_small"):
    """Poses 5, 2, 9 (unsorted), landmarks 40, 7, 12 seen from several poses, exact pixels."""
    world = {40: np.array([1.0, 0.5, 8.0]), 7: np.array([-1.0, -0.5, 6.0]), 12: np.array([0.5, 1.0, 9.0])}
    obs = [(5, 40), (2, 40), (2, 7), (9, 12), (5, 7), (9, 40)]
    (tmp_path / f"VO_calibration{suffix}.txt").write_text(" ".join(map(repr, K)))  # no final newline, as GTSAM's
    (tmp_path / f"VO_camera_poses{suffix}.txt").write_text(
        "".join(f"{i} " + " ".join(map(repr, _matrix(*POSES[i]).ravel().tolist())) + "\n" for i in POSES))
    lines = []
    for x, lm in obs:
        T = _matrix(*POSES[x])
        local = T[:3, :3].T @ (world[lm] - T[:3, 3])
        lines.append(f"{x} {lm} " + " ".join(map(repr, _project(local) + local.tolist())))
    path = tmp_path / f"VO_stereo_factors{suffix}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, world, obs


def test_paths_beside_the_factors_file(tmp_path):
    f = tmp_path / "VO_stereo_factors_large.txt"
    assert stereo_vo_paths(f) == (str(tmp_path / "VO_calibration.txt"), str(tmp_path / "VO_camera_poses_large.txt"))
    (tmp_path / "VO_calibration_large.txt").write_text("1")
    assert stereo_vo_paths(f)[0] == str(tmp_path / "VO_calibration_large.txt")
    assert stereo_vo_paths(tmp_path / "VO_stereo_factors_x.txt", for_writing=True)[0] == str(tmp_path / "VO_calibration_x.txt")
    assert stereo_vo_paths(tmp_path / "run.txt") == (str(tmp_path / "run_calibration.txt"), str(tmp_path / "run_poses.txt"))
    assert stereo_vo_paths(f, "a.txt", "b.txt") == ("a.txt", "b.txt")


def test_read_small_problem(tmp_path):
    path, world, _ = small_vo(tmp_path)
    problem, values = read_stereo_vo(path)
    assert [(v.name, v.count, v.fixed) for v in problem.variables] == [("poses", 3, (0,)), ("landmarks", 3, ())]
    np.testing.assert_array_equal(problem.metadata["pose_ids"], [2, 5, 9])
    np.testing.assert_array_equal(problem.metadata["landmark_ids"], [7, 12, 40])
    g = problem.group("stereo")
    assert isinstance(g.type, factors.Stereo) and g.noise is None
    np.testing.assert_array_equal(g.indices.array, [[1, 2], [0, 2], [0, 0], [2, 1], [1, 0], [2, 2]])
    np.testing.assert_array_equal(np.asarray(g.measurement["calibration"]), np.tile(K, (6, 1)))
    P = np.asarray(values["poses"])
    for k, pid in enumerate([2, 5, 9]):
        np.testing.assert_allclose(matrix_from_quaternion(P[k:k + 1, :4])[0], _matrix(*POSES[pid])[:3, :3], atol=1e-15)
        np.testing.assert_array_equal(P[k, 4:], POSES[pid][1])
    np.testing.assert_allclose(np.asarray(values["landmarks"]), [world[7], world[12], world[40]], rtol=1e-14)
    np.testing.assert_allclose(np.asarray(problem.residuals(values, "stereo")), 0, atol=1e-9)
    assert read_stereo_vo(path, fix_first=False)[0].variables[0].fixed == ()


def _cases(tmp_path):
    path, _, _ = small_vo(tmp_path)
    cal = tmp_path / "VO_calibration_small.txt"
    poses = tmp_path / "VO_camera_poses_small.txt"
    good_poses = poses.read_text().splitlines()
    good_obs = path.read_text().splitlines()
    return [
        (cal, "700 710 0 320 240", 2, r"expected the calibration 'fx fy skew cx cy baseline' \(6 numbers, found 5\)"),
        (cal, "700 710 0 320 240 0.5 9", 1, r"expected the end of the file after the calibration's 6 numbers, found '9'"),
        (cal, "700 710 0 320 x 0.5", 1, r"calibration .*: expected a number, found 'x'"),
        (poses, "\n".join(good_poses[:1] + ["3 1 0 0"]), 2, r"a pose 'id' \+ 16 numbers .* \(17 tokens\), found 4"),
        (poses, "\n".join(good_poses + [good_poses[0]]), 4, r"duplicate pose id 5 \(first on line 1\)"),
        (poses, "\n".join(good_poses + ["4 2 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1"]), 4, r"pose 4: the upper-left 3x3 block is not a rotation"),
        (path, "\n".join(good_obs + ["5 3 1 2 3 4 5"]), 7, r"an observation .* \(8 tokens\), found 7"),
        (path, "\n".join(good_obs + ["6 3 1 2 3 4 5 6"]), 7, r"camera id 6 has no pose in .*VO_camera_poses_small.txt"),
        (path, "\n".join(good_obs + ["5 3 1 2 3 4 5 z"]), 7, r"uL uR v X Y Z: expected a number, found 'z'"),
        (path, "\n".join(good_obs + ["5 3.5 1 2 3 4 5 6"]), 7, r"landmark id: expected an integer, found '3.5'"),
        (path, "\n", 2, r"expected an observation .*, found the end of the file"),
    ]


def test_malformed_input_names_file_line_and_problem(tmp_path):
    for target, text, line, pattern in _cases(tmp_path):
        small_vo(tmp_path)  # every case edits one file of a good set
        target.write_text(text)
        with pytest.raises(FormatError) as exc:
            read_stereo_vo(tmp_path / "VO_stereo_factors_small.txt")
        msg = str(exc.value)
        assert msg.startswith(f"{target}:{line}: "), (text, msg)
        assert re.search(pattern, msg), (pattern, msg)


def test_write_read_round_trip(tmp_path):
    path, _, _ = small_vo(tmp_path)
    p1, v1 = read_stereo_vo(path)
    rng = np.random.default_rng(0)
    moved = {"poses": v1["poses"].at[:, 4:].add(0.01), "landmarks": v1["landmarks"] + rng.normal(size=(3, 3))}
    out = tmp_path / "out" / "VO_stereo_factors_out.txt"
    out.parent.mkdir()
    write_stereo_vo(out, p1, moved)
    assert sorted(x.name for x in out.parent.iterdir()) == [
        "VO_calibration_out.txt", "VO_camera_poses_out.txt", "VO_stereo_factors_out.txt"]
    p2, v2 = read_stereo_vo(out)
    for key in ("pose_ids", "landmark_ids"):
        np.testing.assert_array_equal(p2.metadata[key], p1.metadata[key])
    np.testing.assert_allclose(np.asarray(v2["poses"]), np.asarray(moved["poses"]), rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(np.asarray(v2["landmarks"]), np.asarray(moved["landmarks"]), rtol=1e-14)
    g1, g2 = p1.group("stereo"), p2.group("stereo")
    np.testing.assert_array_equal(g1.indices.array, g2.indices.array)
    for k in ("measurement", "calibration"):
        np.testing.assert_array_equal(np.asarray(g1.measurement[k]), np.asarray(g2.measurement[k]))
    bad = dict(moved, landmarks=moved["landmarks"].at[0, 0].set(jnp.nan))
    with pytest.raises(ValueError, match="write_stereo_vo: landmarks 0 is not finite"):
        write_stereo_vo(tmp_path / "x.txt", p1, bad)


def _gtsam_vo(gtsam):
    """StereoVOExample_large's graph with the poses' rotations normalised to unit quaternions."""
    fx, fy, s, u0, v0, b = np.loadtxt(DATA / "VO_calibration.txt")
    cal = gtsam.Cal3_S2Stereo(fx, fy, s, u0, v0, b)
    graph, initial = gtsam.NonlinearFactorGraph(), gtsam.Values()
    unit = gtsam.noiseModel.Isotropic.Sigma(3, 1)
    for row in np.loadtxt(DATA / "VO_camera_poses_large.txt"):
        m = row[1:].reshape(4, 4)
        q = gtsam.Rot3(m[:3, :3]).toQuaternion().coeffs()  # x y z w
        q = q / np.linalg.norm(q)
        initial.insert(gtsam.symbol("x", int(row[0])), gtsam.Pose3(gtsam.Rot3.Quaternion(q[3], *q[:3]), m[:3, 3]))
    for x, lm, uL, uR, v, *X in np.loadtxt(VO):
        xk, lk = gtsam.symbol("x", int(x)), gtsam.symbol("l", int(lm))
        graph.add(gtsam.GenericStereoFactor3D(gtsam.StereoPoint2(uL, uR, v), unit, xk, lk, cal))
        if not initial.exists(lk):
            initial.insert(lk, initial.atPose3(xk).transformFrom(np.array(X)))
    return graph, initial


@pytest.fixture(scope="module")
def vo_large():
    if not VO.exists():
        pytest.skip("shared data not available")
    return read_stereo_vo(VO, dtype=jnp.float64)


def test_vo_large_reads_as_gtsam(vo_large):
    problem, values = vo_large
    assert [(v.name, v.count) for v in problem.variables] == [("poses", 26), ("landmarks", 2634)]
    assert problem.group("stereo").count == 8189 and problem.metadata["pose_ids"][0] == 1
    gtsam = pytest.importorskip("gtsam")
    graph, initial = _gtsam_vo(gtsam)
    np.testing.assert_allclose(float(problem.cost(values)), graph.error(initial), rtol=1e-10)  # 14538.6698


def test_vo_large_solve_reaches_gtsams_cost(vo_large):
    problem, values = vo_large
    _, info = jaxgraph.solve(problem, values)
    assert bool(info.converged)
    assert abs(float(info.cost) - 1577.02549) <= 1e-6 * 1577.02549  # ../shared/data/README.md
