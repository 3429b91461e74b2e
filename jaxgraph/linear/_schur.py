"""Schur complement: eliminate independent variables (the points of bundle adjustment, the
landmarks of visual odometry) before the sparse solve, as bundle adjusters do.

``H = [[C, E], [E^T, P]]`` with ``P`` block diagonal by eliminated variable (each a clique of
``b`` consecutive blocks that no off-diagonal block links to another eliminated variable).
Then ``S = C - E P^-1 E^T`` (the reduced system over the kept blocks, e.g. cameras) is solved
by any method of :func:`analyze`, and the eliminated unknowns follow by back-substitution,
``x_P = P^-1 (b_P - E^T x_C)``. Every index map is numpy, computed once by
:func:`analyze_schur`; the numeric part is plain JAX (jit, vmap, grad; GPU).

The products ``W_a P^-1 W_b^T`` of every pair of blocks that one eliminated variable couples
are summed into the reduced system in chunks (a ``lax.scan``), so memory stays bounded by the
reduced system plus one chunk, however long the tracks are.

Iterative Schur (``method="pcg"``, and ``"auto"`` for large reduced systems): ``S`` is never
formed. Conjugate gradients run on ``S v = C v - E (P^-1 (E^T v))`` (products with the stored
blocks of ``H`` only), preconditioned by Schur-Jacobi, the exact diagonal blocks of ``S`` per
kept *variable* (a camera's whole 9 x 9 block, not its 3 x 3 pieces), as Ceres'
``ITERATIVE_SCHUR`` with ``SCHUR_JACOBI`` does. Memory is then linear in the observations
whatever the covisibility; the price is an inexact step (tolerance ``pcg_tolerance``).
From ``x = 0`` the CG iterate satisfies ``x^T S x = x^T b`` exactly, so the LM model's
predicted decrease stays exact for the step it takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .. import smallmat
from . import _api
from . import _numeric as num

__all__ = ["ITERATIVE_MIN_UNKNOWNS", "SchurStructure", "analyze_schur"]

# pairs of blocks summed into the reduced system per scan step
_CHUNK = 1 << 15

#: ``method="auto"`` solves the reduced system iteratively (PCG, Schur-Jacobi) from this many
#: kept unknowns (about 1,100 BAL cameras): the explicit ``S`` grows with the square of the
#: covisibility, the iterative solve linearly with the observations (docs/linear.md).
ITERATIVE_MIN_UNKNOWNS = 10_000


@dataclass(frozen=True, eq=False)
class SchurStructure:
    """Static plan of a Schur-complement solve (hash/eq by identity); see :func:`analyze_schur`.

    ``reduced`` is the :class:`BlockStructure` of ``S`` (kept blocks renumbered in order).
    """

    num_blocks: int
    block_dim: int
    reduced: object
    kept: np.ndarray  # [Nk] block ids of the kept blocks, increasing
    eliminated: np.ndarray  # [Ne, b] block ids of each eliminated variable
    kk: np.ndarray  # [Kkk] off-diagonal entries with both blocks kept (reduced pattern order)
    intra: tuple  # (entries, var, s, t): entry k is P_var[s, t] (H[rows, cols] orientation)
    cross: tuple  # (entries, transposed, kept, var, sub): W = H[kept, (var, sub)]
    pairs: tuple  # (left, right, slot, diagonal) cross-entry pairs in chunks [C, _CHUNK]
    num_fill: int  # off-diagonal slots of S beyond kk (explicit) / preconditioner slots (iterative)
    iterative: tuple | None = None  # iterative Schur: see _iterative_plan; None: S is formed
    pattern: tuple = ()  # (rows, cols) of H's off-diagonal blocks, for the adjoint

    @property
    def method(self) -> str:
        return "iterative" if self.iterative is not None else self.reduced.method

    @property
    def dynamic(self) -> bool:
        return False

    # jaxgraph.linear's factor, solve_factored, solve_with_info and solve call these for a
    # structure that is not a BlockStructure. Unbatched: vmap for batches.
    def factor(self, diag, offdiag):
        if self.iterative is not None:
            return _iterative_factor(self, diag, offdiag)
        return _factor(self, diag, offdiag)[0]

    def solve_factored(self, factorization, rhs):
        if self.iterative is not None:
            return _iterative_solve_factored(self, factorization, rhs)[0]
        return _solve_factored(self, factorization, rhs)

    def solve_with_info(self, diag, offdiag, rhs):
        if self.iterative is not None:
            return _iterative_solve(self, diag, offdiag, rhs)
        return _solve_with_info(self, diag, offdiag, rhs)


def analyze_schur(num_blocks: int, block_dim: int, rows, cols, eliminate, *, method: str = "auto",
                  kept_variables=None, **analyze_options) -> SchurStructure:
    """Plan the elimination of the variables ``eliminate`` (``int[Ne, b]`` block ids, one row
    per variable) from the pattern ``rows, cols`` (as :func:`analyze` takes it).

    ``method``: how the reduced system ``S`` is solved. ``"pcg"``: iteratively, ``S`` never
    formed (conjugate gradients with the Schur-Jacobi preconditioner; ``pcg_max_iterations``
    and ``pcg_tolerance`` of ``analyze_options``); any other method of :func:`analyze`: ``S``
    is formed and factorised by it. ``"auto"``: ``"pcg"`` from :data:`ITERATIVE_MIN_UNKNOWNS`
    kept unknowns, else the host CHOLMOD on the CPU and the JAX multifrontal Cholesky
    elsewhere.
    ``kept_variables``: the kept variables as a list of ``int[count, c]`` arrays of block ids
    (one per variable group; ``c`` blocks per variable) whose whole diagonal blocks of ``S``
    the iterative solve's preconditioner inverts; ``None``: each kept block alone.

    Raises ValueError when an off-diagonal block links two different eliminated variables
    (``P`` would not be block diagonal), when nothing would be kept, or when
    ``kept_variables`` does not list every kept block once.
    """
    n, d = int(num_blocks), int(block_dim)
    rows = np.asarray(rows, np.int64)
    cols = np.asarray(cols, np.int64)
    elim = np.asarray(eliminate, np.int64)
    var_of = np.full(n, -1, np.int64)
    sub_of = np.zeros(n, np.int64)
    var_of[elim] = np.arange(elim.shape[0])[:, None]
    sub_of[elim] = np.arange(elim.shape[1])[None, :]
    kept = np.flatnonzero(var_of < 0)
    if kept.size == 0:
        raise ValueError("analyze_schur: every block would be eliminated; keep at least one")
    red = np.full(n, -1, np.int64)
    red[kept] = np.arange(kept.size)
    er, ec = var_of[rows] >= 0, var_of[cols] >= 0
    both = er & ec
    if np.any(var_of[rows[both]] != var_of[cols[both]]):
        k = int(np.flatnonzero(both & (var_of[rows] != var_of[cols]))[0])
        raise ValueError(f"analyze_schur: off-diagonal block {k} links eliminated blocks {rows[k]} and {cols[k]} "
                         "of different variables; their system is not block diagonal")
    kk = np.flatnonzero(~er & ~ec)
    if method == "auto" and kept.size * d >= ITERATIVE_MIN_UNKNOWNS:
        method = "pcg"
    intra_k = np.flatnonzero(both)
    intra = (intra_k, var_of[rows[intra_k]], sub_of[rows[intra_k]], sub_of[cols[intra_k]])
    cross_k = np.flatnonzero(er ^ ec)
    transposed = er[cross_k]  # stored as H[elim, kept]: W is its transpose
    kept_blk = np.where(transposed, cols[cross_k], rows[cross_k])
    elim_blk = np.where(transposed, rows[cross_k], cols[cross_k])
    order = np.argsort(var_of[elim_blk], kind="stable")  # group cross entries by variable
    cross_k, transposed, kept_blk, elim_blk = cross_k[order], transposed[order], kept_blk[order], elim_blk[order]
    cvar = var_of[elim_blk]
    cross = (cross_k, transposed, red[kept_blk], cvar, sub_of[elim_blk])
    if method == "pcg":
        return _iterative_plan(n, d, rows, cols, kept, red, elim, kk, intra, cross, kept_variables,
                               analyze_options)
    # every ordered pair (i, j) of cross entries of one variable with kept(i) <= kept(j)
    left, right = _same_variable_pairs(cvar)
    a, b = cross[2][left], cross[2][right]
    keep = a <= b
    left, right, a, b = left[keep], right[keep], a[keep], b[keep]
    diagonal = a == b
    code = a * kept.size + b
    fill, slot = np.unique(np.where(diagonal, -1, code), return_inverse=True)
    has_diag = fill.size and fill[0] == -1
    slot = np.where(diagonal, a, slot - int(has_diag))  # diagonal: the kept block; else its fill slot
    fill = fill[int(has_diag):]
    if method == "auto":
        # not "dense" for a small reduced system: LAPACK's threaded Cholesky of a few hundred
        # unknowns can stall for 250 ms on a busy CPU (docs/linear.md); CHOLMOD does not
        method = _api.default_sparse_method()
    reduced = _api.analyze(kept.size, d, np.concatenate([red[rows[kk]], fill // kept.size]),
                           np.concatenate([red[cols[kk]], fill % kept.size]), method=method, **analyze_options)
    pairs = _chunked(left, right, slot, diagonal, cvar.size)
    return SchurStructure(n, d, reduced, kept, elim, kk, intra, cross, pairs, int(fill.size),
                          pattern=(rows, cols))


def _same_variable_pairs(cvar):
    """``(left, right)``: every ordered pair of cross entries (both orders, and each entry
    with itself) that belong to one eliminated variable; ``cvar`` sorted."""
    counts = np.bincount(cvar)
    start = np.concatenate([[0], np.cumsum(counts)])[cvar]  # first entry of each entry's variable
    m = counts[cvar]
    left = np.repeat(np.arange(cvar.size), m)
    right = np.repeat(start, m) + (np.arange(left.size) - np.repeat(np.cumsum(m) - m, m))
    return left, right


def _chunked(left, right, slot, diagonal, num_cross):
    """The pair lists padded to whole chunks ``[C, _CHUNK]`` with pairs of the zero cross entry
    (index ``num_cross``) into slot 0."""
    chunks = max(1, -(-left.size // _CHUNK))
    pad = chunks * _CHUNK - left.size

    def padded(x, fillv):
        return np.concatenate([x, np.full(pad, fillv, x.dtype)]).reshape(chunks, _CHUNK)

    return (padded(left, num_cross), padded(right, num_cross), padded(slot, 0), padded(diagonal, False))


def _blocks(s: SchurStructure, diag, offdiag):
    """``(P^-1 [Ne, bd, bd], W [E + 1, d, d], clamped)`` from the blocks of ``H``."""
    d = s.block_dim
    ne, b = s.eliminated.shape
    P = jnp.zeros((ne, b, b, d, d), diag.dtype)
    P = P.at[:, np.arange(b), np.arange(b)].set(diag[s.eliminated])
    k, var, sa, sb = s.intra
    if k.size:
        B = offdiag[k]
        P = P.at[var, sa, sb].add(B).at[var, sb, sa].add(jnp.swapaxes(B, -1, -2))
    P = jnp.swapaxes(P, 2, 3).reshape(ne, b * d, b * d)
    P = 0.5 * (P + jnp.swapaxes(P, -1, -2))
    L = smallmat.cholesky(P)
    Linv = smallmat.lower_inverse(L)
    Pinv = jnp.swapaxes(Linv, -1, -2) @ Linv
    clamped = ~jnp.all(jnp.isfinite(Pinv))
    ck, transposed = s.cross[0], s.cross[1]
    W = offdiag[ck]
    W = jnp.where(transposed[:, None, None], jnp.swapaxes(W, -1, -2), W)
    W = jnp.concatenate([W, jnp.zeros((1, d, d), W.dtype)])
    return Pinv, W, clamped


def _mm(a, b):
    """``a @ b`` for batches of small matrices as products unrolled over the inner size: XLA:CPU
    runs a batched float64 dot of 3 x 3 matrices several times slower (see smallmat.matmul)."""
    out = a[..., :, 0:1] * b[..., 0:1, :]
    for k in range(1, a.shape[-1]):
        out = out + a[..., :, k : k + 1] * b[..., k : k + 1, :]
    return out


def _pinv_block(s, Pinv, var, sa, sb):
    """``(P_var^-1)[sa, sb]`` d x d blocks (gathered)."""
    d = s.block_dim
    b = s.eliminated.shape[1]
    P5 = Pinv.reshape(-1, b, d, b, d)
    return P5[var, sa, :, sb, :]


def _factor(s: SchurStructure, diag, offdiag):
    """``((reduced factorisation, P^-1, W, clamped), (S_diag, S_off))``."""
    Pinv, W, clamped = _blocks(s, diag, offdiag)
    _, _, _, cvar, csub = s.cross
    cv = jnp.asarray(np.append(cvar, 0))  # entry E: the zero cross entry of padded pairs
    cs = jnp.asarray(np.append(csub, 0))
    nk, d = s.kept.size, s.block_dim
    left, right, slot, diagonal = s.pairs

    def step(acc, chunk):
        li, ri, sl, dg = chunk
        # W_l P^-1[s_l, s_r] W_r^T: the coupling the eliminated variable adds between kept blocks
        prod = _mm(_mm(W[li], _pinv_block(s, Pinv, cv[li], cs[li], cs[ri])), jnp.swapaxes(W[ri], -1, -2))
        sd, so = acc
        # a diagonal block receives both orders of each pair (both are listed), an
        # off-diagonal slot (kept(l) < kept(r)) one
        sd = sd.at[jnp.where(dg, sl, nk)].add(prod, mode="drop")
        so = so.at[jnp.where(dg, s.num_fill, sl)].add(prod, mode="drop")
        return (sd, so), None

    zeros = (jnp.zeros((nk, d, d), diag.dtype), jnp.zeros((s.num_fill, d, d), diag.dtype))
    (sd, so), _ = jax.lax.scan(step, zeros, (left, right, slot, diagonal))
    S_diag = diag[s.kept] - sd
    S_off = jnp.concatenate([offdiag[s.kk], -so])
    fac = _api.factor(s.reduced, S_diag, S_off)
    return (fac, Pinv, W, clamped | fac.clamped), (S_diag, S_off)


def _reduce_rhs(s: SchurStructure, Pinv, W, rhs):
    """``b_C - E P^-1 b_P`` and ``P^-1 b_P`` per eliminated variable."""
    ne, b = s.eliminated.shape
    d = s.block_dim
    y = (Pinv @ rhs[s.eliminated].reshape(ne, b * d, 1)).reshape(ne, b, d)
    _, _, kept_idx, cvar, csub = s.cross
    contrib = (W[:-1] @ y[cvar, csub][..., None])[..., 0]
    return rhs[s.kept] - jax.ops.segment_sum(contrib, kept_idx, num_segments=s.kept.size)


def _solve_factored(s: SchurStructure, factorization, rhs):
    """``x [n, d]`` of ``H x = rhs`` from the factorisation of :meth:`SchurStructure.factor`."""
    fac, Pinv, W, _ = factorization
    xk = _api.solve_factored(s.reduced, fac, _reduce_rhs(s, Pinv, W, rhs))
    return _back_substitute(s, Pinv, W, rhs, xk)


def _back_substitute(s: SchurStructure, Pinv, W, rhs, xk):
    """The whole ``x [n, d]`` from the kept part ``xk``: ``x_P = P^-1 (b_P - E^T x_C)``."""
    ne, b = s.eliminated.shape
    d = s.block_dim
    _, _, kept_idx, cvar, csub = s.cross
    # x_P = P^-1 (b_P - E^T x_C)
    back = (jnp.swapaxes(W[:-1], -1, -2) @ xk[kept_idx][..., None])[..., 0]
    rp = rhs[s.eliminated] - jax.ops.segment_sum(back, cvar * b + csub, num_segments=ne * b).reshape(ne, b, d)
    xp = (Pinv @ rp.reshape(ne, b * d, 1)).reshape(ne * b, d)
    x = jnp.zeros(rhs.shape, rhs.dtype).at[s.kept].set(xk)
    return x.at[s.eliminated.reshape(-1)].set(xp)


def _solve_with_info(s: SchurStructure, diag, offdiag, rhs):
    """``(x, SolveInfo)`` of ``H x = rhs``; the relative residual is the reduced system's
    (back-substitution is exact)."""
    (fac, Pinv, W, clamped), (S_diag, S_off) = _factor(s, diag, offdiag)
    x = _solve_factored(s, (fac, Pinv, W, clamped), rhs)
    rk = _reduce_rhs(s, Pinv, W, rhs)
    res = _api.matvec(s.reduced, S_diag, S_off, x[s.kept]) - rk
    norm = jnp.sqrt(jnp.sum(rk * rk))
    rel = jnp.where(norm > 0, jnp.sqrt(jnp.sum(res * res)) / jnp.where(norm > 0, norm, 1), 0)
    return x, _api.SolveInfo(clamped, jnp.zeros((), jnp.int32), rel)


# --------------------------------------------------------------------------- iterative Schur


def _iterative_plan(n, d, rows, cols, kept, red, elim, kk, intra, cross, kept_variables, analyze_options):
    """The :class:`SchurStructure` of an iterative solve: ``reduced`` is the ``"pcg"``
    structure of ``C``'s own pattern (its matrix-vector product); ``iterative`` holds the
    Schur-Jacobi preconditioner's plan ``(groups, c_entries, c_slots, num_slots)``:
    ``groups`` a tuple of ``(offset, count, c)`` per kept variable group (its slots are
    ``offset + ((v c + s) c + t)`` for block ``(s, t)`` of variable ``v``), ``c_entries`` /
    ``c_slots`` the blocks of ``C`` (diagonal blocks first, as kept block ids ``< nk``;
    then off-diagonal entries ``nk + k`` of ``kk`` and their transposes, ``-(nk + k) - 1``)
    and the slot each lands in; the pair products land in ``pairs``' slots."""
    nk = kept.size
    if kept_variables is None:
        kept_variables = [kept[:, None]]
    owner = np.full(nk, -1, np.int64)  # preconditioner slot base of each kept block
    sub = np.zeros(nk, np.int64)
    width = np.zeros(nk, np.int64)
    groups, offset = [], 0
    for blocks in kept_variables:
        blocks = np.asarray(blocks, np.int64)
        if blocks.ndim != 2 or blocks.size == 0:
            continue
        count, c = blocks.shape
        rb = red[blocks]
        if np.any(rb < 0) or np.any(owner[rb] >= 0):
            raise ValueError("analyze_schur: kept_variables must list kept blocks, each once")
        owner[rb] = offset + (np.arange(count)[:, None] * c * c)
        sub[rb] = np.arange(c)[None, :]
        width[rb] = c
        groups.append((offset, count, c))
        offset += count * c * c
    if np.any(owner < 0):
        raise ValueError(f"analyze_schur: kept_variables leaves {int(np.sum(owner < 0))} kept blocks out")

    def slot(a, b):  # slot of block (a, b) of S, a and b kept blocks of one variable
        return owner[a] + sub[a] * width[a] + sub[b]

    rk, ck = red[rows[kk]], red[cols[kk]]
    same = owner[rk] == owner[ck]  # C's blocks inside one kept variable
    k_in = np.flatnonzero(same)
    c_entries = np.concatenate([np.arange(nk), nk + k_in, -(nk + k_in) - 1])
    c_slots = np.concatenate([slot(np.arange(nk), np.arange(nk)), slot(rk[k_in], ck[k_in]),
                              slot(ck[k_in], rk[k_in])])
    _, _, kept_idx, cvar, _ = cross
    left, right = _same_variable_pairs(cvar)
    keep = owner[kept_idx[left]] == owner[kept_idx[right]]
    left, right = left[keep], right[keep]
    pslot = slot(kept_idx[left], kept_idx[right])
    pairs = _chunked(left, right, pslot, np.ones(left.size, bool), cvar.size)
    options = dict(analyze_options)
    options.pop("ordering", None)
    reduced = _api.analyze(nk, d, rk, ck, method="pcg", **options)
    plan = (tuple(groups), c_entries, c_slots, offset)
    return SchurStructure(n, d, reduced, kept, elim, kk, intra, cross, pairs, offset, iterative=plan,
                          pattern=(rows, cols))


