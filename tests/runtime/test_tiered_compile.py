"""Small programs (``jaxgraph.runtime.compile_cache``, issue 22): compiled with
``SMALL_OPTIONS``, and in two tiers: the first call of a small problem's program runs a copy
compiled without LLVM optimisation while the optimised program compiles in the background;
every later call runs the optimised one. Repeated calls on the same objects skip the key.

Independent truths: the same solve through a plain ``jax.jit`` (no tiers), each tier's own
program called directly (which one ran), the options each compile received, and a new
process's trace count (0: the optimised program was stored by the first process, which
exited while it compiled).
"""

import jax
import numpy as np
import pytest

import jaxgraph
from jaxgraph import linear
from jaxgraph.runtime import compile_cache
from jaxgraph.runtime import executable_cache as xc
from jaxgraph.runtime.compile_cache import _Upgrade, entry_point
from jaxgraph.solver import api
from jaxgraph.solver.backward import _dispatch, _small

from ._workers import run_worker, trace_counter


def _ring(path, n):
    """An n-pose SE2 odometry ring with one loop closure, as a g2o file."""
    lines = [f"VERTEX_SE2 {i} {i * 1.0} {0.02 * i * i} 0.05" for i in range(n)]
    lines += [f"EDGE_SE2 {i} {i + 1} 1 0 0.01 1 0 0 1 0 1" for i in range(n - 1)]
    lines.append(f"EDGE_SE2 0 {n - 1} {n - 1} 0 0 1 0 0 1 0 1")
    path.write_text("\n".join(lines) + "\n")
    return path


def _args(path):
    problem, values = jaxgraph.io.read_g2o(path, dtype=np.float64)
    return api._sized(api._arguments(problem, values, None, {}))


def _bits(out):
    values, info = out
    return [np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(values)] + [np.asarray(info.cost).tobytes()]


@pytest.fixture(autouse=True)
def _tiers_on_no_disk_cache(monkeypatch):
    """Tiers on (the suite turns them off, tests/conftest.py), and no executable cache in
    process (a stored program would skip the tiers)."""
    monkeypatch.setattr(xc, "directory", lambda: None)
    before = compile_cache._TIERED[0]
    compile_cache.set_tiered_compilation(True)
    yield
    compile_cache.set_tiered_compilation(before)


def test_first_call_runs_the_quick_program_and_later_calls_the_optimised_one(tmp_path):
    args = _args(_ring(tmp_path / "ring.g2o", 8))
    reference = jax.jit(_dispatch)(*args)  # no tiers, no compiler options
    solve = entry_point(_dispatch, executable_cache=True, small=_small)
    first = solve(*args)
    (upgrade,) = solve._executables.values()
    assert isinstance(upgrade, _Upgrade) and upgrade.quick is not None
    second = solve(*args)  # waits for the optimised program
    assert upgrade.full is not None and upgrade.full is not upgrade.quick
    assert list(solve._executables.values()) == [upgrade.full]  # later calls skip the wrapper
    assert solve.compile(*args) is upgrade.full
    assert _bits(first) == _bits(upgrade.quick(*args))  # the first call ran the quick program
    assert _bits(second) == _bits(upgrade.full(*args))
    for out in (first, second):
        assert bool(out[1].converged)
        np.testing.assert_allclose(float(out[1].cost), float(reference[1].cost), rtol=1e-10)
        for a, b in zip(jax.tree_util.tree_leaves(out[0]), jax.tree_util.tree_leaves(reference[0])):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-9)


def test_off_large_problems_and_compile_never_use_the_quick_tier(tmp_path):
    small = _args(_ring(tmp_path / "small.g2o", 8))
    n = linear.DENSE_MAX_UNKNOWNS // 3 + 1  # SE2: 3 unknowns a pose, one pose over the bound
    assert _small(*small) and not _small(*_args(_ring(tmp_path / "large.g2o", n)))
    compiled = entry_point(_dispatch, executable_cache=True, small=_small)
    program = compiled.compile(*small)  # ahead of time: the optimised program, no tiers
    assert not isinstance(program, _Upgrade) and list(compiled._executables.values()) == [program]
    compile_cache.set_tiered_compilation(False)
    try:
        plain = entry_point(_dispatch, executable_cache=True, small=_small)
        out = plain(*small)
        (only,) = plain._executables.values()  # the optimised small program, no quick copy
        assert not isinstance(only, _Upgrade)
    finally:
        compile_cache.set_tiered_compilation(True)
    assert _bits(out) == _bits(program(*small))


