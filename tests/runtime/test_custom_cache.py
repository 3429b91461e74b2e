"""Custom residuals in the executable cache (issue 22): a problem with ``factors.custom`` groups
is keyed by its residual function's code and constants, so a new process loads its compiled
solve instead of compiling it again.

Independent truths: JAX's own trace count in the new process (0 when the program came from
disk), the first process's result (bit-identical), and the key's contract: the same code and
constants give one key in every process, a changed constant, closure value, global or default
another, and a function holding something that cannot be written out is not keyed at all.
"""

import types

import numpy as np
import pytest

from jaxgraph.graph.factors import Custom
from jaxgraph.runtime import executable_cache as xc

from ._workers import run_worker, trace_counter

# One process: with the cache in argv[1], solve range-only problems of custom factors (a
# residual with a module-level helper and constant, noise given as Python floats), one per
# seed in argv[2:]; print each result, the trace count and the cache entries.
_WORKER = r"""
import hashlib, json, sys
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
import jaxgraph
from jaxgraph import Problem, VariableGroup, factors, noise
""" + trace_counter('_dispatch') + r"""
jaxgraph.enable_compilation_cache(sys.argv[1])
EPS = 1e-12

def norm(v):
    return jnp.sqrt(jnp.sum(v * v) + EPS)

def distance(params, d):
    return norm(params[0] - params[1])[None] - d

def build(seed):
    # 12 points, 50 of their 66 distances (a different subset per seed: another sparsity
    # pattern, the same size class), a prior on 3 points
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(12, 2)) * 5
    i, j = np.triu_indices(12, 1)
    keep = np.sort(rng.permutation(len(i))[:50])
    i, j = i[keep], j[keep]
    d = np.linalg.norm(truth[i] - truth[j], axis=1)[:, None]
    problem = Problem([VariableGroup("points", 2, 12)],
                      [factors.custom(distance, [("points", i), ("points", j)], d, noise.isotropic(1.0), 1),
                       factors.prior("points", [0, 1, 2], truth[:3], noise.isotropic(0.01))])
    return problem, {"points": jnp.asarray(truth + 0.3 * rng.normal(size=truth.shape))}

def numbers(seed):
    out, info = jaxgraph.solve(*build(seed))
    return {"cost": float(info.cost), "converged": bool(info.converged),
            "digest": hashlib.sha256(np.asarray(out["points"]).tobytes()).hexdigest()}

result = {str(seed): numbers(seed) for seed in map(int, sys.argv[2:])}
folder = jaxgraph.runtime.executable_cache.directory()
print("RESULT " + json.dumps(dict(result, traced=len(traces),
      entries=sorted(p.name for p in folder.glob("*.pkl")) if folder.exists() else [])))
"""


def _run(cache, *seeds, worker=_WORKER):
    """Run ``worker`` (a script) in a new process with the cache folder and ``seeds`` as its
    arguments; its ``RESULT`` line as a dict."""
    return run_worker(worker, cache, *seeds)


def test_a_new_process_loads_the_solve_of_a_custom_residual_problem(tmp_path):
    """Also the dense linear solver's path (jaxlib's LAPACK kernels, which a loaded program
    needs set up) on a *different* graph of the same size class: the first process solves that
    graph too, with the program it compiled itself, and the loaded program gives bit-identical
    results."""
    cache = tmp_path / "cache"
    first = _run(cache, 0, 1)
    assert first["traced"] == 1 and len(first["entries"]) == 1  # one program for both graphs
    second = _run(cache, 1)
    assert second["traced"] == 0, "the new process traced the custom-residual solve instead of loading it"
    assert second["entries"] == first["entries"]
    assert second["1"] == first["1"] and second["1"]["converged"]
    assert first["0"]["digest"] != first["1"]["digest"]


def _define(source, name="f", **scope):
    """A function ``name`` made from ``source`` in a fresh module namespace (a new object every call)."""
    module = types.ModuleType("user_residuals")
    module.__dict__.update(scope)
    exec(source, module.__dict__)  # noqa: S102 (the test's own source)
    return getattr(module, name)


BASE = """
import jax.numpy as jnp
SCALE = 2.0
def helper(x):
    return SCALE * x
def f(params, data, k=3):
    return jnp.sin(helper(params[0])) * k - data * 0.5
"""


def _closing_over(value):
    return lambda params, data: params[0] * value - data


def test_the_key_follows_code_constants_closures_globals_and_defaults():
    def key(fn):
        return xc.encode(Custom(fn, 2))

    base = key(_define(BASE))
    assert key(_define(BASE)) == base  # another object of the same code and constants
    assert base == key(_define(BASE.replace("\n", "\n\n")))  # line numbers are not the program
    changed = [
        BASE.replace("data * 0.5", "data * 0.25"),  # a constant in the function
        BASE.replace("SCALE = 2.0", "SCALE = 3.0"),  # a global it reads (through a helper)
        BASE.replace("return SCALE * x", "return SCALE + x"),  # a helper's code
        BASE.replace("k=3", "k=4"),  # a default argument
        BASE.replace("jnp.sin", "jnp.cos"),  # a library function it calls
    ]
    keys = {key(_define(source)) for source in changed}
    assert len(keys) == len(changed) and base not in keys
    assert xc.encode(Custom(_define(BASE), 3)) != base  # the residual size

    assert key(_closing_over(np.arange(3.0))) == key(_closing_over(np.arange(3.0)))
    assert key(_closing_over(np.arange(3.0))) != key(_closing_over(np.arange(3.0) + 1e-12))
    assert key(_closing_over(2)) != key(_closing_over(2.0))


def test_a_function_holding_what_cannot_be_written_out_is_not_keyed():
    class Model:
        weight = 2.0

    with pytest.raises(xc.Uncacheable, match="Model"):  # a closure over a user object
        xc.encode(Custom(_closing_over(Model()), 1))
    with pytest.raises(xc.Uncacheable, match="module user_helpers"):  # a user module (its code is not hashed)
        helpers = types.ModuleType("user_helpers")
        xc.encode(Custom(_define("def f(params, data):\n    return helpers.g(params[0])", helpers=helpers), 1))
