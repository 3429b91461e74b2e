"""g2o files with landmarks: VERTEX_XY / EDGE_SE2_XY, VERTEX_TRACKXYZ / EDGE_SE3_TRACKXYZ /
PARAMS_SE3OFFSET, GTSAM's LANDMARK / LANDMARK2 / BR; malformed lines name file and line; write
then read gives the same problem; the shared files cost what GTSAM 4.3.0 says, before and
after the solve."""

import math
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import jaxgraph
from jaxgraph import Problem, factors, noise
from jaxgraph.io import G2OFormatError, read_g2o, write_g2o
from jaxgraph.io.g2o_landmarks import bearing_range_information, unit3_basis

from .test_g2o import expect_format_error

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "landmarks"
VICTORIA = DATA / "victoriaPark_reduced_1k.g2o"
KNOWN = DATA / "known_landmark_localization_20.g2o"

# Poses 0, 1, 2 (ids 0, 1, 5); landmarks 1 (vertex), 7 (no vertex: first seen on line 7 from
# pose 1), 9 (only BR). Landmark id 1 equals a pose id: separate namespaces.
MIXED2D = """VERTEX_SE2 0 0 0 0
VERTEX_SE2 1 1 0 0.5
VERTEX_SE2 5 2 1 1.0
EDGE_SE2 0 1 1 0 0.5 100 0 0 100 0 400
EDGE_SE2 1 5 1 0.5 0.5 100 0 0 100 0 400
VERTEX_XY 1 3 4
EDGE_SE2_XY 1 7 2 -1 50 5 60
EDGE_SE2_XY 0 1 3.1 3.9 40 0 40
LANDMARK 5 7 0.5 0.5 0.25 0 0.25
LANDMARK2 0 1 3 4 0.2 0.1 0.7
BR 1 9 0.3 2.5 0.05 0.2
EDGE_SE2_XY 5 7 1 1 10 0 10
"""

QUAT = "0 0 0.2588190451025207 0.9659258262890683"  # 30 degrees about z (qx qy qz qw)
INFO3 = "100 0 0 200 0 300"
MIXED3D = f"""VERTEX_SE3:QUAT 0 0 0 0 0 0 0 1
VERTEX_SE3:QUAT 1 1 0 0 {QUAT}
EDGE_SE3:QUAT 0 1 1 0 0 {QUAT} 10 0 0 0 0 0 10 0 0 0 0 10 0 0 0 20 0 0 20 0 20
PARAMS_SE3OFFSET 0 0 0 0 0 0 0 1
PARAMS_SE3OFFSET 4 0.1 0 0 0 0 0 1
VERTEX_TRACKXYZ 3 2 1 0.5
EDGE_SE3_TRACKXYZ 0 3 0 2.1 0.9 0.5 {INFO3}
EDGE_SE3_TRACKXYZ 1 3 0 1 1 0.5 2500 -100 30 900 10 400
EDGE_SE3_TRACKXYZ 1 8 0 0 2 1 {INFO3}
"""


