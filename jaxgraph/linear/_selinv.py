"""Selected inversion of the supernodal Cholesky factor (Takahashi recurrences).

For ``H = L L^T`` the inverse ``S = H^-1`` restricted to the sparsity pattern of ``L``
is computed from the root of the elimination tree down, never forming the dense
inverse.  For a supernode with pivot columns ``C`` and row structure ``R``
(``L[C, C] = L11``, ``L[R, C] = L21``), let ``W = L21 L11^-1``; then

    S[R, C] = -S[R, R] W
    S[C, C] = L11^-T L11^-1 - W^T S[R, C]

``S[R, R]`` lies inside the pattern (``R`` is a clique of the filled graph, all of
its columns belong to ancestor supernodes), so it is gathered from blocks computed
earlier.  The cost is of the order of one numeric factorisation.

Storage mirrors ``_numeric.cholesky_factor``: every front keeps the block columns
``S[C u R, C]`` (``[m, a]`` blocks of ``d x d``) in a per-tier buffer; block
``S[y, x]`` with ``x`` earlier in the elimination order lives in the front that owns
column ``x``.  The gather maps (which stored block, transposed or not, feeds each
``S[R, R]`` entry) are static numpy arrays built once per structure by
:func:`plan_selected_inverse` from the tiers' ``col_idx`` / ``row_idx`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from jax import lax


@dataclass(frozen=True, eq=False)
class TierPlan:
    """Gather maps of one tier (``steps`` steps of ``batch`` fronts, ``a + r`` blocks each).

    ``srcs``: ``((buffer, src [steps, K], trans [steps, K]), ...)``: block index in
    the Sigma buffer of tier ``buffer`` (pad: its zero slot) and whether the block is
    transposed.  ``dst [steps, sum K]``: flat index into the step's ``[batch, r, r]``
    blocks of ``S[R, R]`` (pad: a dummy slot).
    """

    srcs: tuple
    dst: np.ndarray
    size: int  # blocks in this tier's Sigma buffer, zero slot included


@dataclass(frozen=True, eq=False)
class SelinvPlan:
    tiers: tuple  # TierPlan per factor tier


def _front_maps(tiers, n: int):
    """Where every variable sits in every front (numpy, static).

    Returns ``(owner_front, owner_pos, lookup, block_index, tier_of_front)`` (global front
    ids number the fronts tier by tier, step by step): ``owner_front[v]`` /
    ``owner_pos[v]``: the front owning column ``v`` and ``v``'s position in it;
    ``lookup(front, var) -> (found, pos)``: ``var``'s block position in the front's
    ``C u R``; ``block_index(front, row_pos, col_pos)``: index of that block in its
    tier's Sigma buffer.
    """
    front_off = np.cumsum([0] + [T.steps * T.batch for T in tiers])
    owner_front = np.full(n, -1, dtype=np.int64)
    owner_pos = np.zeros(n, dtype=np.int64)
    keys, pos = [], []
    for t, T in enumerate(tiers):
        F = T.steps * T.batch
        fid = front_off[t] + np.arange(F)
        ci = np.asarray(T.col_idx, np.int64).reshape(F, T.a)
        ri = np.asarray(T.row_idx, np.int64).reshape(F, T.r)
        f_c, j_c = np.nonzero(ci < n)
        owner_front[ci[f_c, j_c]] = fid[f_c]
        owner_pos[ci[f_c, j_c]] = j_c
        keys.append(fid[f_c] * (n + 1) + ci[f_c, j_c])
        pos.append(j_c)
        f_r, j_r = np.nonzero(ri < n)
        keys.append(fid[f_r] * (n + 1) + ri[f_r, j_r])
        pos.append(T.a + j_r)
    if np.any(owner_front < 0):
        raise ValueError("plan_selected_inverse: some variable has no front (inconsistent tiers)")
    keys = np.concatenate(keys)
    pos = np.concatenate(pos)
    order = np.argsort(keys)
    keys, pos = keys[order], pos[order]
    tier_of_front = np.searchsorted(front_off, np.arange(front_off[-1]), side="right") - 1
    m_of = np.array([T.a + T.r for T in tiers])
    a_of = np.array([T.a for T in tiers])

    def lookup(front, var):
        k = front * (n + 1) + var
        i = np.searchsorted(keys, k)
        i = np.minimum(i, keys.size - 1)
        found = keys[i] == k
        return found, pos[i]

    def block_index(front, row_pos, col_pos):
        t = tier_of_front[front]
        q = front - front_off[t]
        return (q * m_of[t] + row_pos) * a_of[t] + col_pos

    return owner_front, owner_pos, lookup, block_index, tier_of_front


def plan_selected_inverse(tiers, n: int) -> SelinvPlan:
    """Static gather maps for :func:`selected_inverse` (numpy, once per structure)."""
    owner_front, owner_pos, lookup, block_index, tier_of_front = _front_maps(tiers, n)
    size = [T.steps * T.batch * (T.a + T.r) * T.a + 1 for T in tiers]

    plans = []
    for t, T in enumerate(tiers):
        B, r, steps = T.batch, T.r, T.steps
        dummy = B * r * r
        if r == 0:
            plans.append(TierPlan(srcs=(), dst=np.zeros((steps, 0), np.int32), size=size[t]))
            continue
        ri = np.asarray(T.row_idx, np.int64)  # [steps, B, r]
        s_, b_, i_, j_ = np.nonzero((ri[:, :, :, None] < n) & (ri[:, :, None, :] < n))
        x = ri[s_, b_, i_]
        y = ri[s_, b_, j_]
        fx, fy = owner_front[x], owner_front[y]
        same = fx == fy
        # S[y, x] stored with the front owning x when y is in that front (x earlier)
        y_in_x, y_pos = lookup(fx, y)
        x_in_y, x_pos = lookup(fy, x)
        use_x = ~same & y_in_x
        use_y = ~same & ~y_in_x
        if not np.all(x_in_y[use_y]):
            raise ValueError("plan_selected_inverse: row structure is not a clique of the filled graph")
        src_front = np.where(use_x, fx, fy)
        src = np.where(same, block_index(fx, owner_pos[x], owner_pos[y]),
                       np.where(use_x, block_index(fx, y_pos, owner_pos[x]),
                                block_index(fy, x_pos, owner_pos[y])))
        trans = use_x
        buf = tier_of_front[src_front]
        dst = (b_ * r + i_) * r + j_
        srcs, dsts = [], []
        for u in sorted(set(buf.tolist())):
            sel = buf == u
            st_u = s_[sel]
            counts = np.bincount(st_u, minlength=steps)
            K = max(1, int(counts.max()))
            order_u = np.argsort(st_u, kind="stable")
            st_sorted = st_u[order_u]
            rank = np.arange(st_sorted.size) - np.repeat(np.cumsum(counts) - counts, counts)
            src_a = np.full((steps, K), size[u] - 1, dtype=np.int32)
            tr_a = np.zeros((steps, K), dtype=bool)
            dst_a = np.full((steps, K), dummy, dtype=np.int32)
            src_a[st_sorted, rank] = src[sel][order_u]
            tr_a[st_sorted, rank] = trans[sel][order_u]
            dst_a[st_sorted, rank] = dst[sel][order_u]
            srcs.append((u, src_a, tr_a))
            dsts.append(dst_a)
        plans.append(TierPlan(srcs=tuple(srcs), dst=np.concatenate(dsts, axis=1), size=size[t]))
    return SelinvPlan(tiers=tuple(plans))


def selected_inverse(tiers, plan: SelinvPlan, d: int, factors):
    """Blocks of ``H^-1`` on the pattern of ``L``, one Sigma buffer per tier.

    Args:
      tiers: the symbolic tiers (``Symbolic.tiers``) of the factorisation.
      plan: :func:`plan_selected_inverse` of those tiers.
      d: block size.
      factors: ``((L11 [steps, B, a d, a d], L21 [steps, B, r d, a d]), ...)`` from
        ``_numeric.cholesky_factor`` (single problem; batch by ``vmap``).
    Returns:
      tuple of ``[size_t, d, d]`` buffers (last block of each is zero); read blocks with
      :func:`pair_locations` and :func:`pair_blocks`.
    """
    dt = factors[0][0].dtype
    buffers = [None] * len(tiers)
    zero = jnp.zeros((), jnp.int32)
    for t in reversed(range(len(tiers))):
        T, P = tiers[t], plan.tiers[t]
        a, r, B = T.a, T.r, T.batch
        m, ad, rd = a + r, a * d, r * d
        ext = {u: buffers[u] for u, _, _ in P.srcs if u != t}

        def step(sbuf, xs, a=a, r=r, B=B, m=m, ad=ad, rd=rd, t=t, P=P, ext=ext):
            k, srcs, trans, dst, L11, L21 = xs
            eye = jnp.broadcast_to(jnp.eye(ad, dtype=dt), (B, ad, ad))
            Linv = lax.linalg.triangular_solve(L11, eye, left_side=True, lower=True)
            scc = jnp.einsum("bki,bkj->bij", Linv, Linv)
            if r:
                blocks = []
                for (u, _, _), src, tr in zip(P.srcs, srcs, trans):
                    g = jnp.take(sbuf if u == t else ext[u], src, axis=0, mode="clip")
                    blocks.append(jnp.where(tr[:, None, None], jnp.swapaxes(g, -1, -2), g))
                srr = jnp.zeros((B * r * r + 1, d, d), dt).at[dst].add(
                    jnp.concatenate(blocks, axis=0), mode="promise_in_bounds")
                srr = srr[:-1].reshape(B, r, r, d, d).transpose(0, 1, 3, 2, 4).reshape(B, rd, rd)
                # L21 L11^-1 from the inverse just computed, a product, not a second triangular
                # solve: two independent LAPACK solves per step could be started together, and
                # jaxlib's blocking batched kernels deadlock XLA:CPU's 2-thread pool that way
                # (GNC's flip scores hung on intel's first 300 poses; docs/linear.md)
                W = jnp.einsum("bij,bjk->bik", L21, Linv)
                src_ = -jnp.einsum("bij,bjk->bik", srr, W)
                scc = scc - jnp.einsum("bki,bkj->bij", W, src_)
            scc = 0.5 * (scc + jnp.swapaxes(scc, -1, -2))  # exact symmetry of S[C, C]
            col = jnp.concatenate([scc, src_], axis=1) if r else scc
            blk = col.reshape(B, m, d, a, d).transpose(0, 1, 3, 2, 4).reshape(B * m * a, d, d)
            sbuf = lax.dynamic_update_slice(sbuf, blk, (k * (B * m * a), zero, zero))
            return sbuf, None

        L11, L21 = factors[t]
        xs = (jnp.arange(T.steps, dtype=jnp.int32), tuple(jnp.asarray(s_) for _, s_, _ in P.srcs),
              tuple(jnp.asarray(tr) for _, _, tr in P.srcs), jnp.asarray(P.dst), L11, L21)
        sbuf0 = jnp.zeros((P.size, d, d), dt)
        buffers[t], _ = lax.scan(step, sbuf0, xs, reverse=True)
    return tuple(buffers)


def pair_locations(tiers, n: int, rows: np.ndarray, cols: np.ndarray):
    """Where ``S[rows[k], cols[k]]`` is stored (numpy, static), for pairs on the pattern of
    ``L`` (e.g. the two variables of a factor): ``(tier [k], index [k], transposed [k])``,
    see :func:`pair_blocks`.  Raises ``ValueError`` for a pair off the pattern."""
    owner_front, owner_pos, lookup, block_index, tier_of_front = _front_maps(tiers, n)
    rows = np.asarray(rows, np.int64)
    cols = np.asarray(cols, np.int64)
    # S[y, x] lives in the front owning x (the one eliminated first) when y is in that front
    found_r, pos_r = lookup(owner_front[cols], rows)  # S[rows, cols] in cols' front
    found_c, pos_c = lookup(owner_front[rows], cols)  # S[cols, rows] in rows' front
    if not np.all(found_r | found_c):
        raise ValueError("pair_locations: a pair is not on the pattern of the Cholesky factor")
    front = np.where(found_r, owner_front[cols], owner_front[rows])
    index = np.where(found_r, block_index(owner_front[cols], pos_r, owner_pos[cols]),
                     block_index(owner_front[rows], pos_c, owner_pos[rows]))
    return tier_of_front[front], index, ~found_r


def pair_blocks(locations, buffers):
    """``S[rows[k], cols[k]]`` ``[k, d, d]`` from :func:`pair_locations` and the buffers of
    :func:`selected_inverse`."""
    tiers, index, transposed = locations
    d = buffers[0].shape[-1]
    out = jnp.zeros((tiers.size, d, d), buffers[0].dtype)
    for u in sorted(set(tiers.tolist())):
        sel = np.nonzero(tiers == u)[0]
        out = out.at[sel].set(jnp.take(buffers[u], index[sel], axis=0))
    return jnp.where(jnp.asarray(transposed)[:, None, None], jnp.swapaxes(out, -1, -2), out)
