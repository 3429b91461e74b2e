"""GNC's weights and decisions: which factors are candidates, the surrogate weights, the TLS
decision statistic (flip scores) and the weighted problem they define.

The outer loop that uses them is :mod:`jaxgraph.algorithms.gnc` (its module docstring
states the rules; ``c2`` below is the threshold ``c^2`` per candidate group, ``r2`` the
squared whitened residual norms ``[M]`` per group, ``masks`` the candidate masks
``bool [M]`` per group, all dicts keyed by group name).
"""

from __future__ import annotations

from functools import partial
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from .. import linear, smallmat
from ..graph.factors import Between, Prior
from ..graph.problem import Problem
from ..graph.robust import RobustLoss
from .serial_lapack import chained

__all__ = [
    "candidate_masks", "chi2_quantile", "decision_weights", "flip_scores", "initial_mu",
    "squared_residuals", "surrogate_weights", "weighted_problem",
]


@jax.tree_util.register_pytree_node_class
class _Weight(RobustLoss):
    """Fixed per-factor weight ``k``: ``rho(s) = k s^2 / 2``, IRLS weight ``k``."""

    def rho(self, s):
        return 0.5 * self._k(s) * s * s

    def weight(self, s):
        return jnp.broadcast_to(self._k(s), jnp.shape(s))


def chi2_quantile(probability: float, dof: int) -> float:
    """Quantile of the chi-square distribution with ``dof`` degrees of freedom: ``2 P^-1(dof/2,
    probability)``, ``P`` the regularised lower incomplete gamma function (scipy's inverse, on
    the host; a bisection on JAX's ``gammainc`` dispatched about 100 eager programs a call)."""
    from scipy.special import gammaincinv

    if not 0.0 < probability < 1.0:
        raise ValueError(f"chi2_quantile: probability must be in (0, 1), got {probability}")
    return float(2.0 * gammaincinv(0.5 * dof, probability))


def candidate_masks(problem: Problem, known_inliers="odometry") -> dict:
    """Which factors GNC may reject: dict ``group name -> bool[M]``.

    ``known_inliers``: ``"odometry"`` (default: priors and between factors ``i -> i+1`` or
    ``i+1 -> i`` are trusted, every other factor is a candidate), ``"none"`` (every factor
    is a candidate), or a dict ``group name -> bool[M]`` of trusted factors (groups not in
    it are all candidates).
    """
    out = {}
    for g in problem.factors:
        if isinstance(known_inliers, Mapping):
            trusted = np.asarray(known_inliers.get(g.name, np.zeros(g.count, bool)), bool)
            if trusted.shape != (g.count,):
                raise ValueError(
                    f"gnc: known_inliers[{g.name!r}] must have shape ({g.count},), got {trusted.shape}"
                )
            out[g.name] = ~trusted
        elif known_inliers == "odometry":
            if isinstance(g.type, Prior):
                out[g.name] = np.zeros(g.count, bool)
            elif isinstance(g.type, Between):
                idx = g.indices.array
                out[g.name] = np.abs(idx[:, 0] - idx[:, 1]) != 1
            else:
                out[g.name] = np.ones(g.count, bool)
        elif known_inliers == "none":
            out[g.name] = np.ones(g.count, bool)
        else:
            raise ValueError(f"gnc: known_inliers must be 'odometry', 'none' or a dict, got {known_inliers!r}")
    return out


def weighted_problem(problem: Problem, weights: dict) -> Problem:
    """The problem with fixed per-factor weights: dict ``group name -> [M]`` (e.g. from
    :func:`jaxgraph.gnc`); a weighted factor's cost is ``w |W r|^2 / 2``. Groups not in
    ``weights`` are unchanged; weighted groups must not have a robust loss."""
    children, aux = problem.tree_flatten()
    fs = [g.replace(robust=_Weight(weights[g.name])) if g.name in weights else g for g in children[0]]
    return Problem.tree_unflatten(aux, (tuple(fs),) + tuple(children[1:]))


