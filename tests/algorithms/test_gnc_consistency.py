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


def _exp(xi):
    """SE2 Exp of (x, y, theta) rows ``[..., 3]`` -> ``[..., 3, 3]`` (numpy, written out here as
    an independent reference)."""
    x, y, t = xi[..., 0], xi[..., 1], xi[..., 2]
    small = np.abs(t) < 1e-9
    ts = np.where(small, 1.0, t)
    a = np.where(small, 1 - t * t / 6, np.sin(ts) / ts)
    b = np.where(small, t / 2, (1 - np.cos(ts)) / ts)
    T = np.zeros(xi.shape[:-1] + (3, 3))
    T[..., 0, 0], T[..., 0, 1], T[..., 0, 2] = np.cos(t), -np.sin(t), a * x - b * y
    T[..., 1, 0], T[..., 1, 1], T[..., 1, 2] = np.sin(t), np.cos(t), b * x + a * y
    T[..., 2, 2] = 1.0
    return T


def _log(T):
    t = np.arctan2(T[1, 0], T[0, 0])
    a, b = (np.sin(t) / t, (1 - np.cos(t)) / t) if abs(t) > 1e-9 else (1.0, t / 2)
    v = np.linalg.solve(np.array([[a, -b], [b, a]]), T[:2, 2])
    return np.array([v[0], v[1], t])


def test_cycle_distance_matches_a_direct_first_order_computation():
    # The cycle a -(Z_p)-> b -(odometry)-> d -(Z_q^-1)-> c -(odometry)-> a composed from the
    # measurements, each right-perturbed by Exp(delta) (the factors' noise convention); its
    # covariance from central differences; d^2 is invariant to the frame the cycle is
    # expressed in, so it must equal the module's world-frame value.
    clean, _ = _loop_graph()
    g = clean.group("edges")
    idx = np.asarray(g.indices.array)
    meas = np.asarray(g.measurement, np.float64)
    info = np.asarray(g.noise.matrix, np.float64)
    closures, _, d2 = pairwise_consistency(clean)
    odo = {int(min(i, j)): f for f, (i, j) in enumerate(idx) if abs(i - j) == 1}
    # measurement rows are poses (x, y, theta): translation (x, y), rotation theta
    Zm = np.zeros((len(meas), 3, 3))
    Zm[:, 0, 0], Zm[:, 0, 1], Zm[:, 0, 2] = np.cos(meas[:, 2]), -np.sin(meas[:, 2]), meas[:, 0]
    Zm[:, 1, 0], Zm[:, 1, 1], Zm[:, 1, 2] = np.sin(meas[:, 2]), np.cos(meas[:, 2]), meas[:, 1]
    Zm[:, 2, 2] = 1.0
    rng = np.random.default_rng(0)
    for p, q in rng.choice(closures.size, size=(4, 2), replace=False):
        fp, fq = closures[p], closures[q]
        (a, b), (c, d) = idx[fp], idx[fq]

        def cycle(f=None, delta=None):
            Z = Zm.copy()
            if f is not None:
                Z[f] = Z[f] @ _exp(delta)

            def chain(s, t):
                T = np.eye(3)
                for k in range(min(s, t), max(s, t)):
                    T = T @ Z[odo[k]]
                return T if s <= t else np.linalg.inv(T)

            return _log(Z[fp] @ chain(b, d) @ np.linalg.inv(Z[fq]) @ chain(c, a))

        e = cycle()
        S = np.zeros((3, 3))
        h = 1e-6
        for f in [fp, fq] + [odo[k] for k in range(min(a, b, c, d), max(a, b, c, d))]:
            J = np.stack([(cycle(f, h * u) - cycle(f, -h * u)) / (2 * h) for u in np.eye(3)], axis=1)
            S += J @ np.linalg.inv(info[f]) @ J.T
        want = e @ np.linalg.solve(S, e)
        np.testing.assert_allclose(d2[p, q], want, rtol=0.05, atol=1e-6)


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


