"""Graduated non-convexity: outlier rejection scored on the clean graph.

Truths: the clean graph's own LM optimum (the corrupted graph minus its false loop
closures), and the known outlier labels of the corruption. Real graphs (slow): intel and
sphere2500 with 10 % random false loop closures (``add_random_loop_closures``), GNC's
solution scored on the clean graph must be within 1 % of the clean optimum.
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgraph
from jaxgraph import factors, noise, robust
from jaxgraph.algorithms.gnc import chi2_quantile, gnc
from jaxgraph.io.synthetic import add_random_loop_closures
from jaxgraph.graph import Problem, VariableGroup

from ..runtime._workers import run_worker, trace_counter
from ..shared_data import read_posegraph as _read


def _loop_graph(seed=0, n=60):
    """An SE2 trajectory driving a 10 m square loop three times: odometry plus loop closures
    between passes, small measurement noise (modelled sigmas 0.02 m, 0.005 rad), prior on pose 0."""
    rng = np.random.default_rng(seed)
    s = np.arange(n) * (40.0 / 20)  # 20 poses per lap of 40 m
    side = (s % 40) // 10
    u = s % 10
    x = np.select([side == 0, side == 1, side == 2, side == 3], [u, 10 + 0 * u, 10 - u, 0 * u])
    y = np.select([side == 0, side == 1, side == 2, side == 3], [0 * u, u, 10 + 0 * u, 10 - u])
    th = side * (np.pi / 2)
    th = (th + np.pi) % (2 * np.pi) - np.pi
    P = np.stack([x, y, th], 1)
    i = np.concatenate([np.arange(n - 1), np.arange(n - 20)])
    j = np.concatenate([np.arange(1, n), np.arange(20, n)])

    def rel(a, b):
        c, sn = np.cos(P[a, 2]), np.sin(P[a, 2])
        dx, dy = P[b, 0] - P[a, 0], P[b, 1] - P[a, 1]
        dth = (P[b, 2] - P[a, 2] + np.pi) % (2 * np.pi) - np.pi
        return np.stack([c * dx + sn * dy, -sn * dx + c * dy, dth], 1)

    # Noise at half the modelled sigmas: inlier residuals stay well inside the chi-square
    # threshold, so the inlier decision is unambiguous and can be asserted exactly.
    Z = rel(i, j) + rng.normal(scale=[0.01, 0.01, 0.0025], size=(len(i), 3))
    info = np.broadcast_to(np.diag([2500.0, 2500.0, 40000.0]), (len(i), 3, 3)).copy()
    edges = factors.between("poses", i, j, jnp.asarray(Z), noise.information(jnp.asarray(info)), name="edges")
    prior = factors.prior("poses", [0], jnp.asarray(P[:1]), noise.isotropic(1e-3), name="anchor")
    problem = Problem([VariableGroup("poses", "SE2", n)], [edges, prior])
    # Initial values: odometry composed from pose 0.
    init = np.zeros_like(P)
    init[0] = P[0]
    for k in range(n - 1):
        c, sn = np.cos(init[k, 2]), np.sin(init[k, 2])
        init[k + 1] = [init[k, 0] + c * Z[k, 0] - sn * Z[k, 1], init[k, 1] + sn * Z[k, 0] + c * Z[k, 1], init[k, 2] + Z[k, 2]]
    init[:, 2] = (init[:, 2] + np.pi) % (2 * np.pi) - np.pi
    return problem, {"poses": jnp.asarray(init)}


@pytest.fixture(scope="module")
def corrupted():
    clean, values = _loop_graph()
    bad, outlier = add_random_loop_closures(clean, values, 0.1, seed=1)
    clean_opt = float(jaxgraph.solve(clean, values, tolerance=1e-10)[1].cost)
    return clean, bad, outlier, values, clean_opt


@pytest.mark.parametrize("loss", ["tls", pytest.param("gm", marks=pytest.mark.slow)])
def test_gnc_rejects_false_loop_closures(corrupted, loss):
    clean, bad, outlier, values, clean_opt = corrupted
    assert outlier.sum() == 10
    # Plain least squares is bent by the outliers...
    ls = jaxgraph.solve(bad, values)[0]
    assert float(clean.cost(ls)) > 10 * clean_opt
    # ...GNC is not.
    x, w, info = gnc(bad, values, loss, tolerance=1e-10)
    assert bool(info.converged), info
    inlier = np.asarray(w["edges"]) > 0.5
    assert np.array_equal(inlier, ~outlier)
    assert np.all(np.asarray(w["anchor"]) == 1)
    assert int(info.num_candidates) == 40 + 10 and int(info.num_inliers) == 40
    assert float(clean.cost(x)) <= clean_opt * 1.01
    if loss == "tls":  # binary weights: the solution is the clean graph's optimum
        assert int(info.status) == 1
        np.testing.assert_allclose(float(clean.cost(x)), clean_opt, rtol=1e-6)


@pytest.mark.slow  # compiles a batched GNC (a vmapped while loop around LM): minutes on 2 cores
def test_gnc_vmaps_over_problems(corrupted):
    clean, bad, outlier, values, _ = corrupted
    # Same structure (vmap needs it), other false measurements on the same pairs.
    g = bad.group("edges")
    rng = np.random.default_rng(5)
    meas = np.asarray(g.measurement).copy()
    meas[outlier] = rng.uniform([-10, -10, -np.pi], [10, 10, np.pi], (int(outlier.sum()), 3))
    bad2 = bad.replace_group("edges", g.replace(measurement=jnp.asarray(meas)))
    stacked = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), bad, bad2)
    xs, ws, infos = jax.vmap(lambda p: gnc(p, values, "tls", tolerance=1e-10))(stacked)
    for k, p in enumerate((bad, bad2)):
        # under vmap the measurements are traced, so the host pre-filter does not run there
        x, w, info = gnc(p, values, "tls", tolerance=1e-10, prefilter=None)
        np.testing.assert_allclose(np.asarray(xs["poses"][k]), np.asarray(x["poses"]), atol=1e-8)
        assert np.array_equal(np.asarray(ws["edges"][k]) > 0.5, np.asarray(w["edges"]) > 0.5)
        assert int(infos.iterations[k]) == int(info.iterations)


# One process: GNC on the g2o file argv[2] with the cache folder argv[1]; print whether the
# compiled GNC was traced here, its status, a digest of the values and the weights.
_GNC_WORKER = r"""
import hashlib, json, sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import jaxgraph
""" + trace_counter("_gnc") + r"""
jaxgraph.enable_compilation_cache(sys.argv[1])
problem, values = jaxgraph.io.read_g2o(sys.argv[2])
x, w, info = jaxgraph.gnc(problem, values, "tls")
print("RESULT " + json.dumps({"traced": len(traces), "status": int(info.status),
      "digest": hashlib.sha256(np.asarray(x["poses"]).tobytes()).hexdigest(),
      "inliers": (np.asarray(w["edges"]) > 0.5).tolist()}))
