"""Graduated non-convexity (GNC) for outlier rejection (Yang et al., RA-L 2020).

``values, weights, info = jaxgraph.gnc(problem, values, loss="tls")`` minimises a robust
cost in which every *candidate* factor (by default: every factor except priors and
odometry, i.e. between factors of consecutive indices) has a truncated-least-squares
("tls") or Geman-McClure ("gm") loss on its squared whitened residual ``r^2``, with
threshold ``c^2`` (default: the 0.99 quantile of the chi-square distribution with the
factor's dimension, GTSAM's default). The loss is reached through a sequence of
surrogates indexed by ``mu``, each minimised by weighted least squares (Black-Rangarajan
duality):

* TLS: ``w = 1`` if ``r^2 <= mu/(mu+1) c^2``, ``0`` if ``r^2 >= (mu+1)/mu c^2``, else
  ``c sqrt(mu (mu+1)) / r - mu``; ``mu`` starts at ``c^2 / (2 r_max^2 - c^2)`` (nearly
  convex) and grows by ``mu_step`` per outer iteration.
* GM: ``w = (mu c^2 / (r^2 + mu c^2))^2``; ``mu`` shrinks by ``mu_step`` down to 1 from
  ``2 r_max^2 / c^2`` (the paper's start, after a plain least-squares first solve) or, when
  the first solve uses the known inliers alone, from ``max(1, 2 median(r^2 / c^2))`` over
  the candidates. There the false candidates keep their full residuals (the point of that
  start), ``r_max^2`` is theirs, and the paper's ``mu`` would make the first surrogate plain
  least squares (weights ~1), which lets the false candidates bend the map before GM can
  discount them; the median is a robust residual scale while fewer than half the
  candidates are outliers.

The whole procedure is one ``jax.jit``: a first solve (by default with the candidates
switched off, i.e. from the known inliers alone; ``initial_weights="ones"`` is the paper's
plain least squares), then a ``lax.while_loop`` over ``mu`` whose body updates the weights from
the current residuals and re-solves the weighted problem with :func:`jaxgraph.solve`,
warm-started at the previous solution (GTSAM's ``GncOptimizer`` restarts every inner
solve from the initial values). TLS ends with a polishing phase: once the weights are
(nearly) binary or the cost stalls, the weights become the exact TLS optimum at the
current solution, ``w = [score <= c_p^2]`` (``score``: the flip score of
:func:`jaxgraph.algorithms.gnc_weights.flip_scores`, which re-admits an inlier dropped too
early and drops an outlier the map bent itself to fit; ``c_p^2 = min(c^2, tail_factor q99)``,
see :func:`gnc`), and
it stops when the weights used agree with that rule at the new solution (status 1), or,
not converged, when two polishing rounds undo each other (status 5: some factor's decision
flips with its own state). GM's graduation ends
when ``mu`` reaches 1 or its weighted cost changes by less than ``cost_tolerance``; by default
(``gm_decision``) the same polishing then turns its soft weights into decisions (status 6),
else it stops there (status 2, 3). Both stop after ``max_outer_iterations``.

Before the jit, on the host, a pairwise-consistency pre-filter of the loop closures
(:mod:`jaxgraph.algorithms.consistency`, default ``prefilter="auto"`` for pose graphs with an
odometry chain) takes the closures that disagree with most others out of the problem for the
first solve, the graduation and the polishing; the final decisions re-admit one only on its
residual at the returned map (``r^2 <= c_p^2``), and then polish the whole problem again.
With the pre-filter, a polishing that ends in status 5, or in status 1 with closures the
pre-filter kept among the rejected, restarts once: the accepted set is solved again from the
initial values (a map that the false closures the pre-filter kept never bent) and polished;
that run is kept if its decisions are self-consistent (status 1) and, against a status-1
first run, its TLS objective (weighted cost plus ``c_p^2 / 2`` per rejected candidate) is lower.
It vmaps over problems that share a structure (without the pre-filter: under ``vmap`` the
measurements are traced).
"""

from __future__ import annotations

