"""synthetic_bal: the documented counts, BAL convention (noise-free observations reproject
exactly through an independent projection), noise level, start perturbation, float32 values,
determinism and the written BAL file."""

import numpy as np
import pytest
from scipy.linalg import expm

from jaxgraph.io.synthetic import synthetic_bal


def _hat(w):
    return np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])


def _project(cam, X):
    """BAL / Snavely projection written out independently (matrix exponential of the angle-axis)."""
    xc = expm(_hat(cam[:3])) @ X + cam[3:6]
    p = -xc[:2] / xc[2]
    r2 = p @ p
    return cam[6] * (1 + cam[7] * r2 + cam[8] * r2 * r2) * p, -xc[2]


@pytest.fixture(scope="module")
def bal():
    return synthetic_bal()


def test_counts_at_the_defaults(bal):
    assert bal["cameras"].shape == bal["cameras_init"].shape == (40, 9)
    assert bal["points"].shape == bal["points_init"].shape == (8000, 3)
    K = len(bal["camera_index"])
    assert K == 33511  # the number the docstring gives
    assert K >= 30000
    assert bal["point_index"].shape == (K,) and bal["observations"].shape == bal["observations_clean"].shape == (K, 2)
    per_point = np.bincount(bal["point_index"], minlength=8000)
    assert per_point.min() >= 2 and per_point.max() <= 40
    assert np.bincount(bal["camera_index"], minlength=40).min() > 0
    # sorted by camera, then point; no repeated pair
    key = bal["camera_index"] * 8000 + bal["point_index"]
    assert np.all(np.diff(key) > 0)


def test_noise_free_observations_reproject_exactly_and_are_visible(bal):
    rng = np.random.default_rng(1)
    for k in rng.choice(len(bal["camera_index"]), 300, replace=False):
        uv, depth = _project(bal["cameras"][bal["camera_index"][k]], bal["points"][bal["point_index"][k]])
        np.testing.assert_allclose(uv, bal["observations_clean"][k], rtol=0, atol=1e-8)
        assert depth > 1.0 and abs(uv[0]) < 320 and abs(uv[1]) < 240


def test_cameras_on_the_ring_look_at_the_centre(bal):
    for cam in bal["cameras"]:
        R = expm(_hat(cam[:3]))
        centre = -R.T @ cam[3:6]
        assert np.hypot(centre[0], centre[1]) == pytest.approx(10.0, abs=1e-5)
        assert centre[2] == pytest.approx(0.5, abs=1e-5)
        view = R.T @ np.array([0.0, 0.0, -1.0])  # the camera looks down -z
        np.testing.assert_allclose(view, -centre / np.linalg.norm(centre), atol=1e-6)
        assert abs(R[0, 2]) < 1e-6  # image x axis horizontal


def test_noise_and_start_perturbation_as_documented(bal):
    e = bal["observations"] - bal["observations_clean"]
    assert e.std() == pytest.approx(0.5, rel=0.02) and abs(e.mean()) < 0.01
    dp = bal["points_init"] - bal["points"]
    assert dp.std() == pytest.approx(1e-2, rel=0.05)
    c, c0 = bal["cameras"], bal["cameras_init"]
    assert (c0[:, 3:6] - c[:, 3:6]).std() == pytest.approx(1e-2, rel=0.3)
    angles = [np.linalg.norm(_vee_log(expm(_hat(a[:3])).T @ expm(_hat(b[:3])))) for a, b in zip(c, c0)]
    assert 0.5e-3 < np.sqrt(np.mean(np.square(angles)) / 3) < 1.5e-3  # rotation_sigma per axis
    assert np.abs(c0[:, 6] / c[:, 6] - 1).max() < 5e-3
    np.testing.assert_array_equal(c0[:, 7:], c[:, 7:])  # k1, k2 start at their true values


def _vee_log(R):
    theta = np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))
    v = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    return v / 2 if theta < 1e-8 else theta * v / (2 * np.sin(theta))


def test_every_number_is_a_float32_value(bal):
    for key in ("cameras", "points", "cameras_init", "points_init", "observations"):
        a = bal[key]
        np.testing.assert_array_equal(a.astype(np.float32).astype(np.float64), a)


def test_deterministic_in_the_seed():
    a = synthetic_bal(8, 300, seed=3)
    b = synthetic_bal(8, 300, seed=3)
    c = synthetic_bal(8, 300, seed=4)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["observations"], c["observations"])
    assert np.bincount(a["point_index"], minlength=300).min() >= 2


def test_written_bal_file(tmp_path):
    d = synthetic_bal(6, 200, seed=2, path=tmp_path / "s.txt")
    tokens = (tmp_path / "s.txt").read_text().split()
    nc, npt, nobs = map(int, tokens[:3])
    assert (nc, npt, nobs) == (6, 200, len(d["camera_index"]))
    obs = np.array(tokens[3:3 + 4 * nobs], float).reshape(nobs, 4)
    np.testing.assert_array_equal(obs[:, 0], d["camera_index"])
    np.testing.assert_array_equal(obs[:, 1], d["point_index"])
    np.testing.assert_array_equal(obs[:, 2:], d["observations"])
    # parsed as float (GTSAM) or as double (Ceres): the same numbers
    np.testing.assert_array_equal(obs[:, 2:].astype(np.float32).astype(np.float64), obs[:, 2:])
    rest = np.array(tokens[3 + 4 * nobs:], float)
    assert rest.size == 9 * nc + 3 * npt
    np.testing.assert_array_equal(rest[:9 * nc].reshape(nc, 9), d["cameras_init"])
    np.testing.assert_array_equal(rest[9 * nc:].reshape(npt, 3), d["points_init"])
