"""The normal equations of a problem at a point: whitened, robust-reweighted residuals and
Jacobians per factor group, their products summed into blocks (``H = J^T W J``,
``g = J^T W e``), and the total cost."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._log_rule import log_and_jinv
from .factors import MatrixFactor

__all__ = ["Linearization", "values_dtype", "group_terms", "linearize", "total_cost", "zero_linearization"]


class Linearization:
    """Normal equations ``H dx = -g`` at a point, as blocks (see :mod:`jaxgraph.linear`).

    ``diag[N, d, d]``, ``offdiag[K, d, d]`` (``H[rows[k], cols[k]]``, static rows/cols in the
    problem structure), ``gradient[N, d]`` (``J^T W e``) and the total ``cost``.
    """

    def __init__(self, cost, diag, offdiag, gradient):
        self.cost, self.diag, self.offdiag, self.gradient = cost, diag, offdiag, gradient


jax.tree_util.register_pytree_node(
    Linearization,
    lambda L: ((L.cost, L.diag, L.offdiag, L.gradient), None),
    lambda aux, c: Linearization(*c),
)


def _mask(x, dtype):
    """``x`` as a 0/1 float array, or ``None`` when it is a constant all-true mask."""
    if isinstance(x, np.ndarray) and x.all():
        return None
    return jnp.asarray(x).astype(dtype)


def _tdot(A, B):
    """``A^T B`` over the last two axes, ``[..., r, i] x [..., r, j] -> [..., i, j]``: a
    broadcast product summed over ``r`` in float64 for ``r > 3``, unrolled over ``r``
    otherwise (see smallmat.matmul: the float32 reduction is as slow as a float32 batched
    dot; in float64 the unrolled sum of a 2-row reprojection Jacobian's 9 x 9 products took
    3.8 ms for 33,511 factors against 7.7 ms for the reduction)."""
    if jnp.result_type(A, B) == jnp.float64 and A.shape[-2] > 3:
        return jnp.sum(A[..., :, :, None] * B[..., :, None, :], axis=-3)
    out = A[..., 0, :, None] * B[..., 0, None, :]
    for r in range(1, A.shape[-2]):
        out = out + A[..., r, :, None] * B[..., r, None, :]
    return out




def values_dtype(values):
    """The float dtype of a values dict (``float32`` for an empty one)."""
    leaves = jax.tree_util.tree_leaves(values)
    return jnp.result_type(*leaves) if leaves else jnp.float32


def group_terms(problem, k: int, values, with_jacobians: bool, unwhitened=None):
    """``(r, e, J, costs)`` of factor group ``k`` at ``values``: unwhitened residuals
    ``r[M, rdim]``, whitened and robust-reweighted residuals ``e = sqrt(w) W r``, their
    Jacobians per slot (``[M, rdim, tangent_dim]`` each, ``None`` without
    ``with_jacobians``) and the costs ``rho`` per factor ``[M]`` (padded factors of a sized
    problem: zero). Call on a prepared problem (:meth:`Problem.prepared`).

    ``unwhitened``: the group's ``(r, J)`` when already computed (see :func:`linearize`).
    """
    st = problem.structure
    g = problem.factors[k]
    idx = problem.index_data()
    if unwhitened is not None:
        r, J = unwhitened
    else:
        local = idx.local_index[k]
        kinds = [st.kinds[v] for v in g.variables]
        params = [values[v][local[:, a]] for a, v in enumerate(g.variables)]
        r, J = g.type.residual_and_jacobians(g, kinds, params, with_jacobians)
    e = r if g.noise is None else g.noise.whiten(r)
    if J is not None and g.noise is not None:
        J = tuple(g.noise.whiten_jacobian(Ja) for Ja in J)
    valid = _mask(idx.valid[k], e.dtype)
    if valid is not None:  # padded factors of a sized problem: no residual, no cost
        e = e * valid[:, None]
    s2 = jnp.sum(e * e, axis=-1)
    if g.robust is None:
        costs = 0.5 * s2
    else:
        pos = s2 > 0
        s = jnp.where(pos, jnp.sqrt(jnp.where(pos, s2, 1)), 0)
        costs = g.robust.rho(s)
        sw = jnp.sqrt(g.robust.weight(s))
        e = e * sw[:, None]
        if J is not None:
            J = tuple(Ja * sw[:, None, None] for Ja in J)
    return r, e, J, costs


def total_cost(problem, values) -> jax.Array:
    """``sum_f rho_f`` over every factor (call on a prepared problem)."""
    total = jnp.zeros((), values_dtype(values))
    for k in range(len(problem.factors)):
        total = total + jnp.sum(group_terms(problem, k, values, False)[3])
    return total


def linearize(problem, values, accumulate=None) -> Linearization:
    """Gauss-Newton normal equations at ``values`` (call on a prepared problem).

    ``accumulate``: dtype of the result (default: the values' dtype). Residuals and
    Jacobians are computed in the values' dtype and widened before their products
    and sums are formed, so float32 Jacobians give an H that is positive
    semi-definite to float64 precision. Blocks are ``d x d`` with ``d`` the structure's
    block size (see :mod:`jaxgraph.graph.structure`): a variable of tangent size ``t``
    fills ``t / d`` diagonal blocks and the off-diagonal blocks between them.
    """
    st = problem.structure
    idx = problem.index_data()
    d = st.block_dim
    dtype = values_dtype(values)
    acc = dtype if accumulate is None else jnp.dtype(accumulate)
    cost = jnp.zeros((), acc)
    # per variable group: the [M, t, t] / [M, t] contributions of every slot on it, and their rows
    hess = {v.name: [] for v in st.variables}
    grad = {v.name: [] for v in st.variables}
    rows = {v.name: [] for v in st.variables}
    off_parts = []
    unwhitened = _matrix_factor_terms(problem, values)
    for k, g in enumerate(problem.factors):
        _, e, J, costs = group_terms(problem, k, values, True, unwhitened.get(k))
        e, costs = e.astype(acc), costs.astype(acc)
        cost = cost + jnp.sum(costs)
        masked = []
        for a, Ja in enumerate(J):
            free = _mask(idx.slot_free[k][:, a], dtype)
            if free is not None:  # fixed variables (and padded factors) get no step
                Ja = Ja * free[:, None, None]
            masked.append(Ja.astype(acc))
        if len(set(g.variables)) == 1 and len({Ja.shape[-1] for Ja in masked}) == 1:
            # slots of one group: one product over the stacked slots [M, k, r, t]
            Js = jnp.stack(masked, 1)
            t = masked[0].shape[-1]
            hess[g.variables[0]].append(_tdot(Js, Js).reshape(-1, t, t))
            grad[g.variables[0]].append(_tdot(Js, e[:, None, :, None]).reshape(-1, t))
            rows[g.variables[0]].append(jnp.asarray(idx.local_index[k]).reshape(-1))
        else:
            for a, Ja in enumerate(masked):
                v = g.variables[a]
                hess[v].append(_tdot(Ja, Ja))
                grad[v].append(_tdot(Ja, e[:, :, None])[..., 0])
                rows[v].append(jnp.asarray(idx.local_index[k][:, a]))
        # J^T J and J^T e as broadcast products summed over r, not as batched dots:
        # XLA:CPU runs a dot per tiny (r x d) matrix, elementwise fusions vectorise
        for a, b in st.slot_pairs(k):
            off_parts.append(_split_blocks(_tdot(masked[a], masked[b]), d).reshape(-1, d, d))
    diag_parts, grad_parts, intra_parts = [], [], []
    for v in st.variables:
        t = st.kinds[v.name].tangent_dim
        if hess[v.name]:
            # H and g of a group in one segment sum over [rows, t, t + 1]: XLA:CPU expands each
            # scatter into a loop compiled as a kernel of its own
            ids = jnp.concatenate(rows[v.name])
            HG = jnp.concatenate([jnp.concatenate(hess[v.name]), jnp.concatenate(grad[v.name])[..., None]], -1)
            HG = jax.ops.segment_sum(HG, ids, num_segments=v.count)
            H, G = HG[..., :t], HG[..., t]
        else:
            H, G = jnp.zeros((v.count, t, t), acc), jnp.zeros((v.count, t), acc)
        grad_parts.append(G.reshape(-1, d))
        if t == d:  # one block per variable
            diag_parts.append(H)
            continue
        blocks = _split_blocks(H, d)  # [count, b, b, d, d]
        b = t // d
        diag_parts.append(blocks[:, np.arange(b), np.arange(b)].reshape(-1, d, d))
        s, u = st.intra_pairs(v.name)
        intra_parts.append(blocks[:, s, u].reshape(-1, d, d))
    diag = jnp.concatenate(diag_parts)
    diag = diag + jnp.asarray(idx.pad_diag).astype(acc)[:, :, None] * jnp.eye(d, dtype=acc)
    gradient = jnp.concatenate(grad_parts)
    off = off_parts + intra_parts
    off = jnp.concatenate(off) if off else jnp.zeros((0, d, d), acc)
    return Linearization(cost, diag, off, gradient)


def _split_blocks(A, d: int):
    """``[..., t, u]`` -> ``[..., t/d, u/d, d, d]``: the ``d x d`` blocks of a matrix."""
    *lead, t, u = A.shape
    return jnp.swapaxes(A.reshape(*lead, t // d, d, u // d, d), -3, -2)


def _matrix_factor_terms(problem, values) -> dict:
    """``k -> (r, J)`` of the :class:`~jaxgraph.graph.factors.MatrixFactor` groups (between,
    prior), with one ``log`` and one right-Jacobian inverse per variable kind over all of them:
    each is a large piece of compiled code, and a prior group of one factor compiled its own
    copy (0.3-0.5 s of XLA time in a 3D solve)."""
    st, idx = problem.structure, problem.index_data()
    matrices, by_kind = {}, {}
    for k, g in enumerate(problem.factors):
        if not isinstance(g.type, MatrixFactor):
            continue
        kind = st.kinds[g.variables[0]]
        if g.variables[0] not in matrices:  # each group's matrices once, shared by its factor groups
            matrices[g.variables[0]] = kind.to_matrix(values[g.variables[0]])
        params = [matrices[v][idx.local_index[k][:, a]] for a, v in enumerate(g.variables)]
        E, context = g.type.error(g, kind, params)
        by_kind.setdefault(kind, []).append((k, g, E, context))
    out = {}
    for kind, items in by_kind.items():
        # the derivative in Lie form (see _log_rule): reverse mode through the linearisation
        # does not transpose the matrix logarithm
        r, Jinv = log_and_jinv(kind, jnp.concatenate([E for _, _, E, _ in items]))
        start = 0
        for k, g, E, context in items:
            stop = start + E.shape[0]
            out[k] = (r[start:stop], g.type.jacobians(g, kind, context, Jinv[start:stop]))
            start = stop
    return out


def zero_linearization(problem, dtype) -> Linearization:
    """A :class:`Linearization` of zeros with the shapes :func:`linearize` returns (known from
    the structure, so no second trace of the linearisation is needed)."""
    st = problem.structure
    d, n = st.block_dim, st.num_blocks
    return Linearization(jnp.zeros((), dtype), jnp.zeros((n, d, d), dtype),
                         jnp.zeros((st.num_offdiag, d, d), dtype), jnp.zeros((n, d), dtype))