import hashlib
from functools import partial
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..runtime.compile_cache import UNOPTIMISED_OPTIONS, entry_point
from ..graph.problem import Problem
from ..solver import solve
from .gnc_prefilter import prefilter_closures, without_left_out
from .gnc_weights import (
    candidate_masks,
    chi2_quantile,
    decision_weights,
    flip_scores,
    initial_mu,
    squared_residuals,
    surrogate_weights,
    weighted_problem,
)

__all__ = ["gnc", "weighted_problem", "GNCInfo", "LOSSES", "GNC_STATUS", "candidate_masks", "chi2_quantile"]

LOSSES = ("tls", "gm")

GNC_STATUS = {
    0: "stopped: max_outer_iterations reached",
    1: "converged: TLS weights are binary and equal to the TLS decisions [flip score <= threshold] at the solution",
    2: "converged: GM mu reached 1 (the Geman-McClure loss itself)",
    3: "converged: GM weighted cost changed by less than cost_tolerance (relative)",
    4: "converged: every candidate residual is below the threshold at the least-squares solution",
    5: "stopped: TLS decisions are not self-consistent (some factors' decisions flip back and forth with their own state)",
    6: "converged: GM, then binary weights equal to the TLS decisions [flip score <= threshold] at the solution",
}


class GNCInfo(NamedTuple):
    """GNC report (a pytree of arrays; under ``vmap`` every field gains the batch axis).

    Attributes:
      cost: cost of the problem with the final weights at the returned values
        (``sum w 0.5 r^2`` over candidates plus the other factors' costs).
      first_cost: cost of the first solve (weights of ``initial_weights``).
      mu: final surrogate parameter.
      iterations: outer (``mu``) iterations run.
      inner_iterations: linear solves in all weighted solves together.
      num_inliers: candidate factors with final weight > 0.5.
      num_candidates: candidate factors.
      converged: True for status 1-4 and 6.
      status: int code, see ``jaxgraph.gnc.GNC_STATUS``.
      inconsistent: candidates whose final weight differs from the TLS decision at the
        returned values (``[score <= threshold]``; 0 when converged; 0 for GM without its
        decision step).
      prefilter_rejected: loop closures the consistency pre-filter left out of the start and
        the graduation (0 without the pre-filter); the final decisions may re-admit them.
    """

    cost: jax.Array
    first_cost: jax.Array
    mu: jax.Array
    iterations: jax.Array
    inner_iterations: jax.Array
    num_inliers: jax.Array
    num_candidates: jax.Array
    converged: jax.Array
    status: jax.Array
    inconsistent: jax.Array
    prefilter_rejected: jax.Array = np.int32(0)


