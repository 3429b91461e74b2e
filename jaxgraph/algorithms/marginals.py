"""Marginal covariances of the variables at a point (the Laplace approximation).

``jaxgraph.marginals(problem, values)`` returns, for every variable group, the
``[count, t, t]`` covariances ``Sigma_i = (H^-1)_ii`` of the right-perturbation tangent
``X_i Exp(d_i)`` (``t`` = tangent dimension: SE2 ``(x, y, theta)``, SE3 ``(v, w)``:
translation first, as everywhere in the package).  ``H = J^T W J`` is the Gauss-Newton
information of all factors at ``values`` (robust losses enter with their IRLS weights),
the same matrix as GTSAM's ``Marginals``.

The diagonal blocks of ``H^-1`` come from the sparse supernodal Cholesky factor by
selected inversion (:func:`jaxgraph.linear.selected_inverse`): only the blocks of the inverse on
the factor's pattern are formed, at about the cost of one factorisation; never a dense
inverse.  Everything after the symbolic analysis (cached per problem structure) is
jit-compiled and works under ``jax.jit`` and ``jax.vmap``.

Fixed variables (``VariableGroup.fixed``, g2o ``FIX``, the solver's automatic anchor)
are known exactly: their covariance is zero, and every other covariance is conditional
on them.  A prior factor is information like any other factor (GTSAM's convention for
g2o files: pose 0 with sigma 1e-6).

A singular ``H`` (a component of the graph without prior or fixed variable, a variable
that no factor constrains in some direction) has no covariance: outside ``jit``,
:func:`marginals` raises a ``ValueError`` naming the unconstrained variables; under
``jit`` / ``vmap`` the covariances are NaN and :func:`marginals_with_info` reports
``singular``.  The test: a Cholesky pivot whose Schur complement is at most
``10 sqrt(n_unknowns) eps`` times its diagonal entry of ``H`` (or a pivot block that
broke down).
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import linear
from ..runtime.compile_cache import entry_point
from ..graph.problem import Problem, values_dtype

__all__ = ["marginals", "marginals_with_info", "MarginalsInfo", "report"]


class MarginalsInfo(NamedTuple):
    """``singular``: bool, shape ``[]``; ``H`` is numerically singular (covariances are NaN).

    ``min_pivot_ratio``: float, shape ``[]`` (the values' dtype), dimensionless; the smallest
    Cholesky pivot (Schur complement diagonal) divided by the matching diagonal entry of
    ``H``; near 0 means nearly unconstrained.
    Under ``vmap`` each field gains the batch axis (``[B]``).
    """

    singular: jax.Array
    min_pivot_ratio: jax.Array


def _selection(problem: Problem, variables) -> tuple:
    """Normalise ``variables`` to ``((group, (index, ...)), ...)`` (static, validated)."""
    groups = {v.name: v for v in problem.variables}
    if variables is None:
        return tuple((v.name, tuple(range(v.count))) for v in problem.variables)
    if not isinstance(variables, Mapping):
        raise TypeError("marginals: variables must be None or a dict group name -> indices "
                        f"(e.g. {{'poses': [0, 5]}}), got {type(variables).__name__}")
    out = []
    for name, idx in variables.items():
        if name not in groups:
            raise ValueError(f"marginals: unknown variable group {name!r}; groups: {sorted(groups)}")
        count = groups[name].count
        if idx is None:
            out.append((name, tuple(range(count))))
            continue
        arr = np.asarray(idx)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"marginals: variables[{name!r}] must be a 1-D list of integer indices, "
                             f"got {idx!r}")
        bad = arr[(arr < 0) | (arr >= count)]
        if bad.size:
            raise ValueError(f"marginals: variables[{name!r}] index {int(bad[0])} out of range "
                             f"({count} variables)")
        out.append((name, tuple(int(i) for i in arr)))
    return tuple(out)


class _Marginals(NamedTuple):
    """The one result of a marginals computation (every public form is a view of it).

    ``covariances``: dict group -> ``[k, t, t]`` (NaN everywhere when ``singular``);
    ``info``: :class:`MarginalsInfo`; ``collapsed``: bool ``[n]``, per variable block
    whether its pivot ratio is at the singularity tolerance (names the variables in the
    error message).
    """

    covariances: dict
    info: MarginalsInfo
    collapsed: jax.Array


@entry_point
def _marginals_jit(problem, values) -> _Marginals:
    """Every variable's covariance at ``values`` (dict group -> ``[count, param_dim]``)."""
    dtype = values_dtype(values)
    st = problem.structure
    n, d = st.num_blocks, st.block_dim
    lin = problem.prepared(dtype).linearize(values)
    plan = linear.selected_inverse_plan(n, d, st.off_rows, st.off_cols)
    # every d x d block of every variable's t x t covariance: b x b pairs of its own blocks
    rows, cols = [], []
    for v in problem.variables:
        blocks = st.variable_blocks(v.name, np.arange(v.count))  # [count, b]
        rows.append(np.repeat(blocks, blocks.shape[1], axis=1).reshape(-1))
        cols.append(np.tile(blocks, (1, blocks.shape[1])).reshape(-1))
    S, sinfo = linear.selected_inverse(plan, lin.diag, lin.offdiag, pairs=(np.concatenate(rows), np.concatenate(cols)))
    ratio = jnp.min(sinfo.pivot_ratio)
    # round-off leaves an exactly dependent direction a pivot of a few eps (growing slowly with
    # the size); genuine pivots of pose graphs stay far above (intel: 5.3e-4 of H_kk)
    tol = 10 * np.sqrt(n * d) * jnp.finfo(dtype).eps
    singular = sinfo.clamped | ~(ratio > tol)
    out, start = {}, 0
    for v in problem.variables:
        name, t, b = v.name, st.kinds[v.name].tangent_dim, st.blocks_per[v.name]
        stop = start + v.count * b * b
        cov = jnp.swapaxes(S[start:stop].reshape(v.count, b, b, d, d), 2, 3).reshape(v.count, t, t)
        start = stop
        free = st.free_blocks[st.offsets[name]:st.offsets[name] + v.count * b:b]
        if not free.all():
            cov = cov * jnp.asarray(free, dtype)[:, None, None]
        singular = singular | ~jnp.all(jnp.isfinite(cov))
        out[name] = cov
    out = {k: jnp.where(singular, jnp.nan, v) for k, v in out.items()}
    return _Marginals(out, MarginalsInfo(singular=singular, min_pivot_ratio=ratio), sinfo.pivot_ratio <= tol)


def _run(problem: Problem, values, variables) -> _Marginals:
    """Validated inputs, the compiled computation, then the ``variables`` selection."""
    if not isinstance(problem, Problem):
        raise TypeError(f"marginals: problem must be a jaxgraph.Problem, got {type(problem).__name__}")
    problem.check_values(values)
    selection = _selection(problem, variables)
    dtype = values_dtype(values)
    values = {k: jnp.asarray(v, dtype) for k, v in values.items()}
    # one compiled program per problem structure: subsets are taken from the full result
    full = _marginals_jit(problem, values)
    counts = {v.name: v.count for v in problem.variables}
    out = {}
    for name, idx in selection:
        cov = full.covariances[name]
        out[name] = cov if idx == tuple(range(counts[name])) else cov[np.asarray(idx, dtype=np.int64)]
    return full._replace(covariances=out)


def marginals_with_info(problem: Problem, values, variables=None):
    """Like :func:`marginals` but never raises for a singular system; returns ``(covs, info)``.

    ``info`` is a :class:`MarginalsInfo`; use this form under ``jit`` / ``vmap``.
    """
    result = _run(problem, values, variables)
    return result.covariances, result.info


def marginals(problem: Problem, values, variables: Mapping[str, Sequence[int]] | None = None) -> dict:
    """Marginal covariances ``{group name: [k, t, t]}`` at ``values``.

    Args:
      problem: a :class:`jaxgraph.Problem`.
      values: dict ``group -> [count, param_dim]`` (usually the solver's output); the
        dtype of the computation.
      variables: ``None`` (every variable of every group) or a dict ``group -> indices``
        (static), e.g. ``{"poses": [0, 5]}``; only those groups and rows are returned,
        in the given order.
    Returns:
      dict ``group -> [k, t, t]``: covariance of the right-perturbation tangent of each
      selected variable (SE3: translation first); zero for fixed variables.
    Raises:
      ValueError outside ``jit`` when ``H`` is singular, naming the unconstrained
      variables.  Under ``jit`` / ``vmap`` a singular system gives NaN covariances (see
      :func:`marginals_with_info` for the flag).
    """
    result = _run(problem, values, variables)
    info = result.info
    if not isinstance(info.singular, jax.core.Tracer) and np.any(np.asarray(info.singular)):
        collapsed = np.asarray(result.collapsed).reshape(-1, problem.structure.num_blocks).any(axis=0)
        raise ValueError(_singular_message(problem, float(np.min(np.asarray(info.min_pivot_ratio))),
                                           np.nonzero(collapsed)[0]))
    return result.covariances


# ----------------------------------------------------------------------------------
# Naming the unconstrained variables (outside jit, only on the error path)
# ----------------------------------------------------------------------------------
def _names(problem: Problem, ids: np.ndarray, limit: int = 12) -> str:
    st = problem.structure
    parts = []
    for name, local in st.block_variable(ids):
        if not local.size:
            continue
        runs = np.split(local, np.nonzero(np.diff(local) != 1)[0] + 1)
        for r in runs:
            parts.append(f"{name}[{r[0]}]" if r.size == 1 else f"{name}[{r[0]}..{r[-1]}]")
    more = f" and {len(parts) - limit} more ranges" if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more


def _unanchored(problem: Problem) -> np.ndarray:
    """Variables in graph components without a unary factor (prior) or fixed variable."""
    st = problem.structure
    parent = np.arange(st.num_blocks)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(st.off_rows.tolist(), st.off_cols.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    roots = np.array([find(i) for i in range(st.num_blocks)])
    anchored = set(roots[~st.free_blocks].tolist())
    for gs in st.groups:
        if gs.global_index.shape[1] == 1:
            anchored |= set(roots[gs.global_index[:, 0]].tolist())
    return np.nonzero(~np.isin(roots, list(anchored)))[0]


def _singular_message(problem: Problem, ratio: float, collapsed: np.ndarray) -> str:
    loose = _unanchored(problem)
    if loose.size:
        what = (f"unconstrained variables (graph components without a prior or fixed variable, "
                f"free to move as a whole): {_names(problem, loose)}")
    else:
        what = ("every component has a prior or a fixed variable, so some variable is "
                "unconstrained in a direction (degenerate geometry or zero information): "
                f"{_names(problem, collapsed) or 'none identified (check for NaN in values)'}")
    return (f"marginals: the information matrix H is singular at these values (smallest Cholesky "
            f"pivot ratio {ratio:.3g}); {what}. Add a prior or fix a variable.")



def report(problem: Problem, values) -> dict:
    """JSON-ready marginals (the CLI's ``--marginals``): per group its kind, tangent order and covariances."""
    covs = marginals(problem, values)
    kinds = problem.structure.kinds
    return {name: {"kind": kinds[name].name, "tangent": list(kinds[name].tangent_names),
                   "covariances": np.asarray(c, dtype=np.float64).tolist()} for name, c in covs.items()}