def _write(tmp_path, text, name="g.g2o"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _pose(row):
    x, y, th = row
    return np.array([[np.cos(th), -np.sin(th), x], [np.sin(th), np.cos(th), y], [0, 0, 1]])


def test_2d_landmarks_groups_ids_values_and_noise(tmp_path):
    problem, values = read_g2o(_write(tmp_path, MIXED2D))
    assert [v.name for v in problem.variables] == ["poses", "landmarks"]
    assert [g.name for g in problem.factors] == ["edges", "observations", "bearing_range", "anchor"]
    np.testing.assert_array_equal(problem.metadata["vertex_ids"], [0, 1, 5])
    np.testing.assert_array_equal(problem.metadata["landmark_ids"], [1, 7, 9])
    L = np.asarray(values["landmarks"])
    np.testing.assert_array_equal(L[0], [3, 4])  # its vertex
    P = np.asarray(values["poses"])
    np.testing.assert_allclose(L[1], (_pose(P[1]) @ [2, -1, 1])[:2], rtol=1e-15)  # first observation (line 7)
    b, r = 0.3, 2.5
    np.testing.assert_allclose(L[2], (_pose(P[1]) @ [r * np.cos(b), r * np.sin(b), 1])[:2], rtol=1e-15)

    obs = problem.group("observations")
    assert isinstance(obs.type, factors.RelativePoint)
    np.testing.assert_array_equal(obs.indices.array, [[1, 1], [0, 0], [2, 1]])
    np.testing.assert_array_equal(np.asarray(obs.measurement), [[2, -1], [3.1, 3.9], [1, 1]])
    np.testing.assert_array_equal(np.asarray(obs.noise.matrix[0]), [[50, 5], [5, 60]])

    br = problem.group("bearing_range")
    np.testing.assert_array_equal(br.indices.array, [[2, 1], [0, 0], [1, 2]])
    np.testing.assert_allclose(np.asarray(br.measurement["bearing"]), [math.atan2(0.5, 0.5), math.atan2(4, 3), 0.3])
    np.testing.assert_allclose(np.asarray(br.measurement["range"]), [math.hypot(0.5, 0.5), 5, 2.5])
    # GTSAM: v1 == v3 -> (sqrt(v1 / 10), sqrt(v1)); otherwise unit sigmas; BR carries its sigmas
    np.testing.assert_allclose(np.asarray(br.noise.sigmas),
                               [[math.sqrt(0.025), 0.5], [1, 1], [0.05, 0.2]])
    # At the vertices' values the exact landmark observation has zero residual.
    np.testing.assert_allclose(np.asarray(problem.residuals(values, "observations", 0)), 0, atol=1e-14)


def test_3d_landmarks_relative_point_and_gtsam_bearing_range(tmp_path):
    path = _write(tmp_path, MIXED3D)
    problem, values = read_g2o(path)
    assert [g.name for g in problem.factors] == ["edges", "observations", "anchor"]
    np.testing.assert_array_equal(problem.metadata["landmark_ids"], [3, 8])
    obs = problem.group("observations")
    np.testing.assert_array_equal(np.asarray(obs.noise.matrix[0]), np.diag([100.0, 200, 300]))
    # landmark 8 has no vertex: pose 1 (30 degrees about z, at x = 1) moves (0, 2, 1)
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    np.testing.assert_allclose(np.asarray(values["landmarks"][1]), [1 - 2 * s, 2 * c, 1], rtol=1e-12, atol=1e-15)

    p2, v2 = read_g2o(path, trackxyz="bearing_range", anchor=False)
    assert [g.name for g in p2.factors] == ["edges", "bearing_range"]
    br = p2.group("bearing_range")
    z = np.array([2.1, 0.9, 0.5])
    np.testing.assert_allclose(np.asarray(br.measurement["bearing"][0]), z / np.linalg.norm(z), rtol=1e-15)
    np.testing.assert_allclose(float(br.measurement["range"][0]), np.linalg.norm(z), rtol=1e-15)
    # d z = range B d(bearing) + bearing d(range): the information J^T Lambda J
    n = z / np.linalg.norm(z)
    J = np.column_stack([np.linalg.norm(z) * unit3_basis(n[None])[0], n])
    np.testing.assert_allclose(np.asarray(br.noise.matrix[0]), J.T @ np.diag([100.0, 200, 300]) @ J, rtol=1e-12)
    # landmark 8 starts at its only observation: zero residual in GTSAM's bearing-range terms
    np.testing.assert_allclose(np.asarray(p2.residuals(v2, "bearing_range", 2)), 0, atol=1e-12)


def test_unit3_basis_is_gtsams():
    gtsam = pytest.importorskip("gtsam")
    rng = np.random.default_rng(3)
    n = rng.normal(size=(20, 3))
    n[:3] = [[0, 0, 1], [-1, 0, 0], [1, 1, 0]]  # ties between the smallest coordinates
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    ours = unit3_basis(n)
    for k in range(len(n)):
        np.testing.assert_allclose(ours[k], gtsam.Unit3(n[k]).basis(), atol=1e-15)


@pytest.mark.parametrize(
    "text, line, pattern",
    [
        (MIXED2D + "EDGE_SE2_XY 0 1 1 2 1 0\n", 13, r"EDGE_SE2_XY needs 7 fields after the tag, got 6"),
        (MIXED2D + "EDGE_SE2_XY 0 1 1 x 1 0 1\n", 13, r"EDGE_SE2_XY: token 5 'x' is not a number"),
        (MIXED2D + "EDGE_SE2_XY 4 1 1 1 1 0 1\n", 13, r"landmark observation refers to unknown pose vertex 4"),
        (MIXED2D + "LANDMARK 0 1.5 1 1 1 0 1\n", 13, r"landmark vertex id \(token 3\) '1.5' is not an integer id"),
        (MIXED2D + "VERTEX_XY 1 0 0\n", 13, r"duplicate landmark vertex id 1 \(first defined on line 6\)"),
        (MIXED2D + "LANDMARK 0 1 1 1 0 0 0\n", 13, r"LANDMARK: variance v1 must be > 0, got 0.0"),
        (MIXED2D + "BR 0 1 0.1 1 0 1\n", 13, r"BR: standard deviations must be > 0"),
        (MIXED2D + "VERTEX_TRACKXYZ 2 0 0 0\n", 13, r"VERTEX_TRACKXYZ is 3D but line 1 was 2D"),
        (MIXED2D + "LANDMARK3 0 1 1 1 1 0 1\n", 13, r"unsupported line type 'LANDMARK3'"),
        (MIXED3D + f"EDGE_SE3_TRACKXYZ 0 3 4 1 1 1 {INFO3}\n", 10,
         r"uses offset parameter 4 \(line 5\), which is not the identity \(x y z qx qy qz qw = 0.1 0.0 "),
        (MIXED3D + f"EDGE_SE3_TRACKXYZ 0 3 2 1 1 1 {INFO3}\n", 10, r"refers to offset parameter 2, which no PARAMS"),
        (MIXED3D + "PARAMS_SE3OFFSET 0 0 0 0 0 0 0 1\n", 10, r"duplicate PARAMS_SE3OFFSET id 0 \(first defined on line 4\)"),
        (MIXED3D + "EDGE_SE2_XY 0 1 1 1 1 0 1\n", 10, r"EDGE_SE2_XY is 2D but line 1 was 3D"),
        (MIXED3D + "VERTEX_TRACKXYZ 5 0 nan 0\n", 10, r"VERTEX_TRACKXYZ: token 4 is non-finite \('nan'\)"),
    ],
)
def test_malformed_landmark_lines_name_file_and_line(tmp_path, text, line, pattern):
    expect_format_error(_write(tmp_path, text), line, pattern)


def test_zero_range_has_no_bearing_and_pose_less_files(tmp_path):
    p = _write(tmp_path, MIXED3D + "EDGE_SE3_TRACKXYZ 0 3 0 0 0 0 1 0 0 1 0 1\n")
    read_g2o(p)  # a relative point may be at the pose
    with pytest.raises(G2OFormatError, match=re.escape(f"{p}:10: EDGE_SE3_TRACKXYZ: zero range")):
        read_g2o(p, trackxyz="bearing_range")
    p = _write(tmp_path, "VERTEX_XY 0 1 2\n", "only.g2o")
    with pytest.raises(G2OFormatError, match=re.escape(f"{p}: no pose vertices and no pose edges")):
        read_g2o(p)
    with pytest.raises(ValueError, match="trackxyz must be one of"):
        read_g2o(p, trackxyz="xyz")


def _assert_same(p1, v1, p2, v2):
    assert [v.name for v in p1.variables] == [v.name for v in p2.variables]
    for k in v1:
        np.testing.assert_array_equal(np.asarray(v1[k]), np.asarray(v2[k]), err_msg=k)
    for key in ("vertex_ids", "landmark_ids"):
        np.testing.assert_array_equal(p1.metadata[key], p2.metadata[key])
    assert [g.name for g in p1.factors] == [g.name for g in p2.factors]
    for g1, g2 in zip(p1.factors, p2.factors):
        assert type(g1.type) is type(g2.type) and g1.variables == g2.variables
        np.testing.assert_array_equal(g1.indices.array, g2.indices.array)
        for a, b in zip(*(jnp_leaves(g) for g in (g1, g2))):
            np.testing.assert_array_equal(a, b, err_msg=g1.name)


def jnp_leaves(g):
    import jax

    return [np.asarray(x) for x in jax.tree_util.tree_leaves((g.measurement, g.noise))]


@pytest.mark.parametrize("text", [MIXED2D, MIXED3D], ids=["2d", "3d"])
def test_write_read_round_trip_is_exact(tmp_path, text):
    p1, v1 = read_g2o(_write(tmp_path, text))
    out = tmp_path / "rt.g2o"
    write_g2o(out, p1, v1)
    p2, v2 = read_g2o(out)
    _assert_same(p1, v1, p2, v2)


def test_gtsam_bearing_range_round_trip_and_non_finite(tmp_path):
    p1, v1 = read_g2o(_write(tmp_path, MIXED3D), trackxyz="bearing_range")
    out = tmp_path / "rt.g2o"
    write_g2o(out, p1, v1)  # written as EDGE_SE3_TRACKXYZ: the point and the information mapped back
    p2, _ = read_g2o(out, trackxyz="bearing_range")
    g1, g2 = p1.group("bearing_range"), p2.group("bearing_range")
    for a, b in zip(jnp_leaves(g1), jnp_leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    bad = {"poses": v1["poses"], "landmarks": v1["landmarks"].at[1, 0].set(jnp.nan)}
    with pytest.raises(ValueError, match=r"landmarks 1 \(landmark id 8\) is not finite"):
        write_g2o(out, p1, bad)


def test_bearing_range_information_inverts():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 3))
    A = rng.normal(size=(5, 3, 3))
    info = A @ np.swapaxes(A, 1, 2) + np.eye(3)
    n, r, lam = bearing_range_information(z, info)
    # the same quadratic form: a small xyz step dz and its (bearing, range) step
    J = np.concatenate([r[:, None, None] * unit3_basis(n), n[:, :, None]], 2)
    d = rng.normal(size=(5, 3))
    dz = np.einsum("mij,mj->mi", J, d)
    np.testing.assert_allclose(np.einsum("mi,mij,mj->m", d, lam, d), np.einsum("mi,mij,mj->m", dz, info, dz))