def gnc(
    problem: Problem,
    values: dict,
    loss: str = "tls",
    *,
    known_inliers="odometry",
    inlier_threshold: float | None = None,
    inlier_probability: float = 0.99,
    mu_step: float = 1.4,
    max_outer_iterations: int = 100,
    weight_tolerance: float = 1e-4,
    cost_tolerance: float = 1e-5,
    initial_weights: str = "auto",
    tail_factor: float | None = 3.0,
    prefilter: str | None = "auto",
    gm_decision: bool = True,
    **solve_options,
):
    """Robust solve by graduated non-convexity.

    Args:
      problem: a :class:`jaxgraph.Problem`; candidate factor groups must not carry a robust
        loss of their own (GNC supplies the loss).
      values: initial values (dict ``group -> [count, param_dim]``); their dtype is the
        dtype of the solve.
      loss: ``"tls"`` (truncated least squares) or ``"gm"`` (Geman-McClure).
      known_inliers: see :func:`candidate_masks`.
      inlier_threshold: ``c^2``, the largest squared whitened residual norm of an inlier;
        ``None`` (default): ``chi2_quantile(inlier_probability, dim)`` per factor group.
      inlier_probability: probability for the default threshold (GTSAM's 0.99).
      mu_step: factor by which ``mu`` grows (TLS) or shrinks (GM) per outer iteration.
      max_outer_iterations: bound on the ``mu`` loop; static.
      weight_tolerance: TLS stops when every weight is within this of 0 or 1.
      cost_tolerance: stop when the weighted cost changes by less than this (relative).
      initial_weights: weights of the candidates in the first solve, which sets the
        starting point and ``mu``'s initial value: ``"ones"`` (plain least squares, as in
        the paper), ``"known"`` (0: the known inliers alone, e.g. the odometry chain, so
        the false loop closures cannot bend the starting point; GM then starts ``mu`` from the
        median residual, see above) or ``"auto"`` (default:
        ``"known"`` when some factor is a known inlier, else ``"ones"``).
      tail_factor: TLS only: the polishing decides with the threshold ``min(c^2, tail_factor
        q99)`` (per group in units of its ``c^2``), ``q99`` the 0.99 quantile of the flip
        scores of the candidates accepted when polishing starts; ``None``: ``c^2``. Where the
        information matrices are conservative (intel: true loop closures' scores at most
        1.44, ``c^2`` = 11.3) the plain ``c^2`` lets TLS keep a false loop closure that the
        map bends itself to fit (scores 3-11 measured); the factor never raises the threshold.
      prefilter: ``"pcm"``: loop closures inconsistent with most others along the odometry
        chain (:func:`jaxgraph.algorithms.consistency.consistent_closures`, on the host, numpy)
        are left out of the first solve and keep weight 0 through the graduation; the final
        decisions (TLS polishing, GM's decision step) still judge every candidate, so a true
        closure it dropped comes back. ``None``: no pre-filter. ``"auto"`` (default):
        ``"pcm"`` when the candidates are the loop closures of one between group on a
        Lie-group variable (``known_inliers="odometry"``) and the problem is not traced
        (under ``vmap`` the measurements are not on the host), else ``None``.
      gm_decision: GM only: when GM has converged, its weights are replaced by the TLS
        decisions ``[score <= c_p^2]`` (the polishing of TLS, same threshold) until they are
        self-consistent (status 6); GM's continuous weights keep a false closure the map
        was bent to fit at a fraction of its weight. ``False``: GM's own result (status 2, 3).
      **solve_options: passed to every inner :func:`jaxgraph.solve` (``method``,
        ``max_iterations``, ``tolerance``, ``linear_solver``, ...).

    Returns:
      ``(values, weights, info)``: the solution, dict ``group name -> [M]`` final weights
      (1 for known inliers; > 0.5 means inlier) and a :class:`GNCInfo`.

    Raises:
      ValueError if no factor is a candidate outlier, for an unknown ``loss``, or when a
      candidate group already has a robust loss.
    """
    if loss not in LOSSES:
        raise ValueError(f"gnc: loss must be one of {LOSSES}, got {loss!r}")
    if not isinstance(problem, Problem):
        raise TypeError(f"gnc: problem must be a jaxgraph.Problem, got {type(problem).__name__}")
    if not mu_step > 1:
        raise ValueError(f"gnc: mu_step must be > 1, got {mu_step}")
    if int(max_outer_iterations) != max_outer_iterations or max_outer_iterations < 1:
        raise ValueError(f"gnc: max_outer_iterations must be a positive integer, got {max_outer_iterations}")
    problem.check_values(values)
    masks = candidate_masks(problem, known_inliers)
    if not any(m.any() for m in masks.values()):
        raise ValueError(
            "gnc: the problem has no candidate outliers (every factor is a prior or odometry, "
            "known_inliers=" + (repr(known_inliers) if isinstance(known_inliers, str) else "dict") + "); "
            "solve it with jaxgraph.solve, or pass known_inliers='none' to let GNC weigh every factor"
        )
    if initial_weights not in ("auto", "ones", "known"):
        raise ValueError(f"gnc: initial_weights must be 'auto', 'ones' or 'known', got {initial_weights!r}")
    if initial_weights == "auto":
        initial_weights = "known" if any((~m).any() for m in masks.values()) else "ones"
    elif initial_weights == "known" and not any((~m).any() for m in masks.values()):
        raise ValueError("gnc: initial_weights='known' needs known inliers, but every factor is a candidate")
    thresholds = {}
    for g in problem.factors:
        if not masks[g.name].any():
            continue
        if g.robust is not None:
            raise ValueError(
                f"gnc: factor group {g.name!r} has a robust loss ({type(g.robust).__name__}) and contains "
                "candidate outliers; GNC supplies the loss itself, so build that group without robust="
            )
        dim = g.type.residual_dim([problem.structure.kinds[v] for v in g.variables])
        thresholds[g.name] = (
            float(inlier_threshold) if inlier_threshold is not None else chi2_quantile(inlier_probability, dim)
        )
    if prefilter not in ("auto", "pcm", None):
        raise ValueError(f"gnc: prefilter must be 'auto', 'pcm' or None, got {prefilter!r}")
    keep, rejected, filtered = prefilter_closures(problem, masks, prefilter, known_inliers)
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(values))
    settings = dict(loss=loss, max_outer_iterations=int(max_outer_iterations),
                    start_from_known=initial_weights == "known", gm_decision=bool(gm_decision),
                    solve_options=tuple(sorted(solve_options.items())))
    params = {
        "thresholds": {k: jnp.asarray(v, dtype) for k, v in thresholds.items()},
        "mu_step": jnp.asarray(mu_step, dtype),
        "weight_tolerance": jnp.asarray(weight_tolerance, dtype),
        "cost_tolerance": jnp.asarray(cost_tolerance, dtype),
        "tail_factor": jnp.asarray(np.inf if tail_factor is None else tail_factor, dtype),
        "polish": jnp.zeros((), bool),  # start in the polishing (with c2_eff as its threshold)
        "allow_trivial": jnp.ones((), bool),  # status 4 possible
    }
    params["c2_eff"] = dict(params["thresholds"])

    def run(prob, masks_, keep_, start_, params_, x0):
        static = _Static(masks=tuple((name, _Frozen(m)) for name, m in masks_.items() if m.any()), **settings)
        params_ = dict(params_, keep={n: jnp.asarray(keep_[n]) for n in thresholds},
                       start={n: jnp.asarray(start_[n]) for n in thresholds})
        return _gnc_jit(prob, dict(x0), params_, static)

    # first solve: the known inliers (and, with the pre-filter, the closures it kept) or all
    start = {n: ~masks[n] | (keep[n] & (filtered or initial_weights == "ones")) for n in thresholds}
    if not rejected:
        x, w, info, _ = run(problem, masks, keep, start, params, values)
        return x, w, info._replace(prefilter_rejected=jnp.asarray(rejected, jnp.int32))
    return without_left_out(problem, values, masks, keep, start, params, run, rejected, dtype)


