"""Solver tests: GTSAM's published costs, dtype, jit caching, vmap, custom factors, validation.

Reference numbers: GTSAM 4.3.0 Levenberg-Marquardt / Gauss-Newton with a prior on pose 0
(sigma 1e-6), as published in ../shared/data/README.md ("Reference results from GTSAM").
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgraph
from jaxgraph import factors, noise, robust
from jaxgraph.graph import Problem, VariableGroup
from jaxgraph.solver.backward import solve_compiled

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "posegraph"

GTSAM = {  # file: (initial cost, LM final cost, GN final cost)
    "tinyGrid3D": (143.317874, 9.31390953, 9.31390953),
    "intel": (276.997898, 22.5021165, 22.5021165),
}


def _read(name, dtype=jnp.float64):
    path = DATA / f"{name}.g2o"
    if not path.exists():
        pytest.skip("shared data not available")
    return jaxgraph.io.read_g2o(path, dtype=dtype)


@pytest.fixture(scope="module")
def tiny():
    return _read("tinyGrid3D")


def test_tinygrid_lm_matches_gtsam(tiny):
    problem, values = tiny
    out, info = jaxgraph.solve(problem, values)
    init, lm, _ = GTSAM["tinyGrid3D"]
    assert abs(float(info.initial_cost) - init) <= 1e-8 * init
    assert abs(float(info.cost) - lm) <= 1e-7 * lm
    assert bool(info.converged) and int(info.iterations) == 5  # GTSAM: 5 iterations
    # Info is consistent with an independent evaluation of the cost at the returned values.
    np.testing.assert_allclose(float(problem.cost(out)), float(info.cost), rtol=1e-12)
    hist = np.asarray(info.history_cost)[np.asarray(info.history_mask)]
    assert hist.shape == (5,) and np.all(np.diff(hist) <= 0)
    assert out["poses"].dtype == jnp.float64


def test_tinygrid_gn_and_no_retrace(tiny):
    problem, values = tiny
    out, info = jaxgraph.solve(problem, values, method="gn")
    assert abs(float(info.cost) - GTSAM["tinyGrid3D"][2]) <= 1e-7 * GTSAM["tinyGrid3D"][2]
    n = solve_compiled._cache_size()
    # A freshly read problem (new objects, same structure) and new initial values: no retrace.
    problem2, values2 = _read("tinyGrid3D")
    values2 = {"poses": values2["poses"].at[3, 4].add(0.01)}
    _, info2 = jaxgraph.solve(problem2, values2, method="gn", tolerance=1e-6)
    assert solve_compiled._cache_size() == n
    assert abs(float(info2.cost) - GTSAM["tinyGrid3D"][2]) <= 1e-6 * GTSAM["tinyGrid3D"][2]


def test_config_objects_equal_flat_settings_and_split_static(tiny):
    problem, values = tiny
    cfg = jaxgraph.SolverConfig(method="gn", termination=jaxgraph.TerminationConfig(tolerance=1e-6))
    _, flat = jaxgraph.solve(problem, values, method="gn", tolerance=1e-6)
    n = solve_compiled._cache_size()
    out, info = jaxgraph.solve(problem, values, cfg)
    assert solve_compiled._cache_size() == n  # same program as the flat call
    assert float(info.cost) == float(flat.cost) and int(info.iterations) == int(flat.iterations)
    # A traced setting does not recompile; a static one (max_iterations) does.
    jaxgraph.solve(problem, values, cfg.replace(tolerance=1e-7, absolute_tolerance=1e-9))
    assert solve_compiled._cache_size() == n
    _, short = jaxgraph.solve(problem, values, cfg, max_iterations=2)
    assert solve_compiled._cache_size() == n + 1
    assert int(short.iterations) == 2 and short.history_cost.shape == (2,) and not bool(short.converged)
    with pytest.raises(TypeError, match="unknown solver setting 'tol'"):
        jaxgraph.solve(problem, values, tol=1e-3)
    with pytest.raises(ValueError, match="damping_factor must be > 1"):
        jaxgraph.DampingConfig(damping_factor=0.5)
    with pytest.raises(ValueError, match=r"backward_iterations must be in \[1, max_iterations\) = \[1, 5\)"):
        jaxgraph.SolverConfig().replace(backward="truncated", backward_iterations=5, max_iterations=5)


def test_config_astype_is_per_config_and_dtype():
    """``astype`` is remembered per (config, dtype): a changed setting or dtype is never
    served a remembered copy of another, and array-valued settings still work."""
    cfg = jaxgraph.SolverConfig().replace(tolerance=1e-6)
    a64, a32 = cfg.astype(jnp.float64), cfg.astype(jnp.float32)
    assert a64.termination.tolerance.dtype == np.float64 and a32.termination.tolerance.dtype == np.float32
    assert cfg.astype(jnp.float64) is a64
    b = cfg.replace(tolerance=1e-7).astype(jnp.float64)
    assert float(b.termination.tolerance) == 1e-7 and float(a64.termination.tolerance) == 1e-6
    assert float(a64.termination.absolute_tolerance) == 1e-6  # resolved from tolerance
    arr = cfg.replace(initial_damping=jnp.asarray(1e-3)).astype(jnp.float32)  # unhashable: not remembered
    assert arr.damping.initial_damping.dtype == jnp.float32


def test_float32_solve_preserves_dtype():
    problem, values = _read("tinyGrid3D", jnp.float32)
    assert values["poses"].dtype == jnp.float32
    out, info = jaxgraph.solve(problem, values)
    assert out["poses"].dtype == jnp.float32 and info.cost.dtype == jnp.float32
    assert abs(float(info.cost) - GTSAM["tinyGrid3D"][1]) <= 1e-3 * GTSAM["tinyGrid3D"][1]
    assert np.all(np.isfinite(np.asarray(out["poses"])))


def test_float32_manhattan_converges_like_float64():
    """manhattan (3,500 poses, a 1e-6-sigma prior): float32 normal equations are indefinite by
    a few ulps, so the factorisation has to clamp them; accumulated in float64 (the default
    with x64 on) the float32 solve takes the float64 solve's steps. Reference: GTSAM's LM
    cost 1774.52054 (benchmarks/results/posegraph_cpu.json) in 5 trials."""
    problem, v64 = _read("manhattan")
    v32 = {k: jnp.asarray(x, jnp.float32) for k, x in v64.items()}
    _, info = jaxgraph.solve(problem, v32, max_iterations=20)
    assert info.cost.dtype == jnp.float32
    assert bool(info.converged) and int(info.linear_clamped) == 0
    assert int(info.iterations) <= 6
    assert abs(float(info.cost) - 1774.52054) <= 1e-5 * 1774.52054
    # the same solve with float32 normal equations: clamped pivots, far from the minimum
    # after as many trials. Where rounding lands differs between CPUs (measured: 3 of 6 trials
    # clamped, cost 4350, on one machine; 6 of 6, cost 2613, on an AVX-512 one; 1839-1851
    # after 100 trials on both), so the bound is the one both clear: 20 % above the minimum,
    # which the widened solve above reaches to 1e-5.
    _, narrow = jaxgraph.solve(problem, v32, max_iterations=6, accumulation="values")
    assert int(narrow.linear_clamped) >= 1
    assert not bool(narrow.converged) and float(narrow.cost) > 1.2 * 1774.52054


def test_intel_lm_matches_gtsam():
    problem, values = _read("intel")
    out, info = jaxgraph.solve(problem, values, linear_solver="pcg")
    init, lm, _ = GTSAM["intel"]
    assert abs(float(info.initial_cost) - init) <= 1e-8 * init
    assert float(info.cost) <= lm * (1 + 1e-3)
    # PCG solves inexactly (relative residual 1e-10), so the stopping point differs slightly.
    assert abs(float(info.cost) - lm) <= 1e-5 * lm
    assert bool(info.converged)


def _landmark_problem(rng, n_poses=4, n_lm=3):
    """SE2 poses observing R2 landmarks (custom factor, autodiff) + SE2 odometry."""
    se2 = jaxgraph.graph.kind_of("SE2")
    poses = np.stack([np.arange(n_poses) * 1.0, 0.2 * np.arange(n_poses), 0.3 * np.arange(n_poses)], 1)
    lms = rng.normal(size=(n_lm, 2)) * 3
    T = np.asarray(se2.to_matrix(jnp.asarray(poses)))
    odo = np.asarray(
        se2.from_matrix(jnp.asarray(np.linalg.inv(T[:-1]) @ T[1:]))
    )

    def observe(ps, z):
        pose, lm = ps
        c, s = jnp.cos(pose[2]), jnp.sin(pose[2])
        d = lm - pose[:2]
        return jnp.stack([c * d[0] + s * d[1], -s * d[0] + c * d[1]]) - z

    pi, li = np.meshgrid(np.arange(n_poses), np.arange(n_lm), indexing="ij")
    pi, li = pi.ravel(), li.ravel()
    z = np.stack([np.asarray(observe((jnp.asarray(poses[a]), jnp.asarray(lms[b])), jnp.zeros(2))) for a, b in zip(pi, li)])
    groups = [
        factors.between("poses", np.arange(n_poses - 1), np.arange(1, n_poses), jnp.asarray(odo), noise.diagonal(jnp.asarray([0.1, 0.1, 0.05])), name="odometry"),
        factors.custom(observe, [("poses", pi), ("landmarks", li)], jnp.asarray(z), noise.isotropic(0.2), 2, robust=robust.Huber(1.0), name="observations"),
    ]
    problem = Problem([VariableGroup("poses", "SE2", n_poses), VariableGroup("landmarks", "R2", n_lm)], groups)
    truth = {"poses": jnp.asarray(poses), "landmarks": jnp.asarray(lms)}
    return problem, truth


def test_custom_factors_mixed_kinds_recover_truth():
    rng = np.random.default_rng(0)
    problem, truth = _landmark_problem(rng)
    # Default anchor: pose 0 held fixed (no prior, no FIX).
    assert problem.variables[0].fixed == (0,)
    start = {
        "poses": truth["poses"].at[1:].add(jnp.asarray(rng.normal(size=(3, 3)) * 0.1)),
        "landmarks": truth["landmarks"] + jnp.asarray(rng.normal(size=(3, 2)) * 0.3),
    }
    out, info = jaxgraph.solve(problem, start)
    assert bool(info.converged) and float(info.cost) < 1e-12
    np.testing.assert_allclose(out["poses"], truth["poses"], atol=1e-6)
    np.testing.assert_allclose(out["landmarks"], truth["landmarks"], atol=1e-6)
    np.testing.assert_array_equal(out["poses"][0], start["poses"][0])
    # Inspection helpers agree with each other and with the closed-form Huber cost.
    r = problem.residuals(start, "observations")
    e = problem.whitened_errors(start, "observations")
    c = problem.factor_costs(start, "observations")
    s = np.linalg.norm(np.asarray(r) / 0.2, axis=1)
    huber = np.where(s <= 1, 0.5 * s**2, s - 0.5)
    np.testing.assert_allclose(c, huber, rtol=1e-12)
    w = np.where(s <= 1, 1.0, 1 / s)
    np.testing.assert_allclose(e, np.asarray(r) / 0.2 * np.sqrt(w)[:, None], rtol=1e-12)
    Jp, Jl = problem.jacobians(start, "observations", index=4)
    assert Jp.shape == (2, 3) and Jl.shape == (2, 2)
    total = sum(float(jnp.sum(problem.factor_costs(start, g.name))) for g in problem.factors)
    np.testing.assert_allclose(float(problem.cost(start)), total, rtol=1e-12)


def test_vmap_over_problems_matches_unbatched(tiny):
    problem, values = tiny
    rng = np.random.default_rng(3)
    starts = jnp.stack([values["poses"], values["poses"].at[2:, 4:].add(jnp.asarray(rng.normal(size=(7, 3)) * 0.05))])
    meas = problem.group("edges").measurement
    meas_b = jnp.stack([meas, meas.at[:, 4:].add(0.01)])
    problems = jax.vmap(lambda m: problem.replace_group("edges", problem.group("edges").replace(measurement=m)))(meas_b)
    out_b, info_b = jax.vmap(lambda p, v: jaxgraph.solve(p, {"poses": v}))(problems, starts)
    for k in range(2):
        pk = problem.replace_group("edges", problem.group("edges").replace(measurement=meas_b[k]))
        out_k, info_k = jaxgraph.solve(pk, {"poses": starts[k]})
        np.testing.assert_allclose(float(info_b.cost[k]), float(info_k.cost), rtol=1e-9)
        assert int(info_b.iterations[k]) == int(info_k.iterations)
        np.testing.assert_allclose(out_b["poses"][k], out_k["poses"], atol=1e-8)


def test_callback_sees_every_iteration(tiny):
    problem, values = tiny
    seen = []
    _, info = jaxgraph.solve(problem, values, callback=lambda it, cost, lam, step, acc: seen.append((int(it), float(cost))))
    jax.effects_barrier()
    assert [s[0] for s in seen] == list(range(int(info.iterations)))
    np.testing.assert_allclose(seen[-1][1], float(info.cost))


class _PlainKind(jaxgraph.graph.Kind):
    """A user kind with a retraction and no matrix form."""

    def retract(self, p, d):
        return p + d


def test_validation_errors_name_group_factor_and_variable():
    se2 = [VariableGroup("poses", "SE2", 3)]
    z = jnp.zeros((2, 3))
    nz = noise.isotropic(1.0)
    with pytest.raises(ValueError, match="factor group 'odo' refers to unknown variable group 'pose'"):
        Problem(se2, [factors.between("pose", [0, 1], [1, 2], z, nz, name="odo")])
    with pytest.raises(ValueError, match=r"factor group 'odo', factor 1: index 3 out of range for variable group 'poses' \(3 variables\)"):
        Problem(se2, [factors.between("poses", [0, 1], [1, 3], z, nz, name="odo")])
    with pytest.raises(ValueError, match=r"factor group 'odo' \(between on SE2 variable group 'poses'\): measurement must have shape \(2, 3\).*got \(3,\)"):
        Problem(se2, [factors.between("poses", [0, 1], [1, 2], jnp.zeros(3), nz, name="odo")])
    with pytest.raises(ValueError, match=r"factor group 'odo', factor 0 connects variable 'poses'\[1\] to itself"):
        Problem(se2, [factors.between("poses", [1, 1], [1, 2], z, nz, name="odo")])
    with pytest.raises(ValueError, match=r"factor group 'odo': Diagonal sigmas must have shape \(3,\) or \(2, 3\)"):
        Problem(se2, [factors.between("poses", [0, 1], [1, 2], z, noise.diagonal(jnp.ones(6)), name="odo")])
    # priors work on every kind with a matrix form (vectors included, tests/graph/test_typed_core.py); a
    # user kind without one is refused by name
    with pytest.raises(TypeError, match=r"factor group 'p' \(prior\) needs a kind with a matrix form.*'pts' is plain3"):
        Problem([VariableGroup("pts", _PlainKind("plain3", 3, 3), 2)], [factors.prior("pts", [0], jnp.zeros((1, 3)), nz, name="p")])
    with pytest.raises(ValueError, match=r"factor group 'odo', factor 1: non-finite"):
        Problem(se2, [factors.between("poses", [0, 1], [1, 2], z.at[1, 0].set(jnp.nan), nz, name="odo")])
    with pytest.raises(ValueError, match=r"'c' \(custom\): residual function returns shape \(2,\), expected \(3,\)"):
        Problem(se2, [factors.custom(lambda ps, d: ps[0][:2], [("poses", [0])], jnp.zeros((1, 1)), None, 3, name="c")])
    p = Problem(se2, [factors.between("poses", [0, 1], [1, 2], z, nz, name="odo")])
    with pytest.raises(ValueError, match=r"values\['poses'\] must have shape \(3, 3\) \(3 SE2 variables\), got \(3, 4, 4\)"):
        jaxgraph.solve(p, {"poses": jnp.zeros((3, 4, 4))})
    with pytest.raises(ValueError, match="missing \\['poses'\\]"):
        jaxgraph.solve(p, {"x": jnp.zeros((3, 3))})
    with pytest.raises(ValueError, match="method must be one of"):
        jaxgraph.solve(p, {"poses": jnp.zeros((3, 3))}, method="newton")
