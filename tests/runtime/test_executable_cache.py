"""The executable cache (jaxgraph/executable_cache.py): compiled solves found again by a new
process without tracing, and never a program for different arguments.

Independent truths: the same solve with the cache off (bit-identical results), JAX's own
trace count in the new process (0 when the program came from disk), and the encoder's
contract (different static data, different text; user code refused).
"""

import os
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import jaxgraph
from jaxgraph.graph.kinds import kind_of
from jaxgraph.runtime import executable_cache as xc
from jaxgraph.solver import SolverConfig

from ._workers import ROOT, run_worker, trace_counter

DATA = ROOT / ".." / "shared" / "data" / "posegraph"

# One process: solve a graph with the cache in argv[1] on or off; print cost, iterations,
# a digest of the values, whether the solve was traced here, and the cache entries. With a
# second graph in argv[5], solve it afterwards with the program of the first, freshly compiled
# in this process (no disk involved), and print the same numbers of it under "other".
_WORKER = r"""
import hashlib, json, sys, warnings
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import jaxgraph
from jaxgraph.runtime import executable_cache
""" + trace_counter('_dispatch') + r"""
cache, graph, dtype, callback = sys.argv[1:5]
other_graph = sys.argv[5] if len(sys.argv) > 5 else None
if cache != "off":
    jaxgraph.enable_compilation_cache(cache)
problem, values = jaxgraph.io.read_g2o(graph, dtype=np.dtype(dtype))
settings = {}
if callback == "module":
    from jaxgraph.cli import print_progress
    settings["callback"] = print_progress
elif callback == "lambda":
    settings["callback"] = lambda *a: None
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out, info = jaxgraph.solve(problem, values, **settings)
    out, info = jaxgraph.solve(problem, values, **settings)  # the second call: the in-process path
def numbers(out, info):
    x = np.asarray(out[problem.variables[0].name])
    return {"cost": float(info.cost), "iterations": int(info.iterations), "converged": bool(info.converged),
            "digest": hashlib.sha256(x.tobytes()).hexdigest(), "dtype": str(x.dtype)}
result = numbers(out, info)
if other_graph is not None:
    problem, values = jaxgraph.io.read_g2o(other_graph, dtype=np.dtype(dtype))
    result["other"] = numbers(*jaxgraph.solve(problem, values, **settings))
folder = executable_cache.directory()
print("RESULT " + json.dumps(dict(result, **{
    "traced": len(traces),
    "entries": sorted(p.name for p in folder.glob("*.pkl")) if folder and folder.exists() else [],
    "warnings": [str(w.message) for w in caught],
})))
"""


def _run(cache, graph, dtype="float64", callback="none", max_size=None, other=None):
    extra = {"JAX_COMPILATION_CACHE_MAX_SIZE": str(max_size)} if max_size is not None else None
    return run_worker(_WORKER, cache, graph, dtype, callback, *([other] if other is not None else []),
                      env_extra=extra)


def _ring(path, n, closure, dim3=False):
    """An n-pose odometry chain with one loop closure (a, b); SE2, or SE3 when dim3."""
    if dim3:
        lines = [f"VERTEX_SE3:QUAT {i} {i * 1.0} {0.01 * i * i} 0.1 0 0 0 1" for i in range(n)]
        info = "1 0 0 0 0 0 1 0 0 0 0 1 0 0 0 1 0 0 1 0 1"
        lines += [f"EDGE_SE3:QUAT {i} {i + 1} 1 0 0.01 0 0 0 1 {info}" for i in range(n - 1)]
        a, b = closure
        lines.append(f"EDGE_SE3:QUAT {a} {b} {b - a} 0 0 0 0 0 1 {info}")
    else:
        lines = [f"VERTEX_SE2 {i} {i * 1.0} {0.01 * i * i} 0.02" for i in range(n)]
        lines += [f"EDGE_SE2 {i} {i + 1} 1 0 0.01 1 0 0 1 0 1" for i in range(n - 1)]
        a, b = closure
        lines.append(f"EDGE_SE2 {a} {b} {b - a} 0 0 1 0 0 1 0 1")
    path.write_text("\n".join(lines) + "\n")
    return path


# The dense LAPACK path is slow here: tests/runtime/test_custom_cache.py covers it in the fast
# suite (a new process loads the dense LAPACK program of a different graph of the size class,
# trace count 0, bit-identical to the program compiled in the first process).
@pytest.mark.parametrize("n, dim3", [(150, False), pytest.param(12, True, marks=pytest.mark.slow)],
                         ids=["host-cholmod-se2", "dense-lapack-se3"])