class _Frozen:
    """A read-only boolean mask usable inside static (hashed) arguments."""

    def __init__(self, a):
        self.array = np.array(a, bool)
        self.array.setflags(write=False)
        self._key = self.array.tobytes()

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _Frozen) and self._key == other._key

    def _cache_key(self):
        # the executable cache's text form of the mask (executable_cache.encode)
        return (self.array.shape, hashlib.sha256(self._key).hexdigest())


@partial(jax.tree_util.register_dataclass, data_fields=[],
         meta_fields=["loss", "masks", "max_outer_iterations", "start_from_known", "gm_decision", "solve_options"])
@dataclass(frozen=True)
class _Static:
    """GNC's settings that shape the program: a pytree without leaves (all static), so the
    compiled GNC is keyed before tracing and kept in the executable cache, as a solve is."""

    loss: str
    masks: tuple
    max_outer_iterations: int
    start_from_known: bool
    gm_decision: bool
    solve_options: tuple


def _gnc(problem, values, params, static: _Static):
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(values))
    tls = static.loss == "tls"
    # TLS always ends with its polishing; GM with it when gm_decision (its decision step)
    decide = tls or static.gm_decision
    opts = dict(static.solve_options)
    masks = {name: jnp.asarray(m.array) for name, m in static.masks}
    names = tuple(masks)
    c2 = params["thresholds"]
    keep = params["keep"]
    kept = {n: masks[n] & keep[n] for n in names}  # candidates that take part in the graduation
    one = {n: jnp.ones(m.shape, dtype) for n, m in masks.items()}
    start = {n: params["start"][n].astype(dtype) for n in names}

    def weighted_solve(x, w):
        x, info = solve(weighted_problem(problem, w), x, **opts)
        return x, info.iterations, info.cost

    def tls_scores(x, w, r2):
        # The TLS decision statistic of every candidate (see flip_scores), NaN-safe. A closure
        # the pre-filter left out is re-admitted on its residual at the map as it is, not on
        # the flip score: the flip score of a left-out factor, e^T (I + G)^-1 e <= r^2, says
        # the map could bend to fit it cheaply, which on weakly constrained maps (intel) is
        # true of some false closures; the pairwise test has already said it disagrees with
        # most closures. Once in, max(score, r^2) is the deleted residual again.
        sc = flip_scores(problem, x, w, names)
        sc = {n: jnp.where(jnp.isfinite(sc[n]), sc[n], r2[n]) for n in names}
        return {n: jnp.where(keep[n], sc[n], jnp.maximum(sc[n], r2[n])) for n in names}

    def cond(s):
        return s["running"]

    def body(s):
        # Trip 0 is the first solve (``initial_weights``); one traced solve serves every
        # trip (compile time).
        first = s["k"] == 0
        w = surrogate_weights(static.loss, s["r2"], s["mu"], c2, masks, dtype)
        # closures the pre-filter left out stay out until the final decisions
        w = {n: jnp.where(keep[n], w[n], 0.0).astype(dtype) for n in names}
        if decide:
            # Polishing (after the weights became binary, or GM converged): w = [score <= c^2],
            # the TLS decision for each factor given all the others (score: twice the change
            # of the optimal cost when the factor alone is switched; flip_scores). Re-admits
            # inliers a too-early decision (or the pre-filter) dropped and drops outliers the
            # map bent itself to fit.
            w = jax.tree_util.tree_map(lambda a, b: jnp.where(s["polish"], a, b),
                                       decision_weights(s["score"], s["c2_eff"], masks, dtype), w)
        w = jax.tree_util.tree_map(lambda a, b: jnp.where(first, a, b), start, w)
        x, it, cost = weighted_solve(s["x"], w)
        r2 = squared_residuals(problem, x, names)
        # mu from the candidates in the graduation; "nothing to do" only if every candidate fits
        mu_init, _ = initial_mu(static.loss, r2, c2, kept, static.start_from_known, dtype)
        mu_init = jnp.where(jnp.isfinite(mu_init), mu_init, jnp.ones((), dtype))
        _, trivial = initial_mu(static.loss, r2, c2, masks, static.start_from_known, dtype)
        k = s["k"] + 1
        prev = s["cost"]
        small = (k > 2) & (jnp.abs(cost - prev) <= params["cost_tolerance"] * jnp.maximum(jnp.abs(prev), 1e-30))
        near_binary = jnp.all(
            jnp.concatenate(
                [
                    jnp.where(masks[n], jnp.minimum(w[n], 1 - w[n]) <= params["weight_tolerance"], True)
                    for n in names
                ]
            )
        )
        if tls:
            # Done when the weights used are the TLS decisions at the new x; once they are
            # (nearly) binary or the cost stalls, polish with exactly those decisions.
            polish = s["polish"] | (~first & (near_binary | small))
        else:
            polish = s["polish"] | (~first & ((s["mu"] <= 1) | small) & static.gm_decision)
        if decide:
            score = jax.lax.cond(polish, lambda: tls_scores(x, w, r2), lambda: r2)
            # The polishing's threshold: c^2 lowered to tail_factor times the 0.99 quantile
            # of the accepted candidates' scores, fixed when polishing starts (re-estimated
            # after each rejection the quantile would only fall and take inliers along).
            fresh = polish & ~s["polish"]
            ratio = jnp.concatenate([jnp.where(masks[n] & (w[n] > 0.5), score[n] / c2[n], jnp.nan) for n in names])
            q99 = jnp.nanquantile(ratio, 0.99)
            # floor: scores of exactly 0 (noise-free data) must not make every candidate an outlier
            scale = jnp.where(jnp.isfinite(q99) & jnp.isfinite(params["tail_factor"]),
                              jnp.clip(params["tail_factor"] * q99, 0.01, 1.0), 1.0)
            c2_eff = {n: jnp.where(fresh, c2[n] * scale, s["c2_eff"][n]) for n in names}
            thr = decision_weights(score, c2_eff, masks, dtype)
            differs = jnp.concatenate([masks[n] & (w[n] != thr[n]) for n in names])
            consistent = ~jnp.any(differs)
            # Two polishing rounds that undo each other: the weights of the next round
            # would be those of the previous one; stop and say so (not converged).
            cycle = (s["polish"] & s["polish_prev"] & ~consistent
                     & jnp.all(jnp.concatenate([thr[n] == s["w_prev"][n] for n in names])))
            # TLS: binary weights that are their own decisions; GM: the weights used were
            # decisions (a polishing round) and reproduce themselves
            done = (~first & near_binary & consistent) if tls else (s["polish"] & consistent)
            # (not when candidates were left out of this problem: "every candidate" includes them)
            conditions, codes = [first & trivial & params["allow_trivial"], done, cycle], [4, 1 if tls else 6, 5]
            inconsistent = jnp.sum(differs).astype(jnp.int32)
        else:
            score = r2
            inconsistent = jnp.zeros((), jnp.int32)
            c2_eff = s["c2_eff"]
            conditions, codes = [first & trivial & params["allow_trivial"], ~first & (s["mu"] <= 1), small], [4, 2, 3]
        mu_next = s["mu"] * params["mu_step"] if tls else jnp.maximum(s["mu"] / params["mu_step"], 1.0)
        status = jnp.select(conditions, codes, 0).astype(jnp.int32)
        mu = jnp.where(first, mu_init, jnp.where(status == 0, mu_next, s["mu"]))
        return {
            "x": x,
            "r2": r2,
            "score": score,
            "w": w,
            "mu": mu,
            "k": k,
            "cost": cost,
            "ls_cost": jnp.where(first, cost, s["ls_cost"]),
            "inner": s["inner"] + it,
            "status": status,
            "running": (status == 0) & (k <= static.max_outer_iterations),
            "polish": polish,
            "polish_prev": s["polish"],
            "w_prev": w,
            "inconsistent": inconsistent,
            "c2_eff": c2_eff,
        }

    zero = jnp.zeros((), dtype)
    s0 = {
        "x": values,
        "r2": {n: jnp.zeros(m.shape, dtype) for n, m in masks.items()},
        "score": {n: jnp.zeros(m.shape, dtype) for n, m in masks.items()},
        "w": one,
        "mu": jnp.ones((), dtype),
        "k": jnp.zeros((), jnp.int32),
        "cost": zero,
        "ls_cost": zero,
        "inner": jnp.zeros((), jnp.int32),
        "status": jnp.zeros((), jnp.int32),
        "running": jnp.ones((), bool),
        "polish": params["polish"],
        "polish_prev": jnp.zeros((), bool),
        "w_prev": one,
        "inconsistent": jnp.zeros((), jnp.int32),
        "c2_eff": dict(params["c2_eff"]),
    }
    s = jax.lax.while_loop(cond, body, s0)
    weights = {g.name: s["w"][g.name] if g.name in masks else jnp.ones((g.count,), dtype) for g in problem.factors}
    num_in = sum(jnp.sum(masks[n] & (s["w"][n] > 0.5)) for n in names)
    info = GNCInfo(
        cost=s["cost"],
        first_cost=s["ls_cost"],
        mu=s["mu"],
        iterations=s["k"] - 1,
        inner_iterations=s["inner"],
        num_inliers=jnp.asarray(num_in, jnp.int32),
        num_candidates=jnp.asarray(sum(int(m.array.sum()) for _, m in static.masks), jnp.int32),
        converged=((s["status"] >= 1) & (s["status"] <= 4)) | (s["status"] == 6),
        status=s["status"],
        inconsistent=s["inconsistent"],
    )
    return s["x"], weights, info, s["c2_eff"]


# One compiled GNC per problem structure, mask and settings; a new process loads it from the
# executable cache without tracing (intel: about 3 s of tracing and lowering). Unoptimised by
# LLVM: its run is the sparse factorisations (custom calls), its compile was mostly LLVM
# (UNOPTIMISED_OPTIONS).
_gnc_jit = entry_point(_gnc, executable_cache=True, compiler_options=UNOPTIMISED_OPTIONS)
