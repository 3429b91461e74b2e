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
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .. import smallmat
from . import _api

__all__ = ["SchurStructure", "analyze_schur"]

# pairs of blocks summed into the reduced system per scan step
_CHUNK = 1 << 15


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
    num_fill: int  # off-diagonal slots of S beyond kk

    @property
    def method(self) -> str:
        return self.reduced.method

    @property
    def dynamic(self) -> bool:
        return False

    # jaxgraph.linear's factor, solve_factored, solve_with_info and solve call these for a
    # structure that is not a BlockStructure. Unbatched: vmap for batches.
    def factor(self, diag, offdiag):
        return _factor(self, diag, offdiag)[0]

    def solve_factored(self, factorization, rhs):
        return _solve_factored(self, factorization, rhs)

    def solve_with_info(self, diag, offdiag, rhs):
        return _solve_with_info(self, diag, offdiag, rhs)


def analyze_schur(num_blocks: int, block_dim: int, rows, cols, eliminate, *, method: str = "auto",
                  **analyze_options) -> SchurStructure:
    """Plan the elimination of the variables ``eliminate`` (``int[Ne, b]`` block ids, one row
    per variable) from the pattern ``rows, cols`` (as :func:`analyze` takes it); the reduced
    system is analysed by :func:`analyze` with ``method`` (``"auto"``: the host CHOLMOD on the
    CPU, the JAX multifrontal Cholesky elsewhere, whatever the size) and ``analyze_options``.

    Raises ValueError when an off-diagonal block links two different eliminated variables
    (``P`` would not be block diagonal) or when nothing would be kept.
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
    # every ordered pair (i, j) of cross entries of one variable with kept(i) <= kept(j)
    counts = np.bincount(cvar, minlength=elim.shape[0])
    start = np.concatenate([[0], np.cumsum(counts)])[cvar]  # first entry of each entry's variable
    m = counts[cvar]
    left = np.repeat(np.arange(cvar.size), m)
    right = np.repeat(start, m) + (np.arange(left.size) - np.repeat(np.cumsum(m) - m, m))
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
    # pad the pairs to whole chunks with a pair of the zero cross entry (index E), slot 0
    total = left.size
    chunks = max(1, -(-total // _CHUNK))
    pad = chunks * _CHUNK - total
    E = cvar.size

    def padded(x, fillv):
        return np.concatenate([x, np.full(pad, fillv, x.dtype)]).reshape(chunks, _CHUNK)

    pairs = (padded(left, E), padded(right, E), padded(slot, 0), padded(diagonal, False))
    return SchurStructure(n, d, reduced, kept, elim, kk, intra, cross, pairs, int(fill.size))


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
    ne, b = s.eliminated.shape
    d = s.block_dim
    xk = _api.solve_factored(s.reduced, fac, _reduce_rhs(s, Pinv, W, rhs))
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