def _gtsam_victoria(tmp_path, gtsam):
    copy = tmp_path / "victoria_landmark.g2o"  # GTSAM drops LANDMARK2 lines: renamed LANDMARK
    copy.write_text(VICTORIA.read_text().replace("LANDMARK2", "LANDMARK"))
    graph, initial = gtsam.readG2o(str(copy), False)
    graph.add(gtsam.PriorFactorPose2(0, initial.atPose2(0), gtsam.noiseModel.Isotropic.Sigma(3, 1e-6)))
    return graph, initial


@pytest.fixture(scope="module")
def victoria():
    if not VICTORIA.exists():
        pytest.skip("shared data not available")
    return read_g2o(VICTORIA, dtype=jnp.float64)


def test_victoria_park_reads_as_gtsam_and_round_trips(tmp_path, victoria):
    problem, values = victoria
    assert [(v.name, v.count) for v in problem.variables] == [("poses", 1000), ("landmarks", 48)]
    assert [(g.name, g.count) for g in problem.factors] == [("edges", 999), ("bearing_range", 606), ("anchor", 1)]
    out = tmp_path / "rt.g2o"
    write_g2o(out, problem, values)
    _assert_same(problem, values, *read_g2o(out, dtype=jnp.float64))
    gtsam = pytest.importorskip("gtsam")
    graph, initial = _gtsam_victoria(tmp_path, gtsam)
    reference = graph.error(initial)  # 36841.44...
    np.testing.assert_allclose(float(problem.cost(values)), reference, rtol=1e-10)


