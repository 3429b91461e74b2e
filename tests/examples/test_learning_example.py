"""The worked examples of learning through the solver learn what they were simulated with.

examples/learn_odometry_bias.py recovers a simulated odometry bias; examples/learn_noise_intel.py
learns that the simulated loop closures of the Intel graph are noisier than its odometry.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gradient_through_solve_recovers_simulated_bias():
    example = _load("learn_odometry_bias")
    bias, history, _ = example.train(steps=40, num_poses=24)
    assert np.all(np.isfinite(history))
    assert history[-1] < 0.05 * history[0]
    # The simulated truth is independent of the solver: the learned bias must approach it.
    np.testing.assert_allclose(bias[0], example.TRUE_BIAS[0], atol=0.01)
    np.testing.assert_allclose(bias[2], example.TRUE_BIAS[2], atol=0.003)


@pytest.mark.slow
def test_learned_noise_weights_closures_below_odometry_on_intel():
    example = _load("learn_noise_intel")
    sigmas, history, _, _ = example.train(steps=25, num_poses=400)
    assert np.all(np.isfinite(history)) and np.all(np.isfinite(sigmas))
    assert history[-1] < 0.6 * history[0]
    # Simulated with loop closures 20x noisier in translation than odometry; the solver started
    # out weighting both alike. Learning must trust the odometry's translations more.
    odometry, closures = sigmas
    assert closures[:2].mean() > 2 * odometry[:2].mean()
