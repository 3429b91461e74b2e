"""Pairwise consistency of loop closures along the odometry chain (PCM-style pre-filter for GNC).

Two loop closures ``p = (a -> b, Z_p)`` and ``q = (c -> d, Z_q)`` of a pose graph are
*consistent* when the cycle they close with the odometry chain (``a -> b`` by ``Z_p``,
``b -> d`` and ``c -> a`` by odometry, ``d -> c`` by ``Z_q^-1``) composes to nearly the
identity, measured by the Mahalanobis distance with the cycle's first-order covariance
(Mangelson et al., ICRA 2018, "Pairwise Consistent Measurement Set Maximization"; Kimera-RPGO
uses the same test before GNC). A set of true loop closures is pairwise consistent; a false
closure is consistent with a true one only by chance. PCM keeps a maximum clique of the
consistency graph; :func:`consistent_closures` keeps the closures consistent with a
quantile of the others, with the information matrices' variance factor estimated from the
data (its docstring says why).

How it is computed (all on the host, numpy, vectorised over closures and over pairs in chunks):

* dead reckoning ``X_k`` from the odometry chain (a prefix product, ``log2 n`` batched
  matrix products), and the world-frame accumulated odometry covariance
  ``P_k = sum_{m<k} Ad(X_{m+1}) Q_m Ad(X_{m+1})^T`` (``Q_m`` the covariance of step ``m``;
  a left perturbation ``eps_k`` of ``X_k`` is the sum of the steps' world-frame errors, so
  ``Cov(eps_x, eps_y) = P_min(x, y)``);
* each closure's world-frame discrepancy with dead reckoning ``T_p = X_a Z_p X_b^-1``; the
  cycle of ``p`` and ``q`` is ``X_a^-1 T_p T_q^-1 X_a``, so its error is
  ``e = Log(T_p T_q^-1)`` (world frame), with first-order perturbation
  ``(eps_a - eps_c) + Ad(T_p)(eps_d - eps_b)`` from odometry plus the two closures' noise
  ``Ad(X_a Z_p) eta_p`` and ``-Ad(T_p X_d) eta_q``; its covariance ``S`` follows from
  ``P`` at ``a, b, c, d`` and their pairwise minima (overlapping odometry segments cancel);
* ``p`` and ``q`` are consistent iff ``d^2 = e^T S^-1 e <= chi2_quantile(probability, dim)``.

Cost: ``O(K^2)`` for ``K`` closures (pairs in chunks of ``chunk``), measured in
``benchmarks/gnc.py`` (``prefilter_seconds``).
"""

from __future__ import annotations

from functools import partial

import jax.numpy as jnp
import numpy as np

from ..graph.factors import Between
from ..graph.problem import Problem
from ..runtime.compile_cache import UNOPTIMISED_OPTIONS, entry_point

__all__ = ["pairwise_consistency", "consistent_closures"]


def _np(x):
    return np.asarray(x, np.float64)


# The group maps below run as three compiled programs (per kind and shape), not as one eager
# program per map and array shape: a new process compiled 28 of those for one intel graph
# (1.6 s of a 2.1 s pre-filter; 0.5 s of numpy). They run once per pre-filter, on arrays of
# a few thousand rows, so LLVM's optimisation passes would cost more than they save.
_program = partial(entry_point, static_argnums=0, compiler_options=UNOPTIMISED_OPTIONS)


@_program
def _edge_terms(kind, measurement, noise):
    """Every factor's ``Z``, ``Z^-1``, ``Ad(Z)`` and information ``W^T W`` ``[M, dim, dim]``."""
    Z = kind.to_matrix(measurement)
    eye = jnp.eye(kind.tangent_dim, dtype=Z.dtype)
    W = noise.prepare().whiten_jacobian(jnp.broadcast_to(eye, (Z.shape[0],) + eye.shape))
    return Z, kind.inverse_matrix(Z), kind.adjoint(Z), jnp.swapaxes(W, -1, -2) @ W


@_program
def _closure_terms(kind, X, Zc, a, b):
    """``Ad(X_k)`` for k >= 1 and, per closure ``a -> b`` with measurement ``Zc``:
    ``X_a Z``, ``T = X_a Z X_b^-1``, ``Ad(X_a Z)``, ``Ad(X_b)``, ``T^-1``, ``Ad(T)``."""
    XaZ = X[a] @ Zc
    Xb = X[b]
    T = XaZ @ kind.inverse_matrix(Xb)
    return (kind.adjoint(X[1:]), T, kind.adjoint(XaZ), kind.adjoint(Xb), kind.inverse_matrix(T),
            kind.adjoint(T))