def _preconditioner(s: SchurStructure, diag, offdiag, Pinv, W):
    """Lower Cholesky factors of the Schur-Jacobi blocks, one ``[count, c d, c d]`` array per
    kept variable group: ``S_vv = C_vv - sum W P^-1 W^T`` over the pairs inside variable ``v``."""
    groups, c_entries, c_slots, num_slots = s.iterative
    d, nk = s.block_dim, s.kept.size
    Cd = diag[s.kept]
    Co = offdiag[s.kk]
    blocks = jnp.concatenate([Cd, Co, jnp.swapaxes(Co, -1, -2)])
    # c_entries: kept diagonal blocks, then kk entries (nk + k), then their transposes
    idx = np.where(c_entries >= 0, c_entries, -c_entries - 1 + Co.shape[0])
    M = jnp.zeros((num_slots, d, d), diag.dtype).at[c_slots].add(blocks[idx])
    _, _, _, cvar, csub = s.cross
    cv = jnp.asarray(np.append(cvar, 0))
    cs = jnp.asarray(np.append(csub, 0))
    left, right, slot, _ = s.pairs

    def step(acc, chunk):
        li, ri, sl = chunk
        prod = _mm(_mm(W[li], _pinv_block(s, Pinv, cv[li], cs[li], cs[ri])), jnp.swapaxes(W[ri], -1, -2))
        return acc.at[sl].add(-prod), None

    M, _ = jax.lax.scan(step, M, (left, right, slot))
    factors = []
    for offset, count, c in groups:
        B = M[offset:offset + count * c * c].reshape(count, c, c, d, d)
        B = jnp.swapaxes(B, 2, 3).reshape(count, c * d, c * d)
        factors.append(num.guarded_cholesky(0.5 * (B + jnp.swapaxes(B, -1, -2))))
    return tuple(f[0] for f in factors), jnp.any(jnp.stack([f[1] for f in factors]))