def squared_residuals(problem: Problem, values, names) -> dict:
    """``r^2 [M]`` per group in ``names`` (candidate groups carry no robust loss, so their
    factor cost is ``r^2 / 2``)."""
    return {name: 2.0 * problem.factor_costs(values, name) for name in names}


def initial_mu(loss: str, r2, c2, masks, start_from_known: bool, dtype):
    """GNC's first ``mu`` from the residuals of the first solve; returns ``(mu [], trivial [])``.

    ``trivial``: every candidate residual is already within the threshold (TLS: below
    ``c^2 / 2``; GM: ``r^2 <= c^2 / 2``), so no surrogate is needed.
    """
    names = tuple(masks)
    if loss == "tls":
        # mu0 = c^2 / (2 r_max^2 - c^2) over candidates whose residual exceeds c^2 / 2.
        excess = {n: jnp.where(masks[n], 2 * r2[n] - c2[n], -1.0) for n in names}
        mu_each = jnp.concatenate(
            [jnp.where(excess[n] > 0, c2[n] / jnp.where(excess[n] > 0, excess[n], 1.0), jnp.inf) for n in names]
        )
        trivial = ~jnp.isfinite(jnp.min(mu_each))
        mu0 = jnp.maximum(jnp.min(mu_each), 1e-6)
    else:
        ratio = jnp.concatenate([jnp.where(masks[n], 2 * r2[n] / c2[n], jnp.nan) for n in names])
        trivial = jnp.nanmax(ratio) <= 1
        if start_from_known:
            # From the known inliers alone the false candidates keep their full (huge)
            # residuals, so the paper's max would make the first surrogate plain least
            # squares and throw that start away; the median is a robust scale.
            mu0 = jnp.maximum(jnp.nanmedian(ratio), 1.0)
        else:
            mu0 = jnp.nanmax(ratio)
    return jnp.where(trivial, jnp.ones((), dtype), mu0).astype(dtype), trivial


def surrogate_weights(loss: str, r2, mu, c2, masks, dtype) -> dict:
    """Black-Rangarajan weights ``[M]`` (dtype ``dtype``) of the surrogate at ``mu``; 1 for
    known inliers."""
    w = {}
    for n in masks:
        if loss == "tls":
            lo, hi = mu / (mu + 1) * c2[n], (mu + 1) / mu * c2[n]
            mid = jnp.sqrt(c2[n] * mu * (mu + 1) / jnp.maximum(r2[n], 1e-30)) - mu
            wn = jnp.where(r2[n] >= hi, 0.0, jnp.where(r2[n] <= lo, 1.0, mid))
        else:
            wn = (mu * c2[n] / (r2[n] + mu * c2[n])) ** 2
        w[n] = jnp.where(masks[n], jnp.clip(wn, 0.0, 1.0), 1.0).astype(dtype)
    return w


def decision_weights(score, c2, masks, dtype) -> dict:
    """The TLS decision ``w = [score <= c^2]`` per candidate (1 for known inliers)."""
    return {n: jnp.where(masks[n] & (score[n] > c2[n]), 0.0, 1.0).astype(dtype) for n in masks}


def _variable_blocks(problem: Problem, g):
    """Static: global block ids ``[M, b_a]`` of each variable slot of factor group ``g``."""
    st = problem.structure
    return [st.variable_blocks(v, g.indices.array[:, a]) for a, v in enumerate(g.variables)]


