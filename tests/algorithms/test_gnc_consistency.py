"""The loop-closure consistency pre-filter of GNC (issue 24) and GM's decision step.

Truths: the known labels of synthetic false loop closures (``add_random_loop_closures``), and
for the cycle distance an independent first-order computation: the cycle of two loop
closures composed directly from the measurements, its Jacobian by central differences with
respect to every measurement in the cycle, and the Mahalanobis distance with the covariance
propagated through it (float64).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgraph
from jaxgraph.algorithms.consistency import consistent_closures, pairwise_consistency
from jaxgraph.algorithms.gnc import GNC_STATUS, gnc
from jaxgraph.io.synthetic import add_random_loop_closures
from jaxgraph.lie import se2_exp, se2_log

from .test_gnc import _loop_graph


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5])
def test_prefilter_drops_the_false_closures_and_keeps_the_true(fraction):
    # 40 true loop closures; 10, 30 and 50 false ones (at 0.5 more false than true: the
    # filter needs a quarter of the closures to be true, not a majority)
    clean, values = _loop_graph()
    bad, outlier = add_random_loop_closures(clean, values, fraction, seed=2)
    keep, closures, r = consistent_closures(bad)
    idx = bad.group("edges").indices.array
    odometry = np.abs(idx[:, 0] - idx[:, 1]) == 1
    assert np.array_equal(np.sort(closures), np.nonzero(~odometry)[0])
    assert np.all(keep[odometry])
    assert not np.any(keep & outlier), np.nonzero(keep & outlier)
    assert np.all(keep[~outlier])
    # the statistic separates them by a wide margin
    false = outlier[closures]
    assert r[false].min() > 10 * r[~false].max()


def _cycle(Z, a, b, c, d):
    """Log of the cycle a -(Z_p)-> b -(odometry)-> d -(Z_q^-1)-> c -(odometry)-> a, poses'
    tangent (x, y, theta); ``Z`` dict factor -> 3x3 matrix (odometry k -> k+1 under key k)."""
    def odo(s, t):
        T = np.eye(3)
        for k in range(min(s, t), max(s, t)):
            T = T @ Z[("odo", k)]
        return T if s <= t else np.linalg.inv(T)

    C = Z["p"] @ odo(b, d) @ np.linalg.inv(Z["q"]) @ odo(c, a)
    return np.asarray(se2_log(jnp.asarray(C)))


def test_cycle_distance_matches_a_direct_first_order_computation():
    jax.config.update("jax_enable_x64", True)
    try:
        clean, _ = _loop_graph()
        g = clean.group("edges")
        idx = g.indices.array
        meas = np.asarray(g.measurement, np.float64)
        info = np.asarray(g.noise.matrix, np.float64)
        closures, _, d2 = pairwise_consistency(clean)
        rng = np.random.default_rng(0)
        for p, q in rng.choice(closures.size, size=(4, 2), replace=False):
            fp, fq = closures[p], closures[q]
            (a, b), (c, d) = idx[fp], idx[fq]
            odo_factor = {int(min(i, j)): f for f, (i, j) in enumerate(idx) if abs(i - j) == 1}

            def mats(delta):
                # every measurement right-perturbed by Exp(delta[f]) (the factor's noise convention)
                out = {}
                for k, f in odo_factor.items():
                    out[("odo", k)] = np.asarray(se2_exp(jnp.asarray(meas[f]))) @ np.asarray(se2_exp(jnp.asarray(delta[f])))
                out["p"] = np.asarray(se2_exp(jnp.asarray(meas[fp]))) @ np.asarray(se2_exp(jnp.asarray(delta[fp])))
                out["q"] = np.asarray(se2_exp(jnp.asarray(meas[fq]))) @ np.asarray(se2_exp(jnp.asarray(delta[fq])))
                return out

            zero = np.zeros_like(meas)
            e = _cycle(mats(zero), a, b, c, d)
            lo, hi = min(a, b, c, d), max(a, b, c, d)
            involved = [fp, fq] + [odo_factor[k] for k in range(lo, hi)]
            S = np.zeros((3, 3))
            h = 1e-6
            for f in involved:
                J = np.zeros((3, 3))
                for t in range(3):
                    dp, dm = zero.copy(), zero.copy()
                    dp[f, t], dm[f, t] = h, -h
                    J[:, t] = (_cycle(mats(dp), a, b, c, d) - _cycle(mats(dm), a, b, c, d)) / (2 * h)
                S += J @ np.linalg.inv(info[f]) @ J.T
            want = e @ np.linalg.solve(S, e)
            np.testing.assert_allclose(d2[p, q], want, rtol=0.05, atol=1e-6)
    finally:
        jax.config.update("jax_enable_x64", False)


@pytest.mark.slow  # compiles GNC twice (GM with and without its decision step)
def test_gm_decision_step():
    clean, values = _loop_graph()
    bad, outlier = add_random_loop_closures(clean, values, 0.3, seed=4)
    optimum = float(jaxgraph.solve(clean, values, tolerance=1e-10)[1].cost)
    x, w, info = gnc(bad, values, "gm", tolerance=1e-10)
    assert int(info.status) == 6 and bool(info.converged), GNC_STATUS[int(info.status)]
    inlier = np.asarray(w["edges"]) > 0.5
    assert np.array_equal(inlier, ~outlier)
    assert set(np.unique(np.asarray(w["edges"]))) <= {0.0, 1.0}  # decisions: binary
    assert int(info.inconsistent) == 0
    np.testing.assert_allclose(float(clean.cost(x)), optimum, rtol=1e-5)
    # without it: GM's own continuous weights and status
    _, w2, info2 = gnc(bad, values, "gm", gm_decision=False, tolerance=1e-10)
    assert int(info2.status) in (2, 3)
    assert int(info.prefilter_rejected) == int(info2.prefilter_rejected) == int(outlier.sum())


def test_prefilter_option():
    clean, values = _loop_graph(n=25)
    bad, outlier = add_random_loop_closures(clean, values, 0.2, seed=1)
    with pytest.raises(ValueError, match="prefilter must be"):
        gnc(bad, values, prefilter="clique")
    with pytest.raises(ValueError, match="prefilter='pcm' needs"):
        gnc(bad, values, prefilter="pcm", known_inliers="none")