def test_few_unknowns_with_a_heavy_residual_are_not_a_small_program(tmp_path):
    """Few unknowns alone do not make a millisecond solve: many residual rows (an image's
    pixels against one camera pose, splat.tracking) or a large measurement (the model they
    are rendered from) do not run single-threaded or unoptimised first."""
    import jax.numpy as jnp

    from jaxgraph.graph import Problem, VariableGroup
    from jaxgraph.solver.backward import SMALL_MAX_MEASUREMENT, SMALL_MAX_RESIDUALS

    def one_pose(rows, width):
        """One SE2 pose, ``rows`` custom factors of 3 residuals, each with ``width`` data."""
        data = jnp.zeros((rows, width))
        group = jaxgraph.factors.custom(lambda params, d: params[0][:3] * 0 + jnp.sum(d), [("pose", np.zeros(rows, int))],
                                        data, None, 3)
        problem = Problem([VariableGroup("pose", jaxgraph.lie.SE2, 1)], [group])
        return api._sized(api._arguments(problem, {"pose": jaxgraph.lie.SE2.identity().parameters()[None]}, None, {}))

    light = one_pose(8, 1)
    many_rows = one_pose(SMALL_MAX_RESIDUALS // 3 + 1, 1)
    wide = one_pose(2, SMALL_MAX_MEASUREMENT // 2 + 1)
    assert _small(*light) and not _small(*many_rows) and not _small(*wide)
    solve = entry_point(_dispatch, executable_cache=True, small=_small)
    solve(*many_rows)
    (only,) = solve._executables.values()
    assert only is None  # left to jax.jit: compiled optimised, no quick copy, no small options


# One process: with the cache in argv[1], solve the ring in argv[2] once and exit at once (the
# optimised program is still compiling); print the cost, the trace count and the entries.
_WORKER = r"""
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import jaxgraph
""" + trace_counter('_dispatch') + r"""
jaxgraph.enable_compilation_cache(sys.argv[1])
out, info = jaxgraph.solve(*jaxgraph.io.read_g2o(sys.argv[2], dtype=np.float64))
folder = jaxgraph.runtime.executable_cache.directory()
print("RESULT " + json.dumps({"cost": float(info.cost), "converged": bool(info.converged), "traced": len(traces),
      "tiers": jaxgraph.runtime.compile_cache._TIERED[0],
      "entries": sorted(p.name for p in folder.glob("*.pkl")) if folder.exists() else []}))
"""


def test_a_process_that_exits_during_the_background_compile_stores_the_optimised_program(tmp_path):
    cache, ring = tmp_path / "cache", _ring(tmp_path / "ring.g2o", 9)
    on = {"JAXGRAPH_TIERED_COMPILATION": "1"}  # the default, which the suite's environment turns off
    first = run_worker(_WORKER, cache, ring, env_extra=on)  # exit code 0 is asserted by run_worker
    assert first["tiers"] and first["traced"] == 1 and first["converged"]
    entries = sorted(p.name for p in (cache / "jaxgraph-executables").glob("*.pkl"))
    assert len(entries) == 1, "the exiting process did not wait for the optimised program"
    second = run_worker(_WORKER, cache, ring, env_extra=on)
    assert second["traced"] == 0 and second["entries"] == entries
    np.testing.assert_allclose(second["cost"], first["cost"], rtol=1e-10)


def test_small_programs_compile_with_the_small_options_and_large_ones_with_the_default(tmp_path, monkeypatch):
    used = []
    real = compile_cache._compile
    monkeypatch.setattr(compile_cache, "_compile", lambda lowered, options: used.append(options) or real(lowered, options))
    compile_cache.set_tiered_compilation(False)
    try:
        solve = entry_point(_dispatch, executable_cache=True, small=_small)
        small = _args(_ring(tmp_path / "small.g2o", 8))
        out = solve(*small)
        assert used == [compile_cache.SMALL_OPTIONS]
        large = _args(_ring(tmp_path / "large.g2o", linear.DENSE_MAX_UNKNOWNS // 3 + 1))
        solve(*large)
        assert used == [compile_cache.SMALL_OPTIONS]  # jit's own program, with COMPILER_OPTIONS
    finally:
        compile_cache.set_tiered_compilation(True)
    reference = jax.jit(_dispatch)(*small)
    np.testing.assert_allclose(float(out[1].cost), float(reference[1].cost), rtol=1e-10)


def test_an_entry_point_s_own_options_are_used_and_keyed(tmp_path, monkeypatch):
    # GNC's entry point compiles unoptimised (compile_cache.UNOPTIMISED_OPTIONS): the keyed
    # compile must use those options, the disk key must differ from the default options' key,
    # and the result must be the plain jit's.
    used = []
    real = compile_cache._compile
    monkeypatch.setattr(compile_cache, "_compile", lambda lowered, options: used.append(options) or real(lowered, options))
    monkeypatch.setattr(xc, "directory", lambda: tmp_path)
    f = entry_point(lambda x: (jax.numpy.sin(x) * x).sum(), executable_cache=True,
                    compiler_options=compile_cache.UNOPTIMISED_OPTIONS)
    x = jax.numpy.linspace(0.0, 1.0, 7)
    assert float(f(x)) == pytest.approx(float(jax.jit(lambda x: (jax.numpy.sin(x) * x).sum())(x)), rel=1e-6)
    assert used == [compile_cache.UNOPTIMISED_OPTIONS]
    keys = {xc.disk_key("f", jax.tree_util.tree_structure(x), [(x.shape, x.dtype, False)], (), o)
            for o in (compile_cache.COMPILER_OPTIONS, compile_cache.UNOPTIMISED_OPTIONS)}
    assert len(keys) == 2
    with pytest.raises(ValueError, match="small programs have their own options"):
        entry_point(_dispatch, executable_cache=True, small=_small, compiler_options=compile_cache.UNOPTIMISED_OPTIONS)


def test_an_option_this_xla_does_not_know_is_left_out_and_other_errors_are_raised(monkeypatch):
    monkeypatch.setattr(compile_cache, "_UNKNOWN_OPTIONS", set())
    lowered = jax.jit(lambda x: x * 2.0).lower(1.0)
    fake = "xla_cpu_option_that_does_not_exist"
    compiled = compile_cache._compile(lowered, {**compile_cache.COMPILER_OPTIONS, fake: True})
    assert float(compiled(3.0)) == 6.0 and compile_cache._UNKNOWN_OPTIONS == {fake}
    with pytest.raises(Exception, match="xla_backend_optimization_level"):  # a known option, a bad value
        compile_cache._compile(lowered, {"xla_backend_optimization_level": "not a number"})


def test_repeated_calls_on_the_same_objects_skip_the_key_and_new_objects_do_not(tmp_path, monkeypatch):
    solve = entry_point(_dispatch, executable_cache=True, small=_small, by_identity=True)
    keyed = []
    real = solve._program
    monkeypatch.setattr(solve, "_program", lambda args, quick_ok=False: keyed.append(1) or real(args, quick_ok))
    path = _ring(tmp_path / "ring.g2o", 8)
    args = _args(path)
    first, second = solve(*args), solve(*args)  # the first call (quick tier), then the optimised program
    assert len(keyed) == 1
    moved = {k: v + 0.01 for k, v in args[1].items()}  # new values of the same types: same program
    third = solve(args[0], moved, args[2])
    assert len(keyed) == 1
    other = _args(path)  # an equal problem in new objects: keyed again, the same program found
    fourth = solve(*other)
    assert len(keyed) == 2 and len(solve._executables) == 1
    for out in (first, second, third, fourth):
        assert bool(out[1].converged)
    np.testing.assert_allclose(float(third[1].cost), float(second[1].cost), rtol=1e-8)
    assert _bits(fourth) == _bits(second)