def test_a_new_process_loads_the_solve_without_tracing_and_gets_the_same_answer(tmp_path, n, dim3):
    """150 SE2 poses run CHOLMOD (a jaxgraph custom call); 12 SE3 poses the dense path (jaxlib's
    LAPACK kernels, which a loaded program needs set up): both found again by a new process
    on a *different* graph of the same size class, with results bit-identical to no cache (the
    first process solves that graph too, with the program it compiled itself)."""
    cache = tmp_path / "cache"
    other = _ring(tmp_path / "b.g2o", n, (5, n - 3), dim3)
    first = _run(cache, _ring(tmp_path / "a.g2o", n, (0, n - 10), dim3), other=other)
    assert first["traced"] == 1 and len(first["entries"]) == 1  # one program for both graphs
    loaded = _run(cache, other)
    assert loaded["traced"] == 0, "the new process traced the solve instead of loading it"
    assert loaded["entries"] == first["entries"]
    assert not [w for w in loaded["warnings"] if "cached executable" in w]  # the entry loaded cleanly
    for key in ("cost", "iterations", "converged", "digest"):
        assert loaded[key] == first["other"][key], key
    assert loaded["converged"]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A cache holding the solve of a 20-pose ring, the graph and that first run's result,
    shared by the tests that start from one stored entry (each copies the folder)."""
    root = tmp_path_factory.mktemp("seeded")
    graph = _ring(root / "a.g2o", 20, (0, 15))
    first = _run(root / "cache", graph)
    assert first["traced"] == 1 and len(first["entries"]) == 1
    return root / "cache", graph, first


def _copy(seeded, tmp_path):
    cache, graph, first = seeded
    shutil.copytree(cache, tmp_path / "cache")
    return tmp_path / "cache", graph, first


@pytest.mark.slow  # six processes; the fast tests cover its parts in-process (keys, encoder) and in test_cli.py
def test_programs_differ_by_dtype_and_a_callback_of_user_code_is_not_stored(seeded, tmp_path):
    cache, graph, f64 = _copy(seeded, tmp_path)
    f32 = _run(cache, graph, dtype="float32")
    assert f32["dtype"] == "float32" and f32["traced"] == 1  # not the float64 program
    assert len(f32["entries"]) == 2
    # the CLI's module-level progress printer is found again by import: stored, then loaded
    assert len(_run(cache, graph, callback="module")["entries"]) == 3
    again = _run(cache, graph, callback="module")
    assert again["traced"] == 0 and again["cost"] == f64["cost"]
    # a lambda exists only in its process: solved through jit, nothing stored
    lam = _run(cache, graph, callback="lambda")
    assert lam["traced"] == 1 and len(lam["entries"]) == 3 and lam["cost"] == f64["cost"]


def test_an_unreadable_entry_is_reported_and_replaced(seeded, tmp_path):
    cache, graph, first = _copy(seeded, tmp_path)
    (entry,) = (cache / xc.FOLDER).glob("*.pkl")
    entry.write_bytes(b"not a pickle")
    second = _run(cache, graph)
    assert second["traced"] == 1 and second["cost"] == first["cost"]
    assert any("unreadable cached executable" in w for w in second["warnings"])
    assert _run(cache, graph)["traced"] == 0  # the replacement loads


def test_encode_writes_static_data_exactly_and_refuses_user_code():
    config = SolverConfig()
    assert xc.encode(config) == xc.encode(SolverConfig())
    different = [config.replace(max_iterations=101), config.replace(method="gn"),
                 config.replace(linear_solver="dense"), config.replace(accumulation="values"),
                 config.replace(tolerance=1e-6)]
    codes = {xc.encode(c) for c in different} | {xc.encode(config)}
    assert len(codes) == len(different) + 1
    assert xc.encode(0.1) != xc.encode(0.1 + 2 ** -56) and xc.encode(1) != xc.encode(True) != xc.encode(1.0)
    assert xc.encode(kind_of("SE3")) != xc.encode(kind_of("SO3"))
    assert xc.encode(np.dtype("float32")) != xc.encode(np.dtype("float64"))
    with pytest.raises(xc.Uncacheable):
        xc.encode(config.replace(callback=lambda *a: None))
    with pytest.raises(xc.Uncacheable):
        xc.encode(np.sum)  # a function outside jaxgraph: its code is not fingerprinted
    with pytest.raises(xc.Uncacheable):
        xc.encode(object())


def test_the_sized_problem_structure_is_keyed_by_everything_its_equality_compares(tmp_path):
    """Two graphs of one size class give one key (they share the program); a graph in another
    size class, or the same graph in float32, another."""
    from jax._src import config as jax_config

    from jaxgraph.runtime.compile_cache import COMPILER_OPTIONS
    from jaxgraph.solver import api

    def key(path, dtype=jnp.float64):
        p, v = jaxgraph.io.read_g2o(path, dtype=dtype)
        args = api._sized(api._arguments(p, v, None, {}))
        import jax

        leaves, treedef = jax.tree_util.tree_flatten(args)
        avals = [(x.shape, x.dtype, getattr(x, "weak_type", False)) for x in leaves]
        return xc.disk_key("solve", treedef, avals, jax_config.trace_context(), COMPILER_OPTIONS)

    a = key(_ring(tmp_path / "a.g2o", 150, (0, 140)))
    assert a == key(_ring(tmp_path / "b.g2o", 150, (3, 120)))
    assert a != key(_ring(tmp_path / "c.g2o", 300, (0, 140)))
    assert a != key(tmp_path / "a.g2o", jnp.float32)


def test_the_folder_is_bounded_by_evicting_the_least_recently_used_entries(tmp_path):
    folder = tmp_path / xc.FOLDER
    folder.mkdir()
    paths = []
    for i in range(4):  # 100 bytes each, used at times 1000 < 2000 < 3000 < 4000
        path = folder / f"{i}.pkl"
        path.write_bytes(bytes(100))
        os.utime(path, (1000.0 * (i + 1), 1000.0 * (i + 1)))
        paths.append(path)
    os.utime(paths[0], (5000.0, 5000.0))  # entry 0 used last
    assert xc._make_room(folder, 150, -1) and all(p.exists() for p in paths)  # no bound
    assert not xc._make_room(folder, 351, 350)  # larger than the bound alone: not stored
    assert all(p.exists() for p in paths)  # and nothing evicted for it
    # 400 bytes + 150 incoming under 350: the two least recently used (1, 2) go
    assert xc._make_room(folder, 150, 350)
    assert sorted(p.name for p in folder.glob("*.pkl")) == ["0.pkl", "3.pkl"]
    assert xc._make_room(folder, 150, 350)  # fits now: nothing more goes
    assert sorted(p.name for p in folder.glob("*.pkl")) == ["0.pkl", "3.pkl"]


def test_a_hit_marks_the_entry_used_and_an_entry_over_the_bound_is_not_stored(seeded, tmp_path):
    cache, graph, first = _copy(seeded, tmp_path)
    (entry,) = (cache / xc.FOLDER).glob("*.pkl")
    os.utime(entry, (1e9, 1e9))  # 2001
    again = _run(cache, graph)
    assert again["traced"] == 0 and entry.stat().st_mtime > 1.5e9  # loaded, and touched
    size = entry.stat().st_size
    tight = _run(tmp_path / "tight", graph, max_size=size // 2)
    assert tight["entries"] == [] and tight["traced"] == 1  # too large for the bound: solved, not stored
    assert any("not cached: it exceeds the cache bound" in w for w in tight["warnings"])
    assert tight["cost"] == first["cost"] and tight["converged"]


def test_the_bound_defaults_to_one_gib_or_jax_s_environment_variable(monkeypatch):
    from jaxgraph.runtime.compile_cache import (
        default_max_size,
        enable_compilation_cache,
    )

    monkeypatch.delenv("JAX_COMPILATION_CACHE_MAX_SIZE", raising=False)
    assert default_max_size() == 2 ** 30  # unset: here, in this process
    # set: JAX parses (and checks) it when imported, so each value needs its own process
    code = "from jaxgraph.runtime.compile_cache import default_max_size; print(default_max_size())"
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_MAX_SIZE"}
    env["PYTHONPATH"] = str(ROOT)
    for value, expected in (("12345", 12345), ("-1", -1)):
        env["JAX_COMPILATION_CACHE_MAX_SIZE"] = value
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert int(done.stdout.split()[-1]) == expected, value
    with pytest.raises(ValueError, match="max_size_bytes"):  # checked before any setting changes
        enable_compilation_cache("/nonexistent-never-created", max_size_bytes=-2)
