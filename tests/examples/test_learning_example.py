"""The worked example (examples/learn_odometry_bias.py) learns the bias it was simulated with."""

import importlib.util
from pathlib import Path

import numpy as np

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "learn_odometry_bias.py"


def _load():
    spec = importlib.util.spec_from_file_location("learn_odometry_bias", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gradient_through_solve_recovers_simulated_bias():
    example = _load()
    bias, history, _ = example.train(steps=40, num_poses=24)
    assert np.all(np.isfinite(history))
    assert history[-1] < 0.05 * history[0]
    # The simulated truth is independent of the solver: the learned bias must approach it.
    np.testing.assert_allclose(bias[0], example.TRUE_BIAS[0], atol=0.01)
    np.testing.assert_allclose(bias[2], example.TRUE_BIAS[2], atol=0.003)