def flip_scores(problem: Problem, x, w, names) -> dict:
    """TLS decision statistic ``s_k`` ``[M]`` of every candidate factor at ``x`` under weights ``w``.

    ``s_k / 2`` is the increase of the optimal (Gauss-Newton, linearised at ``x``) weighted
    cost when factor ``k`` enters with weight 1 compared with leaving it out, all other
    weights fixed; TLS keeps the factor iff ``s_k <= c^2`` (its truncated cost is ``c^2 / 2``).
    With ``e`` the whitened residual, ``J`` its whitened Jacobian, ``Sigma = H^-1`` the
    inverse information of the weighted problem and ``G = J Sigma J^T`` (the factor's
    leverage):

        s_k = e^T [(I + (1 - w_k) G) (I - w_k G)]^-1 e,

    i.e. ``e^T (I - G)^-1 e`` for an accepted factor (the residual it would have without
    it: the deleted residual, Baarda's data-snooping statistic) and ``e^T (I + G)^-1 e``
    for a rejected one. ``s_k = r^2`` when the factor cannot move the solution (``G = 0``);
    a factor the map bends to fit (large ``G``) gets ``s_k >> r^2``. The ``Sigma`` blocks
    come from one sparse Cholesky factorisation and its selected inversion
    (:func:`jaxgraph.linear.selected_inverse`, as :func:`jaxgraph.marginals`). NaN where
    ``H`` is singular. ``names``: static tuple of candidate group names; ``w``: dict
    ``name -> [M]`` weights (x's dtype).
    """
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(x))
    st = problem.structure
    lin = weighted_problem(problem, w).prepared(dtype).linearize(x)
    # one request for the blocks Sigma[v_a, v_b] of every slot pair (a, b) of every group
    groups = {n: problem.group(n) for n in names}
    ids = {n: _variable_blocks(problem, g) for n, g in groups.items()}
    pairs = [(n, a, b) for n in names for a in range(len(ids[n])) for b in range(len(ids[n]))]
    # per pair, every sub-block pair of the two variables: [M, b_a, b_b] (factor-major)
    rows = np.concatenate([np.repeat(ids[n][a], ids[n][b].shape[1], axis=1).reshape(-1) for n, a, b in pairs])
    cols = np.concatenate([np.tile(ids[n][b], (1, ids[n][a].shape[1])).reshape(-1) for n, a, b in pairs])
    plan = linear.selected_inverse_plan(st.num_blocks, st.block_dim, st.off_rows, st.off_cols)
    # chained: the selected inversion's two triangular solves per step must not run side by
    # side (jaxlib's batched LAPACK kernels deadlock XLA:CPU's pool; serial_lapack's docstring)
    sigma, sinfo = chained(partial(linear.selected_inverse, plan, pairs=(rows, cols)))(lin.diag, lin.offdiag)
    start = np.cumsum([0] + [ids[n][a].size * ids[n][b].shape[1] for n, a, b in pairs])
    free = jnp.asarray(st.free_blocks, dtype)
    d = st.block_dim
    prepared = problem.prepared(dtype)
    out = {}
    for n in names:
        k = next(i for i, g in enumerate(problem.factors) if g.name == n)
        _, e, J, _ = prepared.terms(k, x, True)
        G = jnp.zeros(e.shape + e.shape[-1:], dtype)
        for p, (pn, a, b) in enumerate(pairs):
            if pn != n:
                continue
            ta, tb = J[a].shape[-1], J[b].shape[-1]
            S = sigma[start[p]:start[p + 1]].reshape(-1, ta // d, tb // d, d, d)
            S = jnp.swapaxes(S, 2, 3).reshape(-1, ta, tb)
            S = S * (free[ids[n][a][:, 0]] * free[ids[n][b][:, 0]])[:, None, None]
            G = G + jnp.einsum("mri,mij,msj->mrs", J[a], S, J[b])
        G = 0.5 * (G + jnp.swapaxes(G, -1, -2))
        wk = jnp.clip(w[n], 0.0, 1.0)[:, None, None]
        eye = jnp.eye(G.shape[-1], dtype=dtype)
        # M = (I + (1 - w) G)(I - w G): the two factors commute (polynomials in G), so M is
        # symmetric, and positive definite since G's eigenvalues lie in [0, 1]. The 1e-9
        # floor keeps M invertible where the factor alone fixes a direction (eigenvalue 1
        # of G; its residual is ~0 there). Unrolled Cholesky, not eigh or LAPACK: see
        # jaxgraph.smallmat (batched LAPACK kernels running side by side can hang XLA:CPU).
        M = (eye + (1 - wk) * G) @ (eye - wk * G)
        M = 0.5 * (M + jnp.swapaxes(M, -1, -2)) + 1e-9 * eye
        y = smallmat.forward_substitution(smallmat.cholesky(M), e)
        sc = jnp.sum(y * y, axis=-1)
        out[n] = jnp.where(sinfo.clamped, jnp.nan, sc)
    return out