def test_gnc_readmits_a_true_closure_the_prefilter_dropped(monkeypatch):
    # The graduation runs without the closures the pre-filter left out (they would make the
    # sparsity pattern dense); a true closure among them must come back in the final
    # decisions, with the whole problem's polishing, and the status must say converged only
    # for decisions that hold over every candidate.
    import jaxgraph.algorithms.consistency as consistency

    clean, values = _loop_graph(n=30)
    bad, outlier = add_random_loop_closures(clean, values, 0.2, seed=3)
    optimum = float(jaxgraph.solve(clean, values, tolerance=1e-10)[1].cost)
    real = consistency.consistent_closures
    keep0 = real(bad)[0]
    assert np.array_equal(keep0, ~outlier)  # the real filter is right here...
    closure = np.abs(np.diff(bad.group("edges").indices.array, axis=1)[:, 0]) != 1
    # the true closure that fits the clean optimum best: the map without it must still fit
    # it within the polishing's threshold for its decision to be "in" (r^2 at the map as is)
    x_clean = jaxgraph.solve(clean, values, tolerance=1e-10)[0]
    r2 = np.asarray(2 * bad.factor_costs(x_clean, "edges"))
    dropped = int(np.nonzero(closure & ~outlier)[0][np.argmin(r2[closure & ~outlier])])

    def drop_one_true(problem, **kw):  # ...so make it wrong by one true closure
        keep, closures, r = real(problem, **kw)
        keep = keep.copy()
        keep[dropped] = False
        return keep, closures, r

    monkeypatch.setattr(consistency, "consistent_closures", drop_one_true)
    x, w, info = gnc(bad, values, "tls", tolerance=1e-10)
    assert int(info.status) == 1 and bool(info.converged), GNC_STATUS[int(info.status)]
    assert int(info.prefilter_rejected) == int(outlier.sum()) + 1
    inlier = np.asarray(w["edges"]) > 0.5
    assert inlier[dropped]
    assert np.array_equal(inlier, ~outlier)
    assert int(info.num_candidates) == int(closure.sum())
    np.testing.assert_allclose(float(clean.cost(x)), optimum, rtol=1e-6)


