"""Symbolic block Cholesky: elimination tree, supernodes, level schedule, scatter maps.

Everything here is numpy and runs once, at analyze time.  The numeric
factorisation (``_numeric.py``) is multifrontal: every supernode owns a dense
front ``[[F11, .], [F21, F22]]`` whose block rows are its own columns followed by
its row structure.  Fronts are scheduled in *tiers* (contiguous ranges of etree
heights, at most ``max_tiers``); a tier pads its fronts to one shape and is
factorised by one ``lax.scan`` whose steps each handle ``batch`` fronts of one
height with batched Cholesky / triangular solve / matmul.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Tier:
    """Fronts of a range of etree heights, processed ``batch`` at a time by one loop.

    Every step of the tier factorises ``batch`` fronts padded to ``a`` column
    blocks and ``r`` row-structure blocks (the fronts of one step share a height,
    so they are independent).  Static index data only.
    """

    a: int
    r: int
    batch: int
    steps: int
    u_size: int  # slots of this tier's update-matrix buffer (last one stays zero)
    col_idx: np.ndarray  # [steps, batch, a] original variable ids (pad: n)
    row_idx: np.ndarray  # [steps, batch, r] original variable ids (pad: n)
    pad_diag: np.ndarray  # [steps, batch, a*d] 1 on padded columns
    srcs: tuple  # ((buffer, [steps, K_b] block index (pad: the zero slot)), ...)
    dst: np.ndarray  # [steps, sum K_b] flat block index in the step's fronts (pad: dummy)


def _etree(n, indptr, indices):
    """Elimination tree (Liu's algorithm with path compression)."""
    parent = np.full(n, -1, dtype=np.int64)
    ancestor = np.full(n, -1, dtype=np.int64)
    for j in range(n):
        nb = indices[indptr[j]:indptr[j + 1]]
        for i in nb[nb < j].tolist():
            r = i
            while True:
                a = ancestor[r]
                if a == j:
                    break
                ancestor[r] = j
                if a == -1:
                    parent[r] = j
                    break
                r = a
    return parent


def _postorder(parent):
    n = parent.size
    children = [[] for _ in range(n)]
    roots = []
    for v in range(n):
        (roots if parent[v] < 0 else children[parent[v]]).append(v)
    order = []
    stack = [(r, False) for r in reversed(roots)]
    while stack:
        v, expanded = stack.pop()
        if expanded:
            order.append(v)
        else:
            stack.append((v, True))
            for c in reversed(children[v]):
                stack.append((c, False))
    return np.asarray(order, dtype=np.int64)


def _permute_csr(indptr, indices, perm):
    n = perm.size
    iperm = np.empty(n, dtype=np.int64)
    iperm[perm] = np.arange(n)
    deg = np.diff(indptr)[perm]
    new_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(deg, out=new_ptr[1:])
    new_idx = np.empty_like(indices)
    for new in range(n):
        old = perm[new]
        new_idx[new_ptr[new]:new_ptr[new + 1]] = iperm[indices[indptr[old]:indptr[old + 1]]]
    return new_ptr, new_idx


@dataclass(frozen=True, eq=False)
class Symbolic:
    perm: np.ndarray  # new -> old (postordered)
    tiers: tuple
    num_supernodes: int
    num_levels: int
    nnz_blocks: int  # stored blocks of L (lower trapezoids of all fronts, unpadded)
    flops: float  # estimated scalar flops of one numeric factorisation (unpadded)
    padded_flops: float
    model_seconds: float  # modelled factorisation time used to pick tiers / orderings


def symbolic_cholesky(n, d, rows, cols, indptr, indices, perm, *, relax_cols=8, relax_frac=0.1,
                      step_overhead=1e-4, flop_rate=5e9, max_tiers=4):
    """Supernodal symbolic factorisation for the given ordering."""
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    # postorder the etree so that supernodes are contiguous column ranges
    p_ptr, p_idx = _permute_csr(indptr, indices, perm)
    post = _postorder(_etree(n, p_ptr, p_idx))
    perm = perm[post]
    p_ptr, p_idx = _permute_csr(indptr, indices, perm)
    parent = _etree(n, p_ptr, p_idx)
    children = [[] for _ in range(n)]
    for v in range(n):
        if parent[v] >= 0:
            children[parent[v]].append(v)
    # column structures (strictly below the diagonal) by the children-union rule
    struct = [None] * n
    for j in range(n):
        nb = p_idx[p_ptr[j]:p_ptr[j + 1]]
        s = set(nb[nb > j].tolist())
        for c in children[j]:
            s |= struct[c]
        s.discard(j)
        struct[j] = s
    # fundamental supernodes: j joins j-1's supernode when parent(j-1) == j and
    # struct(j-1) == {j} | struct(j)
    sn_first, sn_last = [], []
    col_len = np.zeros(n, dtype=np.int64)
    for j in range(n):
        col_len[j] = len(struct[j])
    start = 0
    for j in range(1, n + 1):
        if j == n or not (parent[j - 1] == j and col_len[j - 1] == col_len[j] + 1):
            sn_first.append(start)
            sn_last.append(j - 1)
            start = j
    ns = len(sn_first)
    sn_of = np.empty(n, dtype=np.int64)
    for s in range(ns):
        sn_of[sn_first[s]:sn_last[s] + 1] = s
    sn_rows = [np.array(sorted(struct[sn_last[s]]), dtype=np.int64) for s in range(ns)]
    sn_parent = np.array([sn_of[parent[sn_last[s]]] if parent[sn_last[s]] >= 0 else -1
                          for s in range(ns)], dtype=np.int64)
    # relaxed amalgamation: merge a supernode with the child whose columns end
    # right before its own when the merged front stays small or nearly dense
    ncol = [sn_last[s] - sn_first[s] + 1 for s in range(ns)]
    real = [ncol[s] * (ncol[s] + 1) // 2 + ncol[s] * len(sn_rows[s]) for s in range(ns)]
    alive = [True] * ns
    first = list(sn_first)
    sn_children = [[] for _ in range(ns)]
    for s in range(ns):
        if sn_parent[s] >= 0:
            sn_children[sn_parent[s]].append(s)
    owner_of_last = {sn_last[s]: s for s in range(ns)}
    for p in range(ns):
        while True:
            c = owner_of_last.get(first[p] - 1)
            if c is None or not alive[c] or sn_parent[c] != p:
                break
            nc = ncol[c] + ncol[p]
            r = len(sn_rows[p])
            dense = nc * (nc + 1) // 2 + nc * r
            zeros = dense - real[c] - real[p]
            if not (nc <= relax_cols or zeros <= relax_frac * dense):
                break
            alive[c] = False
            first[p] = first[c]
            ncol[p] = nc
            real[p] = real[c] + real[p]
            for g in sn_children[c]:
                sn_parent[g] = p
            sn_children[p] = [x for x in sn_children[p] if x != c] + sn_children[c]
    keep = [s for s in range(ns) if alive[s]]
    new_id = {s: i for i, s in enumerate(keep)}
    S = len(keep)
    sfirst = np.array([first[s] for s in keep], dtype=np.int64)
    slast = np.array([sn_last[s] for s in keep], dtype=np.int64)
    srows = [sn_rows[s] for s in keep]
    spar = np.array([new_id[sn_parent[s]] if sn_parent[s] >= 0 else -1 for s in keep], dtype=np.int64)
    for s in range(S):
        sn_of[sfirst[s]:slast[s] + 1] = s
    # heights (leaves 0) give the level schedule; parents always come later
    height = np.zeros(S, dtype=np.int64)
    for s in range(S):  # postorder: children before parents
        if spar[s] >= 0:
            height[spar[s]] = max(height[spar[s]], height[s] + 1)
    sa = slast - sfirst + 1
    sr = np.array([r.size for r in srows], dtype=np.int64)
    nnz_blocks = int(np.sum(sa * (sa + 1) // 2 + sa * sr))
    flops = float(sum(_front_flops(int(x), int(y), d) for x, y in zip(sa, sr)))
    tiers, info = _schedule(n, d, rows, cols, perm, sfirst, slast, srows, spar, height,
                            sn_of, step_overhead=step_overhead, flop_rate=flop_rate,
                            max_tiers=max_tiers)
    return Symbolic(perm=perm, tiers=tiers, num_supernodes=S,
                    num_levels=int(height.max()) + 1 if S else 0, nnz_blocks=nnz_blocks,
                    flops=flops, padded_flops=info["padded_flops"],
                    model_seconds=info["model_seconds"])


def _front_flops(a, r, d):
    """Scalar flops of one front: Cholesky, panel triangular solve, update product."""
    A, R = a * d, r * d
    return A ** 3 / 3 + R * A * A + R * R * A


def _plan_tiers(height, sa, sr, d, step_overhead, flop_rate, max_tiers):
    """Split the heights into contiguous tiers and pick each tier's batch size.

    Minimises the modelled time  sum_steps (step_overhead + B * front_flops / flop_rate)
    with at most ``max_tiers`` tiers (each tier costs one compiled loop body).
    """
    H = int(height.max()) + 1
    per_h = [np.nonzero(height == h)[0] for h in range(H)]
    counts = np.array([x.size for x in per_h])
    amax = np.array([sa[x].max() for x in per_h])
    rmax = np.array([sr[x].max() for x in per_h])

    def tier_cost(i, j):
        a = int(amax[i:j + 1].max())
        r = int(rmax[i:j + 1].max())
        f = _front_flops(a, r, d) / flop_rate
        best = None
        kmax = int(counts[i:j + 1].max())
        cands = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, kmax} - {0})
        for B in cands:
            if B > kmax:
                continue
            steps = int(np.sum(-(-counts[i:j + 1] // B)))
            cost = steps * (step_overhead + B * f)
            if best is None or cost < best[0]:
                best = (cost, B, steps, a, r)
        return best

    INF = float("inf")
    dp = [[(INF, None)] * (H + 1) for _ in range(max_tiers + 1)]
    dp[0][0] = (0.0, None)
    cache = {}
    for t in range(1, max_tiers + 1):
        for j in range(1, H + 1):
            for i in range(j):
                prev = dp[t - 1][i][0]
                if prev == INF:
                    continue
                if (i, j - 1) not in cache:
                    cache[(i, j - 1)] = tier_cost(i, j - 1)
                c = prev + cache[(i, j - 1)][0]
                if c < dp[t][j][0]:
                    dp[t][j] = (c, i)
    t_best = min(range(1, max_tiers + 1), key=lambda t: dp[t][H][0])
    bounds = []
    j, t = H, t_best
    while j > 0:
        i = dp[t][j][1]
        bounds.append((i, j - 1))
        j, t = i, t - 1
    bounds.reverse()
    return [(i, j) + tuple(cache[(i, j)][1:]) for i, j in bounds], per_h, dp[t_best][H][0]


def _schedule(n, d, rows, cols, perm, sfirst, slast, srows, spar, height, sn_of, *,
              step_overhead, flop_rate, max_tiers):
    S = sfirst.size
    sa = slast - sfirst + 1
    sr = np.array([x.size for x in srows], dtype=np.int64)
    plan, per_h, model = _plan_tiers(height, sa, sr, d, step_overhead, flop_rate, max_tiers)
    tier_of = np.empty(S, dtype=np.int64)
    step_of = np.empty(S, dtype=np.int64)
    slot_of = np.empty(S, dtype=np.int64)
    tiers = []
    for t, (h0, h1, B, steps, a, r) in enumerate(plan):
        step = 0
        for h in range(h0, h1 + 1):
            fr = per_h[h]
            for k in range(0, fr.size, B):
                chunk = fr[k:k + B]
                tier_of[chunk] = t
                step_of[chunk] = step
                slot_of[chunk] = np.arange(chunk.size)
                step += 1
        assert step == steps
        tiers.append(dict(a=a, r=r, B=B, steps=steps))
    # block sources: buffer 0 = input pool [zero, diag (n), offdiag (M), offdiag^T (M)];
    # buffer u + 1 = update matrices of tier u, [steps * B * r * r] slots plus a zero slot
    M = rows.size
    padded_flops = 0.0
    for T in tiers:
        a, r, B, steps = T["a"], T["r"], T["B"], T["steps"]
        T["col_idx"] = np.full((steps, B, a), n, dtype=np.int32)
        T["row_idx"] = np.full((steps, B, r), n, dtype=np.int32)
        T["pad_diag"] = np.ones((steps, B, a * d), dtype=np.float32)
        T["src"] = [{} for _ in range(steps)]  # buffer -> ([src], [dst])
        T["u_size"] = steps * B * r * r + 1
        padded_flops += steps * B * _front_flops(a, r, d)
    for s in range(S):
        T = tiers[tier_of[s]]
        st, b, k = step_of[s], slot_of[s], sa[s]
        T["col_idx"][st, b, :k] = perm[sfirst[s]:slast[s] + 1]
        T["row_idx"][st, b, :sr[s]] = perm[srows[s]]
        T["pad_diag"][st, b, :k * d] = 0.0

    def front_pos(s, v):
        if sfirst[s] <= v <= slast[s]:
            return v - sfirst[s]
        j = np.searchsorted(srows[s], v)
        assert j < srows[s].size and srows[s][j] == v
        return tiers[tier_of[s]]["a"] + j

    def add(s, buf, src, dst_pos):
        T = tiers[tier_of[s]]
        lst = T["src"][step_of[s]].setdefault(buf, ([], []))
        lst[0].extend(src)
        lst[1].extend(dst_pos)

    def flat(s, pi, pj):
        T = tiers[tier_of[s]]
        m = T["a"] + T["r"]
        return (slot_of[s] * m + pi) * m + pj

    iperm = np.empty(n, dtype=np.int64)
    iperm[perm] = np.arange(n)
    for v in range(n):
        s = sn_of[v]
        p = v - sfirst[s]
        add(s, 0, [1 + perm[v]], [flat(s, p, p)])
    pr, pc = iperm[rows], iperm[cols]
    lo, hi = np.minimum(pr, pc), np.maximum(pr, pc)
    for k in range(M):
        s = sn_of[lo[k]]
        # block H[hi, lo] is offdiag[k] when rows[k] is the later variable, else its transpose
        src = 1 + n + k + (0 if pr[k] == hi[k] else M)
        add(s, 0, [src], [flat(s, front_pos(s, hi[k]), lo[k] - sfirst[s])])
    for c in range(S):
        p = spar[c]
        if p < 0 or sr[c] == 0:
            continue
        Tc = tiers[tier_of[c]]
        rc = Tc["r"]
        pos = np.array([front_pos(p, v) for v in srows[c]], dtype=np.int64)
        ii, jj = np.tril_indices(sr[c])
        usl = ((step_of[c] * Tc["B"] + slot_of[c]) * rc + ii) * rc + jj
        add(p, 1 + tier_of[c], usl.tolist(), flat(p, pos[ii], pos[jj]).tolist())
    out = []
    for t, T in enumerate(tiers):
        m = T["a"] + T["r"]
        dummy = T["B"] * m * m
        bufs = sorted({b for step in T["src"] for b in step})
        srcs, dsts = [], []
        for buf in bufs:
            zero_slot = 0 if buf == 0 else tiers[buf - 1]["u_size"] - 1
            K = max(1, max(len(step.get(buf, ([], []))[0]) for step in T["src"]))
            src = np.full((T["steps"], K), zero_slot, dtype=np.int32)
            dst = np.full((T["steps"], K), dummy, dtype=np.int32)
            for st, step in enumerate(T["src"]):
                sl, dl = step.get(buf, ([], []))
                src[st, :len(sl)] = sl
                dst[st, :len(dl)] = dl
            srcs.append((buf, src))
            dsts.append(dst)
        out.append(Tier(a=T["a"], r=T["r"], batch=T["B"], steps=T["steps"], u_size=T["u_size"],
                        col_idx=T["col_idx"], row_idx=T["row_idx"], pad_diag=T["pad_diag"],
                        srcs=tuple(srcs), dst=np.concatenate(dsts, axis=1)))
    return tuple(out), dict(padded_flops=padded_flops, model_seconds=model)