@_program
def _cycle_errors(kind, Tp, Tq_inv):
    """``Log(T_p T_q^-1)`` per pair ``[chunk, dim]``."""
    return kind.log(Tp @ Tq_inv)


def _prefix_products(steps):
    """``out[k] = steps[0] @ ... @ steps[k-1]`` (``out[0] = I``), ``[n, m, m]``, in log2 n
    rounds of batched products (Hillis-Steele scan)."""
    n1, m = steps.shape[0], steps.shape[-1]
    acc = steps.copy()
    shift = 1
    while shift < n1:
        nxt = acc.copy()
        nxt[shift:] = acc[:-shift] @ acc[shift:]
        acc, shift = nxt, 2 * shift
    return np.concatenate([np.eye(m)[None], acc], axis=0)


def pairwise_consistency(problem: Problem, *, group=None, probability: float = 0.99, chunk: int = 200_000,
                         known_inliers=None):
    """The consistency graph of a pose graph's loop closures.

    Args:
      problem: a pose graph: a between group (``group``, default: the first) on one
        Lie-group variable (SE2, SE3, ...) whose factors ``i -> i+1`` or ``i+1 -> i`` are the
        odometry chain.
      group: name of the between group; ``None``: the first between group.
      probability: a pair is consistent when its cycle's squared Mahalanobis distance is at
        most the chi-square quantile of this probability (dof: the tangent dimension).
      chunk: pairs evaluated per batch (memory: about ``chunk * 40 * dim^2`` bytes).
      known_inliers: optional ``bool [M]``: factors that are not closures to test (default:
        the odometry ``|i - j| = 1``).

    Returns:
      ``(closures, adjacency, d2)``: indices ``int [K]`` of the tested factors in the group,
      ``bool [K, K]`` consistency at the chi-square threshold (symmetric, True on the
      diagonal) and the squared distances ``float32 [K, K]`` (memory ``4 K^2`` bytes). Pairs whose cycle crosses a break of the odometry chain
      cannot be tested and count as consistent.
    """
    from .gnc_weights import chi2_quantile

    gs = [g for g in problem.factors if isinstance(g.type, Between) and (group is None or g.name == group)]
    if not gs:
        raise ValueError("pairwise_consistency: the problem has no between factor group")
    g = gs[0]
    var = g.variables[0]
    kind = problem.structure.kinds[var]
    if not getattr(kind, "is_group", False) or g.variables[1] != var:
        raise ValueError("pairwise_consistency: needs a between group on one Lie-group variable")
    n = next(v.count for v in problem.variables if v.name == var)
    dim = kind.tangent_dim
    idx = np.asarray(g.indices.array)
    i, j = idx[:, 0], idx[:, 1]
    odo = np.abs(i - j) == 1 if known_inliers is None else np.asarray(known_inliers, bool)
    Z, Zinv, AdZ, info = (_np(t) for t in _edge_terms(kind, g.measurement, g.noise))
    Sigma = np.linalg.inv(info)

    # odometry steps k -> k+1 (first factor per step; reversed factors inverted)
    m = Z.shape[-1]
    steps = np.broadcast_to(np.eye(m), (n - 1, m, m)).copy()
    Q = np.zeros((n - 1, dim, dim))
    have = np.zeros(n - 1, bool)
    chain = np.nonzero(odo & (np.abs(i - j) == 1))[0]
    fwd = chain[i[chain] < j[chain]][::-1]  # reversed, so the first factor per step writes last
    bwd = chain[i[chain] > j[chain]][::-1]
    if bwd.size:
        steps[j[bwd]] = Zinv[bwd]
        A = AdZ[bwd]  # (Z Exp(eta))^-1 = Z^-1 Exp(-Ad(Z) eta)
        Q[j[bwd]] = A @ Sigma[bwd] @ np.swapaxes(A, -1, -2)
        have[j[bwd]] = True
    if fwd.size:
        steps[i[fwd]] = Z[fwd]
        Q[i[fwd]] = Sigma[fwd]
        have[i[fwd]] = True
    X = _prefix_products(steps)  # [n, m, m]
    cl = np.nonzero(~odo)[0]
    a, b = i[cl], j[cl]
    A, T, Ad_aZ, Ad_b, Tinv, AdT = (_np(t) for t in _closure_terms(kind, X, Z[cl], a, b))
    C = A @ Q @ np.swapaxes(A, -1, -2)
    P = np.concatenate([np.zeros((1, dim, dim)), np.cumsum(C, axis=0)])
    brk = np.concatenate([[0], np.cumsum(~have)])  # breaks of the chain before pose k

    Np = Ad_aZ @ Sigma[cl] @ np.swapaxes(Ad_aZ, -1, -2)
    Mq = Ad_b @ Sigma[cl] @ np.swapaxes(Ad_b, -1, -2)  # q's noise before Ad(T_p): q's "d" is its b
    K = cl.size
    d2 = np.zeros((K, K), np.float32)
    pi, qi = np.triu_indices(K, 1)
    thr = chi2_quantile(probability, dim)
    width = max(1, min(chunk, pi.size))  # every chunk one shape: one compiled _cycle_errors
    for s in range(0, pi.size, chunk):
        p, q = pi[s:s + chunk], qi[s:s + chunk]
        pad = width - p.size  # the last chunk: pairs (0, 0), cut off again
        e = _np(_cycle_errors(kind, T[np.pad(p, (0, pad))], Tinv[np.pad(q, (0, pad))]))[: p.size]
        pa, pb, qc, qd = a[p], b[p], a[q], b[q]
        At = AdT[p]
        AtT = np.swapaxes(At, -1, -2)
        V1 = P[pa] + P[qc] - 2 * P[np.minimum(pa, qc)]
        V2 = P[qd] + P[pb] - 2 * P[np.minimum(qd, pb)]
        Xc = P[np.minimum(pa, qd)] - P[np.minimum(pa, pb)] - P[np.minimum(qc, qd)] + P[np.minimum(qc, pb)]
        S = V1 + Np[p] + At @ (V2 + Mq[q]) @ AtT + Xc @ AtT + At @ np.swapaxes(Xc, -1, -2)
        S = 0.5 * (S + np.swapaxes(S, -1, -2))
        val = np.einsum("ki,ki->k", e, np.linalg.solve(S, e[..., None])[..., 0])
        broken = (brk[pa] != brk[qc]) | (brk[pb] != brk[qd])
        d2[p, q] = d2[q, p] = np.where(broken, 0.0, val)
    return cl, d2 <= thr, d2