def test_a_polishing_that_undid_itself_restarts_from_the_initial_values(monkeypatch):
    # Status 5 (two polishing rounds undoing each other) after a first solve bent by false
    # closures the pre-filter kept: the accepted set is solved again from the *initial*
    # values and polished; that run is kept only if its decisions are self-consistent
    # (status 1), else the first result and its status 5 stand. The compiled GNC is replaced
    # by a recorder (what is checked is which run starts from what, not a solve).
    from jaxgraph.algorithms.gnc import GNCInfo
    from jaxgraph.algorithms.gnc_prefilter import without_left_out

    clean, values = _loop_graph(n=25)
    bad, outlier = add_random_loop_closures(clean, values, 0.2, seed=1)
    closure = np.abs(np.diff(bad.group("edges").indices.array, axis=1)[:, 0]) != 1
    masks, keep = {"edges": closure}, {"edges": ~outlier}
    start = {"edges": ~closure | keep["edges"]}
    accepted = ~outlier & (np.arange(len(outlier)) % 3 != 0)  # what the bent run "accepted"

    def recorder(statuses, second=None):
        calls = []

        def run(problem, masks_, keep_, start_, params_, x0):
            calls.append({"count": problem.group("edges").count, "start": np.asarray(start_["edges"]),
                          "polish": bool(params_["polish"]), "x0": x0})
            w = accepted[: problem.group("edges").count] if len(calls) == 1 else np.asarray(start_["edges"])
            if len(calls) == 2 and second is not None:
                w = second
            status = statuses[len(calls) - 1]
            info = GNCInfo(*(jnp.zeros((), jnp.float64),) * 3, *(jnp.asarray(len(calls), jnp.int32),) * 4,
                           jnp.asarray(status in (1, 6)), jnp.asarray(status, jnp.int32), jnp.zeros((), jnp.int32),
                           jnp.zeros((), jnp.int32))
            return {"poses": jnp.full_like(values["poses"], len(calls))}, {"edges": jnp.asarray(w, float)}, info, \
                {"edges": jnp.asarray(9.0)}
        return run, calls

    params = {"polish": jnp.zeros((), bool), "c2_eff": {"edges": jnp.asarray(11.3)}}
    run, calls = recorder([5, 1])
    x, w, info = without_left_out(bad, values, masks, keep, start, params, run, int(outlier.sum()), jnp.float64)
    active = ~outlier  # here the left-out closures are exactly the false ones
    assert len(calls) == 2 and calls[0]["count"] == int(active.sum())  # first: without the left-out ones
    again = calls[1]
    # The restart: straight to polishing, still without the left-out closures (none was
    # accepted: the first run's program and sparsity pattern)...
    assert again["count"] == int(active.sum()) and again["polish"]
    assert again["x0"] is values  # ...from the initial values, not the bent map
    restart_set = np.zeros(len(outlier), bool)
    restart_set[~outlier] = accepted[: int((~outlier).sum())]
    np.testing.assert_array_equal(again["start"], (restart_set | ~closure)[active])  # the accepted set
    assert int(info.status) == 1 and float(x["poses"][0, 0]) == 2.0  # the restart's result kept
    np.testing.assert_array_equal(np.asarray(w["edges"]) > 0.5, restart_set | ~closure)

    run, calls = recorder([5, 5])
    x, w, info = without_left_out(bad, values, masks, keep, start, params, run, int(outlier.sum()), jnp.float64)
    assert len(calls) == 2 and int(info.status) == 5 and not bool(info.converged)
    assert float(x["poses"][0, 0]) == 1.0  # the first result stands, with its status

    # Status 1 with closures the pre-filter kept ending rejected (here true ones: sphere2500
    # at 50 % false ended so on bent maps): the same restart runs, and its result replaces the
    # first only with a lower TLS objective (weighted cost, 0 in the recorder, plus c_p^2 / 2
    # per rejected candidate).
    run, calls = recorder([1, 1], second=np.ones(int(active.sum()), bool))  # the restart accepts every kept one
    x, w, info = without_left_out(bad, values, masks, keep, start, params, run, int(outlier.sum()), jnp.float64)
    assert len(calls) == 2 and calls[1]["x0"] is values and calls[1]["polish"]
    assert int(info.status) == 1 and float(x["poses"][0, 0]) == 2.0
    np.testing.assert_array_equal(np.asarray(w["edges"]) > 0.5, ~outlier)
    run, calls = recorder([1, 1])  # the restart ends where the first run did: no lower objective
    x, w, info = without_left_out(bad, values, masks, keep, start, params, run, int(outlier.sum()), jnp.float64)
    assert len(calls) == 2 and float(x["poses"][0, 0]) == 1.0
    restart_set = np.zeros(len(outlier), bool)
    restart_set[~outlier] = accepted[: int((~outlier).sum())]
    np.testing.assert_array_equal(np.asarray(w["edges"]) > 0.5, restart_set)

    # A left-out closure re-admitted at the first run's map (here forced: its squared residual
    # set under c_p^2) and accepted by the whole problem's polishing: the restart then needs
    # the whole problem, since the reduced one has no row for it.
    from jaxgraph.algorithms import gnc_prefilter

    readmitted = int(np.nonzero(outlier)[0][0])

    def one_passes(problem, x, names):
        r2 = {n: np.full(problem.group(n).count, 1e3) for n in names}
        r2["edges"][readmitted] = 0.0
        return r2
    monkeypatch.setattr(gnc_prefilter, "squared_residuals", one_passes)
    run, calls = recorder([1, 1, 1])
    x, w, info = without_left_out(bad, values, masks, keep, start, params, run, int(outlier.sum()), jnp.float64)
    assert [c["count"] for c in calls] == [int(active.sum()), len(outlier), len(outlier)]
    assert calls[1]["start"][readmitted] and calls[2]["start"][readmitted]
    assert calls[2]["x0"] is values and calls[2]["polish"]