"""


def test_a_new_process_loads_the_compiled_gnc_without_tracing(corrupted, tmp_path):
    # The GNC program is keyed before tracing (its settings and masks as static data) and kept
    # in the executable cache: a second process must not trace it and must get the same
    # values bit for bit; the decisions must be the corruption's own labels.
    _, bad, outlier, values, _ = corrupted
    path = tmp_path / "corrupted.g2o"
    jaxgraph.io.write_g2o(path, bad, values)
    first = run_worker(_GNC_WORKER, tmp_path / "cache", path)
    again = run_worker(_GNC_WORKER, tmp_path / "cache", path)
    assert first["traced"] >= 1
    assert again["traced"] == 0, "the new process traced GNC instead of loading it"
    assert again["digest"] == first["digest"] and again["inliers"] == first["inliers"]
    assert first["status"] == 1
    assert np.array_equal(np.asarray(first["inliers"][: outlier.size]), ~outlier)


def test_flip_scores_are_the_tls_decision_statistic(corrupted):
    # flip_scores(k) / 2 predicts how much the optimal weighted cost rises when factor k
    # alone is switched on (from off) or falls when it is switched off (from on): check it
    # against actual re-solves, for true loop closures (on) and false ones (off).
    from jaxgraph.algorithms.gnc_weights import flip_scores, weighted_problem

    clean, bad, outlier, values, _ = corrupted
    w = {"edges": jnp.asarray(np.where(outlier, 0.0, 1.0))}
    x, info = jaxgraph.solve(weighted_problem(bad, w), values, tolerance=1e-12)
    scores = np.asarray(jax.jit(flip_scores, static_argnums=3)(bad, x, w, ("edges",))["edges"])
    r2 = 2 * np.asarray(bad.factor_costs(x, "edges"))
    loops = np.nonzero(~outlier & (np.abs(np.diff(bad.group("edges").indices.array, axis=1))[:, 0] != 1))[0]
    for k in [loops[0], loops[7], *np.nonzero(outlier)[0][:2]]:
        flipped = np.asarray(w["edges"]).copy()
        flipped[k] = 1.0 - flipped[k]
        cost = jaxgraph.solve(weighted_problem(bad, {"edges": jnp.asarray(flipped)}), x, tolerance=1e-12)[1].cost
        change = 2 * abs(float(cost) - float(info.cost))
        if outlier[k]:  # switched on: the map bends towards it, so the rise is below r^2
            assert scores[k] < r2[k]
            np.testing.assert_allclose(scores[k], change, rtol=0.2)  # nonlinear: a false closure bends far
        else:  # switched off: the fall exceeds r^2 (the factor had pulled the map to itself)
            assert scores[k] > r2[k]
            np.testing.assert_allclose(scores[k], change, rtol=1e-3)


def test_gnc_everything_uncertain(corrupted):
    # Odometry and the prior become candidates too: a harder problem, so fewer outliers (3 %).
    clean, _, _, values, clean_opt = corrupted
    bad, outlier = add_random_loop_closures(clean, values, 0.03, seed=3)
    x, w, info = gnc(bad, values, "tls", known_inliers="none", tolerance=1e-10)
    assert int(info.num_candidates) == bad.group("edges").count + 1
    assert np.array_equal(np.asarray(w["edges"]) > 0.5, ~outlier)
    assert float(clean.cost(x)) <= clean_opt * (1 + 1e-3)


def test_gnc_errors():
    clean, values = _loop_graph(n=25)
    odo = clean.group("edges")
    keep = np.abs(odo.indices.array[:, 0] - odo.indices.array[:, 1]) == 1
    chain = Problem(
        clean.variables,
        [factors.between("poses", odo.indices.array[keep, 0], odo.indices.array[keep, 1],
                         odo.measurement[keep], noise.information(odo.noise.matrix[keep])),
         clean.group("anchor")],
    )
    with pytest.raises(ValueError, match="no candidate outliers"):
        gnc(chain, values)
    with pytest.raises(ValueError, match="loss must be one of"):
        gnc(clean, values, "huber")
    with_robust = Problem(
        clean.variables,
        [factors.between("poses", odo.indices.array[:, 0], odo.indices.array[:, 1], odo.measurement,
                         odo.noise, robust=robust.Huber(1.0), name="edges"), clean.group("anchor")],
    )
    with pytest.raises(ValueError, match="has a robust loss"):
        gnc(with_robust, values)


def test_chi2_quantile():
    # 0.99 quantiles of chi-square with 1, 3 and 6 degrees of freedom (standard tables).
    for dof, q in ((1, 6.634897), (3, 11.344867), (6, 16.811894)):
        assert abs(chi2_quantile(0.99, dof) - q) < 1e-5


# Issue 10's target. Measured on intel (seed 0, 251 false loop closures), TLS: before the
# flip-score polishing 29.24 (+30 %: one false loop closure the map bent itself to fit, r^2 1.9
# at the solution but deleted-residual score 15.4 > c^2 11.3), GTSAM 29.25; now 22.502117, the
# clean optimum (none accepted, none rejected; ~20-45 s on 2 cores). Seed 2: 22.502117;
# seed 1: 26.50 (one false closure whose score stays below c^2: TLS's own optimum accepts it).
# GM (seed 0, 1): ~50700, 160-189 true loop closures rejected, while mu started at the paper's
# 2 r_max^2 / c^2 (the false closures' residuals from the odometry start: a least-squares first
# surrogate that folded the map); with mu from the median residual: seeds 0, 1, 2 at 28.76,
# 25.62, 22.87 (none rejected, 1, 1, 0 false accepted; ~6 s): GM's soft weights, not met.
# sphere2500 (seed 0, 495 false loop closures): TLS and GM both within 1 % (TLS at the clean
# optimum, 675.700963); with the flip scores TLS used to hang (not a polishing cycle: two
# batched LAPACK Cholesky kernels side by side deadlock XLA:CPU's pool; jaxgraph.smallmat).
# Issue 24: with the consistency pre-filter and GM's decision step, GM on intel seeds 0-9 at
# 10 % reaches the clean optimum (benchmarks/results/gnc_sweep_intel_pcm_cpu.json).


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,clean_optimum,loss",
    [
        ("intel", 22.5021165, "tls"),
        ("intel", 22.5021165, "gm"),
        ("sphere2500", 675.700965, "tls"),
        ("sphere2500", 675.700965, "gm"),
    ],
)
def test_gnc_real_graphs_within_one_percent(name, clean_optimum, loss):
    clean, values = _read(name)
    bad, outlier = add_random_loop_closures(clean, values, 0.1, seed=0)
    x, w, info = gnc(bad, values, loss)
    assert float(clean.cost(x)) <= 1.01 * clean_optimum, (loss, float(clean.cost(x)), info)


def test_cli_gnc_and_init_errors(tmp_path, capsys):
    from jaxgraph.cli import main

    info = "1 0 0 1 0 1"
    chain = tmp_path / "chain.g2o"
    chain.write_text(
        "VERTEX_SE2 0 0 0 0\nVERTEX_SE2 1 1 0 0\nVERTEX_SE2 2 2 0 0\n"
        f"EDGE_SE2 0 1 1 0 0 {info}\nEDGE_SE2 1 2 1 0 0 {info}\n"
    )
    assert main(["solve", str(chain), "--gnc", "tls", "--no-compile-cache"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no candidate outliers" in err[0]
    assert main(["solve", str(chain), "--init", "chordal", "--batch", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not combine with --batch" in err[0]


def test_gnc_stopped_early_is_not_converged(corrupted):
    # Two outer iterations cannot finish TLS on this graph without the pre-filter (it needs
    # about 20): the report must say "stopped", not converged, and count the candidates whose
    # weight is not yet their decision at the returned values.
    from jaxgraph.algorithms.gnc import GNC_STATUS

    _, bad, _, values, _ = corrupted
    _, _, info = gnc(bad, values, "tls", max_outer_iterations=2, tolerance=1e-10, prefilter=None)
    assert int(info.status) == 0 and not bool(info.converged)
    assert GNC_STATUS[int(info.status)].startswith("stopped")
    assert int(info.iterations) == 2
    assert int(info.inconsistent) > 0


# Issue 24: TLS must hold on every draw, not one seed. Seeds 1 and 8 kept one false loop
# closure each before the polishing's threshold followed the accepted scores (26.50 and
# 24.78, +17.8 % and +10.1 %: flip scores 10.06 and 4.96 below c^2 = 11.3, while intel's true
# loop closures score at most 1.44). Truth: the clean graph's optimum (LM, float64).
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 8])
def test_gnc_tls_intel_ten_percent_across_seeds(seed):
    clean, values = _read("intel")
    optimum = float(jaxgraph.solve(clean, values)[1].cost)
    bad, outlier = add_random_loop_closures(clean, values, 0.1, seed=seed)
    x, w, info = gnc(bad, values, "tls")
    assert bool(info.converged), info
    inlier = np.asarray(w["edges"]) > 0.5
    assert not np.any(inlier & outlier)
    assert float(clean.cost(x)) <= 1.01 * optimum, (seed, float(clean.cost(x)), info)


# Issue 24, the draws that failed before the consistency pre-filter: GM at 10 % kept one
# false closure on seeds 0, 1, 8 (+27.8, +13.8, +29.3 %: no decision step); TLS at 20 % kept
# one on seeds 0 and 7 (+4.6, +2.8 %: flip scores 2.1, just below the polishing threshold).
@pytest.mark.slow
@pytest.mark.parametrize("loss,fraction,seed", [("gm", 0.1, 0), ("gm", 0.1, 1), ("gm", 0.1, 8),
                                                ("tls", 0.2, 0), ("tls", 0.2, 7)])
def test_gnc_intel_draws_that_failed_before_the_prefilter(loss, fraction, seed):
    clean, values = _read("intel")
    optimum = float(jaxgraph.solve(clean, values)[1].cost)
    bad, outlier = add_random_loop_closures(clean, values, fraction, seed=seed)
    x, w, info = gnc(bad, values, loss)
    assert bool(info.converged), info
    inlier = np.asarray(w["edges"]) > 0.5
    assert not np.any(inlier & outlier)
    assert float(clean.cost(x)) <= 1.01 * optimum, (seed, float(clean.cost(x)), info)