def _apply_preconditioner(s: SchurStructure, factors, r):
    """``M^-1 r`` for the kept residual ``r [nk, d]``: one block solve per kept variable."""
    out = jnp.zeros_like(r)
    order = _kept_order(s)
    for (offset, count, c), L, blocks in zip(s.iterative[0], factors, order):
        rv = r[blocks].reshape(count, c * s.block_dim)
        out = out.at[blocks.reshape(-1)].set(num.apply_block_jacobi(L, rv).reshape(count * c, s.block_dim))
    return out


def _kept_order(s: SchurStructure):
    """Per preconditioner group, ``int[count, c]`` kept (renumbered) block ids in slot order."""
    groups, _, c_slots, _ = s.iterative
    nk = s.kept.size
    base = c_slots[:nk]  # slot of (a, a) for each kept block a = offset + (v c + s) c + s
    out = []
    for offset, count, c in groups:
        inside = np.flatnonzero((base >= offset) & (base < offset + count * c * c))
        local = base[inside] - offset  # (v c + s) c + s = v c^2 + s (c + 1)
        v, s_ = local // (c * c), (local % (c * c)) // (c + 1)
        blocks = np.zeros((count, c), np.int64)
        blocks[v, s_] = inside
        out.append(blocks)
    return out


def _apply_s(s: SchurStructure, fac, v):
    """``S v = C v - W (P^-1 (W^T v))`` from the stored blocks, ``v [nk, d]``."""
    Cd, Co, Pinv, W = fac[:4]
    ne, b = s.eliminated.shape
    d = s.block_dim
    out = num.matvec(s.reduced.rows, s.reduced.cols, Cd, Co, v)
    _, _, kept_idx, cvar, csub = s.cross
    Wc = W[:-1]
    slot = cvar * b + csub  # sorted: cross entries are grouped by eliminated variable
    u = _mv(jnp.swapaxes(Wc, -1, -2), v[kept_idx])  # W^T v per cross entry
    y = jax.ops.segment_sum(u, slot, num_segments=ne * b, indices_are_sorted=True).reshape(ne, b * d)
    y = _mv(Pinv, y).reshape(ne * b, d)
    back = _mv(Wc, y[slot])
    return out - jax.ops.segment_sum(back, kept_idx, num_segments=s.kept.size)