def consistent_closures(problem: Problem, *, group=None, quantile: float = 0.25, probability: float = 0.99,
                        known_inliers=None, chunk: int = 200_000):
    """Loop closures consistent with most others: ``(keep bool [M], closures int [K], r float64 [K])``.

    ``keep`` is over the between group (True for the odometry and for kept closures). A closure
    is kept when its ``quantile``-quantile squared cycle distance to the other closures, ``r``,
    is at most ``s chi2(probability) / chi2(quantile)``, with ``s`` the ``quantile``-quantile of
    ``r`` over all closures and ``chi2(.)`` the chi-square quantiles with the tangent
    dimension as dof. Why this rule and not the distances themselves or a clique:

    * the cycle test needs the variance factor of the information matrices, and real data
      sets do not have 1: intel's loop closures are conservative (true-true cycles have
      ``d^2`` about 0.002, so with the raw ``chi2(0.99)`` nearly 90 % of false-true pairs pass);
      for consistent cycles ``d^2 ~ sigma^2 chi2``, so ``s / chi2(quantile)`` estimates
      ``sigma^2`` (an over-estimate when some closures are false, which only makes the filter
      more lenient);
    * a true closure is consistent with the other true ones, so ``r`` is small while more
      than a fraction ``quantile`` of the closures are true (0.25: up to 75 % false
      closures); a false one is consistent with few closures, so its ``r`` is large;
    * a strict maximum clique drops every true closure with one heavy-tailed cycle (intel:
      a greedy clique at the rescaled threshold kept about 420 of 785 true closures);
      the per-closure quantile tolerates those.

    This is a pre-filter for :func:`jaxgraph.gnc` (it decides the start and which closures
    take part in the graduation); GNC's final decisions may re-admit a closure it dropped.
    Returns every closure kept when there are fewer than 4 closures.
    """
    from .gnc_weights import chi2_quantile

    g = next(g for g in problem.factors if isinstance(g.type, Between) and (group is None or g.name == group))
    cl, _, d2 = pairwise_consistency(problem, group=group, probability=probability, known_inliers=known_inliers,
                                     chunk=chunk)
    keep = np.ones(g.count, bool)
    if cl.size < 4:
        return keep, cl, np.zeros(cl.size)
    np.fill_diagonal(d2, np.nan)
    r = np.nanquantile(d2, quantile, axis=1)
    dim = problem.structure.kinds[g.variables[0]].tangent_dim
    tau = np.quantile(r, quantile) * chi2_quantile(probability, dim) / chi2_quantile(quantile, dim)
    keep[cl] = r <= tau
    return keep, cl, r
