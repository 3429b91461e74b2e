"""Settings that used to be accepted with a meaningless result (issue 23): a robust threshold
of 0 or below (every cost 0 or negative, "converged") and a model fidelity of 1 or more (no
step can be accepted). Each is refused naming the setting and, for a loss, the factor group."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxgraph
from jaxgraph import robust
from jaxgraph.graph import factors as F
from jaxgraph.graph import noise as N
from jaxgraph.graph.problem import Problem, VariableGroup


def _problem(loss):
    meas = jnp.asarray([[1.0, 0.0, 0.0], [1.0, 0.0, 0.1]])
    edges = F.between("poses", np.array([0, 1]), np.array([1, 2]), meas, N.Isotropic(jnp.asarray(0.1)),
                      robust=loss, name="edges")
    anchor = F.prior("poses", np.zeros(1, np.int64), jnp.zeros((1, 3)), N.Isotropic(jnp.asarray(1e-3)), name="anchor")
    values = {"poses": jnp.asarray([[0.0, 0.0, 0.0], [1.2, 0.1, 0.0], [2.0, 0.3, 0.2]])}
    return Problem([VariableGroup("poses", "SE2", 3)], [edges, anchor]), values


@pytest.mark.parametrize("cls", [robust.Huber, robust.Cauchy, robust.Tukey, robust.GemanMcClure])
@pytest.mark.parametrize("k, where, shown", [(0.0, "k", "0.0"), (-1.0, "k", "-1.0"),
                                             (np.array([1.0, np.nan]), r"k\[1\]", "nan")])
def test_robust_threshold_must_be_positive(cls, k, where, shown):
    with pytest.raises(ValueError, match=rf"factor group 'edges': {cls.__name__} threshold {where} must be finite "
                                         rf"and > 0 \(whitened units\), got {shown}"):
        problem, values = _problem(cls(k))
        jaxgraph.solve(problem, values)


def test_positive_threshold_solves():
    problem, values = _problem(robust.Huber(np.array([1.0, 2.0])))
    _, info = jaxgraph.solve(problem, values)
    assert bool(info.converged) and float(info.cost) > 0


@pytest.mark.parametrize("fidelity", [1.0, 5.0, -0.1, float("nan")])
def test_min_model_fidelity_must_be_in_zero_one(fidelity):
    with pytest.raises(ValueError, match=r"DampingConfig.min_model_fidelity must be in \[0, 1\), got"):
        jaxgraph.SolverConfig().replace(min_model_fidelity=fidelity)