def _mv(a, x):
    """``a @ x`` for batches ``a [..., m, k]``, ``x [..., k]``, unrolled over ``k`` (see _mm)."""
    out = a[..., :, 0] * x[..., 0:1]
    for k in range(1, a.shape[-1]):
        out = out + a[..., :, k] * x[..., k : k + 1]
    return out


def _iterative_factor(s: SchurStructure, diag, offdiag):
    """``(C_diag, C_off, P^-1, W, preconditioner factors, clamped)``: everything the matrix-free
    reduced operator and its preconditioner need; ``S`` itself is not formed."""
    Pinv, W, clamped = _blocks(s, diag, offdiag)
    # a preconditioner block that needed its guard is reported like a clamped pivot
    factors, guarded = _preconditioner(s, diag, offdiag, Pinv, W)
    return (diag[s.kept], offdiag[s.kk], Pinv, W, factors, clamped | guarded)


def _iterative_solve_factored(s: SchurStructure, fac, rhs):
    """``(x, iterations, relative residual of the reduced system)``."""
    _, _, Pinv, W, factors, _ = fac
    rk = _reduce_rhs(s, Pinv, W, rhs)
    xk, k, rel = num.conjugate_gradient(partial(_apply_s, s, fac), rk,
                                        lambda r: _apply_preconditioner(s, factors, r),
                                        max_iterations=s.reduced.pcg_max_iterations,
                                        tolerance=_iterative_tolerance(s, rhs.dtype))
    return _back_substitute(s, Pinv, W, rhs, xk), k, rel


