"""``jaxgraph.runtime.jit``: a user's gradient step through the solve, kept across processes.

Independent truths: JAX's own trace count in the new process (0 when the program came from
disk), the first process's numbers (bit-identical), a plain ``jax.jit`` of the same function
in this process, and the key's contract: a changed closed-over array makes another key, a
closure over an object that cannot be written out is not keyed (and still runs).
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgraph
from jaxgraph import factors, noise
from jaxgraph.graph import Problem, VariableGroup
from jaxgraph.runtime import compile_cache
from jaxgraph.runtime import executable_cache as xc

from ._workers import run_worker, trace_counter

# One process: with the cache in argv[1], the value and gradient of a loss of the solved
# poses with respect to the loop's measurements (implicit backward), through runtime.jit;
# prints the numbers, the traces of the loss and of the solve, and the cache entries.
_WORKER = r"""
import hashlib, json, sys
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
import jaxgraph
from jaxgraph import factors, noise
from jaxgraph.graph import Problem, VariableGroup
""" + trace_counter('loss', '_dispatch') + r"""
jaxgraph.enable_compilation_cache(sys.argv[1])
n = 8
rng = np.random.default_rng(0)
i = np.arange(n); j = (i + 1) % n
z = np.stack([np.ones(n), 0.1 * rng.normal(size=n), np.full(n, 2 * np.pi / n)], 1)
problem = Problem([VariableGroup("poses", "SE2", n)],
                  [factors.between("poses", i, j, jnp.asarray(z), noise.isotropic(0.1), name="edges")])
ang = 2 * np.pi * np.arange(n) / n
values = {"poses": jnp.asarray(np.stack([np.cos(ang), np.sin(ang), ang + np.pi / 2], 1) + 0.05 * rng.normal(size=(n, 3)))}
edges = problem.group("edges")

def loss(meas):
    p = problem.replace_group("edges", edges.replace(measurement=meas))
    x, _ = jaxgraph.solve(p, values, tolerance=1e-12, max_iterations=30)
    return jnp.sum(x["poses"][:, :2] ** 2)

step = jaxgraph.runtime.jit(jax.value_and_grad(loss))
value, grad = step(edges.measurement)
folder = jaxgraph.runtime.executable_cache.directory()
print("RESULT " + json.dumps({"value": float(value).hex(),
      "grad": hashlib.sha256(np.asarray(grad).tobytes()).hexdigest(), "traced": len(traces),
      "entries": sorted(p.name for p in folder.glob("*.pkl")) if folder.exists() else []}))
"""


def _run(cache):
    return run_worker(_WORKER, cache)


def test_a_new_process_loads_the_gradient_step_without_tracing(tmp_path):
    first = _run(tmp_path / "cache")
    assert first["traced"] > 0 and len(first["entries"]) == 1  # the step, compiled and stored
    second = _run(tmp_path / "cache")
    assert second["traced"] == 0  # loaded: neither the step nor the solve inside was traced
    assert second["entries"] == first["entries"]
    assert (second["value"], second["grad"]) == (first["value"], first["grad"])


def _loop(n=5):
    i = np.arange(n)
    z = np.tile([1.0, 0.0, 2 * np.pi / n], (n, 1))
    problem = Problem([VariableGroup("poses", "SE2", n)],
                      [factors.between("poses", i, (i + 1) % n, jnp.asarray(z), noise.isotropic(0.1), name="edges")])
    ang = 2 * np.pi * np.arange(n) / n
    values = {"poses": jnp.asarray(np.stack([np.cos(ang), np.sin(ang), ang + np.pi / 2], 1) + 0.01)}
    return problem, values


def _loss_over(problem, values, scale):
    def loss(meas):
        p = problem.replace_group("edges", problem.group("edges").replace(measurement=meas))
        x, _ = jaxgraph.solve(p, values, max_iterations=20)
        return jnp.sum(x["poses"] * scale)

    return loss


def test_the_key_covers_closed_over_problems_values_and_arrays():
    problem, values = _loop()
    key = lambda *a: xc.function_key(jax.value_and_grad(_loss_over(*a)))
    base = key(problem, values, np.ones(3))
    assert key(problem, values, np.ones(3)) == base  # rebuilt from the same data
    assert key(problem, values, np.full(3, 1.0 + 1e-12)) != base  # a closed-over array
    moved = {"poses": values["poses"] + 1e-9}
    assert key(problem, moved, np.ones(3)) != base  # the initial values it closes over
    g = problem.group("edges")
    other = problem.replace_group("edges", g.replace(measurement=g.measurement * 1.5))
    assert key(other, values, np.ones(3)) != base  # a leaf of the problem


@pytest.mark.slow
def test_an_unkeyable_closure_runs_as_a_plain_jit_with_the_options(tmp_path):
    class Scale:  # a user object: function_key cannot write it out
        value = 2.0

    problem, values = _loop()
    scale = Scale()
    loss = _loss_over(problem, values, scale.value)

    def with_object(meas):
        return loss(meas) * scale.value

    with pytest.raises(xc.Uncacheable):
        xc.function_key(with_object)
    old = (jax.config.jax_enable_compilation_cache, jax.config.jax_compilation_cache_dir)
    compile_cache.enable_compilation_cache(tmp_path)
    try:
        step = jaxgraph.runtime.jit(jax.value_and_grad(with_object))
        got = step(problem.group("edges").measurement)
        assert not list((tmp_path / xc.FOLDER).glob("*.pkl"))  # not stored
    finally:
        jax.config.update("jax_enable_compilation_cache", old[0])
        jax.config.update("jax_compilation_cache_dir", old[1])
    want = jax.jit(jax.value_and_grad(with_object))(problem.group("edges").measurement)
    np.testing.assert_allclose(float(got[0]), float(want[0]), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(want[1]), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cached", [False, True], ids=["no cache", "cache"])
def test_a_users_container_changed_in_place_gets_its_own_program(tmp_path, monkeypatch, cached):
    """runtime.jit keys a call by its arguments' structure and types, never by the identity of
    a user's (mutable) container: a nested dict whose array is replaced by one of another shape
    runs a program of that shape."""
    if cached:
        monkeypatch.setattr(xc, "directory", lambda: tmp_path)
    step = compile_cache.jit(lambda p: {"out": p["layer"]["w"] * 2.0})
    params = {"layer": {"w": jnp.ones(3)}}
    assert step(params)["out"].shape == (3,)
    params["layer"]["w"] = jnp.arange(5.0)
    np.testing.assert_array_equal(np.asarray(step(params)["out"]), 2.0 * np.arange(5.0))
