"""The examples beyond poses (examples/landmark_slam.py, stereo_vo.py, bundle_adjustment.py,
differentiate_bundle_adjustment.py) reach what is known without our code: GTSAM 4.3.0's costs
on the shared data (../shared/data/README.md), the noise floor of a synthetic bundle
adjustment (the RMS error of a least-squares fit with n residuals and p - 7 identifiable
unknowns under Gaussian noise sigma is about sigma sqrt((n - p + 7) / n)), and central
differences of re-solves for the implicit gradient."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / ".." / "shared" / "data"
VICTORIA = DATA / "landmarks" / "victoriaPark_reduced_1k.g2o"
VO_FACTORS = DATA / "bundle_adjustment" / "VO_stereo_factors_large.txt"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _need(path):
    if not path.exists():
        pytest.skip(f"shared data not present: {path}")


@pytest.fixture(scope="module")
def landmark_slam():
    return _load("landmark_slam")


@pytest.fixture(scope="module")
def stereo_vo():
    return _load("stereo_vo")


@pytest.fixture(scope="module")
def bundle_adjustment():
    return _load("bundle_adjustment")


def test_landmark_slam_reaches_gtsam_s_cost(landmark_slam, tmp_path, capsys):
    _need(VICTORIA)
    _, _, solved, info = landmark_slam.solve_landmarks(VICTORIA)
    assert bool(info.converged)
    assert abs(float(info.cost) - 9.134522204) <= 1e-6 * 9.134522204  # GTSAM 4.3.0 LM
    assert np.all(np.isfinite(np.asarray(solved["landmarks"])))
    # the script itself (the solve compiled above is reused): numbers printed, output in --out only
    assert landmark_slam.main(["--data", str(VICTORIA), "--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert "final cost" in text and "GTSAM 4.3.0    9.134522204" in text
    assert [p.name for p in (tmp_path / "out").iterdir()] in ([], ["landmark_slam.png"])


def test_stereo_vo_reaches_gtsam_s_cost(stereo_vo):
    _need(VO_FACTORS)
    _, initial, solved, info = stereo_vo.solve_stereo_vo(VO_FACTORS)
    assert bool(info.converged)
    assert abs(float(info.cost) - 1577.02549) <= 1e-6 * 1577.02549  # GTSAM 4.3.0 LM
    # the first pose is the gauge (held fixed, as GTSAM's example)
    np.testing.assert_array_equal(np.asarray(solved["poses"][0]), np.asarray(initial["poses"][0]))


def test_missing_data_is_a_clear_error(landmark_slam, stereo_vo, bundle_adjustment, tmp_path, capsys):
    for module, flag in ((landmark_slam, "--data"), (stereo_vo, "--factors"), (bundle_adjustment, "--data")):
        with pytest.raises(SystemExit) as exit_info:
            module.main([flag, str(tmp_path / "missing.txt"), "--out", str(tmp_path)] if module is not bundle_adjustment
                        else [flag, str(tmp_path / "missing.txt")])
        assert exit_info.value.code == 2
        assert f"missing.txt not found: pass {flag} PATH" in capsys.readouterr().err


def test_synthetic_bundle_adjustment_reaches_the_noise_floor(bundle_adjustment, capsys):
    sigma = 0.5  # synthetic_bal's pixel noise per coordinate
    problem, initial, truth = bundle_adjustment.synthetic_problem(10, 400, sigma, seed=1)
    solved, info = bundle_adjustment.solve_bundle(problem, initial)
    assert bool(info.converged) and float(info.cost) < float(info.initial_cost)
    # independent of the solver: pixel residuals straight from the Snavely model of synthetic_bal
    rms = {name: bundle_adjustment.rms_pixels(problem, v) for name, v in
           (("initial", initial), ("solved", solved), ("truth", truth))}
    assert rms["solved"] < rms["initial"]
    assert abs(rms["truth"] - sigma) < 0.1 * sigma  # the noise that was added
    assert float(info.cost) <= float(problem.cost(truth))  # a least-squares optimum fits below the truth
    n = 2 * problem.group("observations").count
    p = 10 * 9 + 400 * 3  # BAL cameras (rotation, translation, f, k1, k2) and points
    floor = sigma * np.sqrt((n - p + 7) / n)
    assert abs(rms["solved"] - floor) < 0.1 * floor, (rms, floor)
    # the script with the same sizes (same compiled solve)
    assert bundle_adjustment.main(["--synthetic", "--cameras", "10", "--points", "400", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert f"RMS error (px)     {rms['initial']:.4g} -> {rms['solved']:.4g}" in text


def test_implicit_gradient_of_bundle_adjustment_equals_central_differences():
    example = _load("differentiate_bundle_adjustment")
    value, grad, fd = example.gradient_check(num_cameras=6, num_points=40, step=1e-2)
    assert np.isfinite(value) and value > 0
    assert np.all(np.abs(fd) > 0)
    np.testing.assert_allclose(grad, fd, rtol=1e-4)