def _iterative_tolerance(s: SchurStructure, dtype) -> float:
    """``pcg_tolerance`` when given, else 1e-6 (float64) / 1e-5 (float32): an LM step needs
    no more (Ceres' inexact Newton stops far earlier), and its predicted decrease is exact for
    any CG iterate."""
    if s.reduced.pcg_tolerance is not None:
        return s.reduced.pcg_tolerance
    return 1e-6 if jnp.dtype(dtype) == jnp.float64 else 1e-5


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _iterative_solve(s: SchurStructure, diag, offdiag, rhs):
    """``(x, SolveInfo)`` of ``H x = rhs`` by iterative Schur; reverse mode solves the adjoint
    system with the same preconditioned operator (CG's loop itself is not differentiated)."""
    return _iterative_fwd(s, diag, offdiag, rhs)[0]


def _iterative_fwd(s, diag, offdiag, rhs):
    fac = _iterative_factor(s, diag, offdiag)
    x, k, rel = _iterative_solve_factored(s, fac, rhs)
    return (x, _api.SolveInfo(fac[-1], k, rel)), (fac, x)


def _iterative_bwd(s, res, cts):
    fac, x = res
    lam = _iterative_solve_factored(s, fac, cts[0])[0]
    rows, cols = s.pattern
    dD, dO = _api.adjoint_blocks(rows, cols, x, lam)
    return dD, dO.astype(x.dtype), lam


_iterative_solve.defvjp(_iterative_fwd, _iterative_bwd)