def test_victoria_park_solve_reaches_gtsams_cost(victoria):
    problem, values = victoria
    _, info = jaxgraph.solve(problem, values)
    assert bool(info.converged)
    assert abs(float(info.cost) - 9.134522204) <= 1e-6 * 9.134522204  # ../shared/data/README.md


def _known_with_landmark_priors():
    problem, values = read_g2o(KNOWN, dtype=jnp.float64, trackxyz="bearing_range", landmark_prior=1e-6)
    # what read_g2o adds is the reference's prior, built here by hand: the same cost anywhere
    bare, _ = read_g2o(KNOWN, dtype=jnp.float64, anchor=False, trackxyz="bearing_range")
    known = factors.prior("landmarks", np.arange(4), values["landmarks"], noise.isotropic(1e-6), name="known")
    by_hand = Problem(bare.variables, [*bare.factors, known], anchor=False, metadata=bare.metadata)
    assert [g.name for g in problem.factors] == ["edges", "bearing_range", "landmark_prior"]
    moved = dict(values, landmarks=values["landmarks"] + 1e-6, poses=values["poses"].at[:, 4:].add(0.1))
    np.testing.assert_allclose(float(problem.cost(moved)), float(by_hand.cost(moved)), rtol=1e-12)
    return problem, values


def test_known_landmarks_read_as_gtsam(tmp_path):
    if not KNOWN.exists():
        pytest.skip("shared data not available")
    problem, values = read_g2o(KNOWN, dtype=jnp.float64, anchor=False, trackxyz="bearing_range")
    assert problem.metadata["landmark_ids"].tolist() == [0, 1, 2, 3]
    gtsam = pytest.importorskip("gtsam")
    graph, initial = gtsam.readG2o(str(KNOWN), True)  # 80 BearingRangeFactor3D + 19 BetweenFactorPose3
    np.testing.assert_allclose(float(problem.cost(values)), graph.error(initial), rtol=1e-10)
    out = tmp_path / "rt.g2o"
    p1, v1 = read_g2o(KNOWN, dtype=jnp.float64)
    write_g2o(out, p1, v1)
    _assert_same(p1, v1, *read_g2o(out, dtype=jnp.float64))


def test_known_landmarks_solve_reaches_gtsams_cost():
    if not KNOWN.exists():
        pytest.skip("shared data not available")
    problem, values = _known_with_landmark_priors()
    _, info = jaxgraph.solve(problem, values)
    assert bool(info.converged)
    assert abs(float(info.cost) - 114.8644379) <= 1e-6 * 114.8644379  # ../shared/data/README.md
