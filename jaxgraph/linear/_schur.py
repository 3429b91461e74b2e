"""Schur complement: eliminate independent variables (the points of bundle adjustment, the
landmarks of visual odometry) before the sparse solve, as bundle adjusters do.

``H = [[C, E], [E^T, P]]`` with ``P`` block diagonal by eliminated variable (each a clique of
``b`` consecutive blocks that no off-diagonal block links to another eliminated variable).
Then ``S = C - E P^-1 E^T`` (the reduced system over the kept blocks, e.g. cameras) is solved
by any method of :func:`analyze`, and the eliminated unknowns follow by back-substitution,
``x_P = P^-1 (b_P - E^T x_C)``. Every index map is numpy, computed once by
:func:`analyze_schur`; the numeric part is plain JAX (jit, vmap, grad; GPU).

``E`` is handled per *coupling*: one kept unit (a kept variable, e.g. a camera of ``c``
blocks, given by ``kept_variables``; else one block) and one eliminated variable that some
factor links, with its whole ``[c d, b d]`` block ``W``. ``S`` receives ``W_q P^-1 W_q^T``
on the unit's diagonal block for every coupling ``q``, and ``W_q P^-1 W_r^T`` for every pair
of couplings of one eliminated variable (two cameras seeing one point). Both sums run in
chunks (a ``lax.scan``), so memory stays bounded by ``S`` plus one chunk, however long the
tracks are (docs/linear.md has the numbers).

Iterative Schur (``method="pcg"``, and ``"auto"`` for large reduced systems): ``S`` is never
formed. Conjugate gradients run on ``S v = C v - W (P^-1 (W^T v))`` (products with the
stored blocks of ``H`` only), preconditioned by Schur-Jacobi, the exact diagonal blocks of
``S`` per kept unit (a camera's whole 9 x 9 block, not its 3 x 3 pieces), as Ceres'
``ITERATIVE_SCHUR`` with ``SCHUR_JACOBI`` does: memory linear in the observations, an
inexact step (``pcg_tolerance``) whose LM predicted decrease stays exact (``x^T S x = x^T b``
for every CG iterate from 0).
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

# d x d block products per scan step of the sums into S (a chunk of couplings or pairs)
_CHUNK_BLOCKS = 1 << 15

#: ``method="auto"`` solves the reduced system iteratively (PCG, Schur-Jacobi) from this many
#: kept unknowns (about 1,100 BAL cameras): the explicit ``S`` grows with the square of the
#: covisibility, the iterative solve linearly with the observations (docs/linear.md).
ITERATIVE_MIN_UNKNOWNS = 10_000


@dataclass(frozen=True, eq=False)
class SchurStructure:
    """Static plan of a Schur-complement solve (hash/eq by identity); see :func:`analyze_schur`.

    ``reduced`` is the :class:`BlockStructure` of ``S`` (kept blocks renumbered in order), or
    for an iterative plan the ``"pcg"`` structure of ``C``'s own pattern (its products).
    The index arrays are numpy integer arrays whose shapes are noted at each field:
    ``kept [Nk]``, ``eliminated [Ne, b]``, ``units [U, c]``, ``kk [Kkk]``,
    ``diag_chunks [C, chunk]``.
    """

    num_blocks: int
    block_dim: int
    reduced: object
    kept: np.ndarray  # [Nk] block ids of the kept blocks, increasing
    eliminated: np.ndarray  # [Ne, b] block ids of each eliminated variable
    units: np.ndarray  # [U, c] kept (renumbered) block ids of each kept unit
    kk: np.ndarray  # [Kkk] off-diagonal entries with both blocks kept
    intra: tuple  # (entries, var, s, t): entry k is P_var[s, t] (H[rows, cols] orientation)
    cross: tuple  # (entries, transposed, coupling, unit sub-block, eliminated sub-block)
    couplings: tuple  # (unit, var) [Q] of each coupling, grouped by var
    diag_chunks: np.ndarray  # [C, chunk] couplings, padded with Q (the zero coupling)
    pairs: tuple  # (left, right, unit pair) [C', chunk'] coupling pairs of one var, padded (Q, Q, 0)
    unit_pairs: int  # F: unit pairs (u < v) with a coupling pair (their c x c blocks of S)
    c_unit: tuple  # (entries, slots): C's blocks inside one unit and where they land
    iterative: bool
    pattern: tuple  # (rows, cols) of H's off-diagonal blocks, for the adjoint

    @property
    def method(self) -> str:
        return "iterative" if self.iterative else self.reduced.method

    @property
    def dynamic(self) -> bool:
        return False

    # jaxgraph.linear's factor, solve_factored, solve_with_info and solve call these for a
    # structure that is not a BlockStructure. Unbatched: vmap for batches.
    def factor(self, diag, offdiag):
        if self.iterative:
            return _iterative_factor(self, diag, offdiag)
        return _factor(self, diag, offdiag)[0]

    def solve_factored(self, factorization, rhs):
        if self.iterative:
            return _iterative_solve_factored(self, factorization, rhs)[0]
        return _solve_factored(self, factorization, rhs)

    def solve_with_info(self, diag, offdiag, rhs):
        if self.iterative:
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
    (one per variable group; ``c`` blocks per variable). When every group has the same ``c``
    they are the units ``S`` is summed in and the iterative solve's preconditioner inverts
    whole; ``None`` (or groups of different widths): each kept block is a unit.

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
    units = _units(kept, red, kept_variables)
    U, c = units.shape
    unit_of, usub_of = np.zeros((2, kept.size), np.int64)
    unit_of[units], usub_of[units] = np.indices(units.shape)
    if method == "auto" and kept.size * d >= ITERATIVE_MIN_UNKNOWNS:
        method = "pcg"
    if method == "auto":
        # not "dense" for a small reduced system: LAPACK's threaded Cholesky of a few hundred
        # unknowns can stall for 250 ms on a busy CPU (docs/linear.md); CHOLMOD does not
        method = _api.default_sparse_method()

    kk = np.flatnonzero(~er & ~ec)
    rk, ck = red[rows[kk]], red[cols[kk]]
    intra_k = np.flatnonzero(both)
    intra = (intra_k, var_of[rows[intra_k]], sub_of[rows[intra_k]], sub_of[cols[intra_k]])
    # cross entries (one kept block, one eliminated block) and their couplings (unit, var)
    cross_k = np.flatnonzero(er ^ ec)
    transposed = er[cross_k]  # stored as H[elim, kept]: W is its transpose
    kept_blk = red[np.where(transposed, cols[cross_k], rows[cross_k])]
    elim_blk = np.where(transposed, rows[cross_k], cols[cross_k])
    code = var_of[elim_blk] * U + unit_of[kept_blk]  # grouped by var, then unit
    keys, coupling = np.unique(code, return_inverse=True)
    q_var, q_unit = keys // U, keys % U
    cross = (cross_k, transposed, coupling, usub_of[kept_blk], sub_of[elim_blk])
    Q = keys.size
    chunk = max(1, _CHUNK_BLOCKS // (c * c))
    diag_chunks = _chunked([np.arange(Q)], [Q], chunk)[0]
    # C's blocks inside one unit: kept diagonal blocks (entry a < nk), kk entries (nk + k)
    # and their transposes (-(nk + k) - 1), each into its (s, t) slot of the unit's block
    same = unit_of[rk] == unit_of[ck]
    k_in = np.flatnonzero(same)
    nk = kept.size
    a = np.arange(nk)
    c_entries = np.concatenate([a, nk + k_in, -(nk + k_in) - 1])
    slot_of = lambda x, y: (unit_of[x] * c + usub_of[x]) * c + usub_of[y]  # noqa: E731
    c_slots = np.concatenate([slot_of(a, a), slot_of(rk[k_in], ck[k_in]), slot_of(ck[k_in], rk[k_in])])
    if method == "pcg":
        options = dict(analyze_options)
        options.pop("ordering", None)
        reduced = _api.analyze(nk, d, rk, ck, method="pcg", **options)
        empty = _chunked([np.zeros(0, np.int64)] * 3, [Q, Q, 0], 1)
        return SchurStructure(n, d, reduced, *_int32(kept, elim, units, kk, intra, cross, (q_unit, q_var),
                                                      diag_chunks, tuple(empty)), 0,
                              _int32((c_entries, c_slots))[0], True, (rows, cols))
    # every pair of couplings of one variable, units in increasing order (q sorted by (var, unit))
    left, right = _same_variable_pairs(q_var)
    keep = left < right
    left, right = left[keep], right[keep]
    pair_code, unit_pair = np.unique(q_unit[left] * U + q_unit[right], return_inverse=True)
    F = pair_code.size
    pu, pv = pair_code // U, pair_code % U
    # S's off-diagonal blocks beyond C's pattern: every (s, t) block of each unit pair, then
    # the upper blocks (s < t) of each unit's own diagonal block
    s_, t_ = np.divmod(np.arange(c * c), c)
    fill_r = units[pu][:, s_].reshape(-1)
    fill_c = units[pv][:, t_].reshape(-1)
    us, ut = np.triu_indices(c, 1)
    fill_r = np.concatenate([fill_r, units[:, us].reshape(-1)])
    fill_c = np.concatenate([fill_c, units[:, ut].reshape(-1)])
    reduced = _api.analyze(nk, d, np.concatenate([rk, fill_r]), np.concatenate([ck, fill_c]), method=method,
                           **analyze_options)
    pairs = tuple(_chunked([left, right, unit_pair], [Q, Q, 0], chunk))
    return SchurStructure(n, d, reduced, *_int32(kept, elim, units, kk, intra, cross, (q_unit, q_var), diag_chunks,
                                                  pairs), F, _int32((c_entries, c_slots))[0], False, (rows, cols))


def _units(kept, red, kept_variables):
    """``int[U, c]`` kept (renumbered) block ids of each unit: ``kept_variables`` when its
    groups share one width, else every kept block alone."""
    if kept_variables is None:
        return np.arange(kept.size)[:, None]
    groups = [np.asarray(g, np.int64) for g in kept_variables if np.size(g)]
    listed = np.concatenate([red[g.reshape(-1)] for g in groups]) if groups else np.zeros(0, np.int64)
    seen = np.bincount(listed[listed >= 0], minlength=kept.size)
    if any(g.ndim != 2 for g in groups) or np.any(listed < 0) or np.any(seen > 1):
        raise ValueError("analyze_schur: kept_variables must list kept blocks, each once")
    if np.any(seen == 0):
        raise ValueError(f"analyze_schur: kept_variables leaves {int(np.sum(seen == 0))} kept blocks out")
    if len({g.shape[1] for g in groups}) != 1:
        return np.arange(kept.size)[:, None]
    return np.concatenate([red[g] for g in groups])


def _same_variable_pairs(var):
    """``(left, right)``: every ordered pair of entries (both orders, and each entry with
    itself) that share a variable; ``var`` sorted."""
    counts = np.bincount(var) if var.size else np.zeros(0, np.int64)
    start = np.concatenate([[0], np.cumsum(counts)])[var]  # first entry of each entry's variable
    m = counts[var]
    left = np.repeat(np.arange(var.size), m)
    right = np.repeat(start, m) + (np.arange(left.size) - np.repeat(np.cumsum(m) - m, m))
    return left, right


def _chunked(arrays, fills, chunk):
    """Equal-length index arrays padded with ``fills`` to whole chunks, each ``[C, chunk]``."""
    size = arrays[0].size
    chunks = max(1, -(-size // chunk))
    pad = chunks * chunk - size
    return [np.concatenate([x, np.full(pad, f, np.int64)]).reshape(chunks, chunk) for x, f in zip(arrays, fills)]


def _int32(*arrays):
    """The plan's index arrays as int32 (bools kept): they are constants of the compiled
    program, and int64 doubled its size."""
    def one(a):
        if isinstance(a, tuple):
            return tuple(one(x) for x in a)
        if isinstance(a, np.ndarray) and a.dtype.kind in "iu":
            return a.astype(np.int32)
        return a
    return tuple(one(a) for a in arrays)


# --------------------------------------------------------------------------- numeric parts


def _mm(a, b):
    """``a @ b`` for batches of small matrices as products unrolled over the inner size: XLA:CPU
    runs a batched float64 dot of 3 x 3 matrices several times slower (see smallmat.matmul)."""
    out = a[..., :, 0:1] * b[..., 0:1, :]
    for k in range(1, a.shape[-1]):
        out = out + a[..., :, k : k + 1] * b[..., k : k + 1, :]
    return out


def _mv(a, x):
    """``a @ x`` for batches ``a [..., m, k]``, ``x [..., k]``, unrolled over ``k`` (see _mm)."""
    out = a[..., :, 0] * x[..., 0:1]
    for k in range(1, a.shape[-1]):
        out = out + a[..., :, k] * x[..., k : k + 1]
    return out


def _blocks(s: SchurStructure, diag, offdiag):
    """``(P^-1 [Ne, bd, bd], W [Q + 1, cd, bd], clamped)`` from the blocks of ``H``; ``W[Q]``
    is the zero coupling that padded chunks point to."""
    d = s.block_dim
    ne, b = s.eliminated.shape
    c = s.units.shape[1]
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
    ck, transposed, q, us, es = s.cross
    Q = s.couplings[0].size
    Wb = offdiag[ck]
    Wb = jnp.where(transposed[:, None, None], jnp.swapaxes(Wb, -1, -2), Wb)
    W = jnp.zeros((Q + 1, c, b, d, d), diag.dtype).at[q, us, es].add(Wb)
    W = jnp.swapaxes(W, 2, 3).reshape(Q + 1, c * d, b * d)
    return Pinv, W, clamped


def _unit_diagonal(s: SchurStructure, Pinv, W):
    """``sum_q W_q P^-1 W_q^T`` per kept unit, ``[U, cd, cd]``, in chunks of couplings."""
    units, var = s.couplings
    U, c = s.units.shape
    d = s.block_dim
    qu = jnp.asarray(np.append(units, U))  # the zero coupling lands in a dropped row
    qv = jnp.asarray(np.append(var, 0))

    def step(acc, q):
        Wq = W[q]
        prod = _mm(_mm(Wq, Pinv[qv[q]]), jnp.swapaxes(Wq, -1, -2))
        return acc.at[qu[q]].add(prod, mode="drop"), None

    acc, _ = jax.lax.scan(step, jnp.zeros((U, c * d, c * d), W.dtype), s.diag_chunks)
    return acc


def _factor(s: SchurStructure, diag, offdiag):
    """``((reduced factorisation, P^-1, W, clamped), (S_diag, S_off))``."""
    Pinv, W, clamped = _blocks(s, diag, offdiag)
    U, c = s.units.shape
    d = s.block_dim
    qv = jnp.asarray(np.append(s.couplings[1], 0))
    left, right, unit_pair = s.pairs

    def step(acc, chunk):
        li, ri, f = chunk
        # W_l P^-1 W_r^T: the coupling one eliminated variable adds between two kept units
        prod = _mm(_mm(W[li], Pinv[qv[li]]), jnp.swapaxes(W[ri], -1, -2))
        return acc.at[f].add(prod), None

    off, _ = jax.lax.scan(step, jnp.zeros((max(s.unit_pairs, 1), c * d, c * d), W.dtype), (left, right, unit_pair))
    off = off[: s.unit_pairs]
    dg = _unit_diagonal(s, Pinv, W).reshape(U, c, d, c, d)
    ru, rs = _kept_unit(s)
    S_diag = diag[s.kept] - dg[ru, rs, :, rs, :]
    us, ut = np.triu_indices(c, 1)
    fill_off = jnp.swapaxes(off.reshape(-1, c, d, c, d), 2, 3).reshape(-1, d, d)
    # two advanced indices split by a slice put their axis first: [T, U, d, d] -> unit-major
    fill_unit = jnp.swapaxes(dg[:, us, :, ut, :], 0, 1).reshape(-1, d, d)
    S_off = jnp.concatenate([offdiag[s.kk], -fill_off, -fill_unit])
    fac = _api.factor(s.reduced, S_diag, S_off)
    return (fac, Pinv, W, clamped | fac.clamped), (S_diag, S_off)


def _kept_unit(s: SchurStructure):
    """``(unit, sub-block)`` of every kept block (numpy, static)."""
    unit, sub = np.zeros((2, s.kept.size), np.int64)
    unit[s.units], sub[s.units] = np.indices(s.units.shape)
    return unit, sub


def _to_units(s: SchurStructure, x):
    """Kept-block rows ``[nk, d]`` -> unit rows ``[U, c d]``."""
    U, c = s.units.shape
    return x[s.units].reshape(U, c * s.block_dim)


def _from_units(s: SchurStructure, xu):
    """Unit rows ``[U, c d]`` -> kept-block rows ``[nk, d]``."""
    d = s.block_dim
    return jnp.zeros((s.kept.size, d), xu.dtype).at[s.units.reshape(-1)].set(xu.reshape(-1, d))


def _e_times(s: SchurStructure, W, y):
    """``E y`` on the kept units from ``y [Ne, b d]`` (one row per eliminated variable)."""
    units, var = s.couplings
    U = s.units.shape[0]
    return jax.ops.segment_sum(_mv(W[:-1], y[var]), units, num_segments=U)


def _et_times(s: SchurStructure, W, xu):
    """``E^T x`` per eliminated variable ``[Ne, b d]`` from unit rows ``xu [U, c d]``."""
    units, var = s.couplings
    return jax.ops.segment_sum(_mv(jnp.swapaxes(W[:-1], -1, -2), xu[units]), var,
                               num_segments=s.eliminated.shape[0], indices_are_sorted=True)


def _reduce_rhs(s: SchurStructure, Pinv, W, rhs):
    """``b_C - E P^-1 b_P`` on the kept blocks."""
    ne, b = s.eliminated.shape
    y = _mv(Pinv, rhs[s.eliminated].reshape(ne, -1))
    return rhs[s.kept] - _from_units(s, _e_times(s, W, y))


def _solve_factored(s: SchurStructure, factorization, rhs):
    """``x [n, d]`` of ``H x = rhs`` from the factorisation of :meth:`SchurStructure.factor`."""
    fac, Pinv, W, _ = factorization
    xk = _api.solve_factored(s.reduced, fac, _reduce_rhs(s, Pinv, W, rhs))
    return _back_substitute(s, Pinv, W, rhs, xk)


def _back_substitute(s: SchurStructure, Pinv, W, rhs, xk):
    """The whole ``x [n, d]`` from the kept part ``xk``: ``x_P = P^-1 (b_P - E^T x_C)``."""
    ne, b = s.eliminated.shape
    d = s.block_dim
    rp = rhs[s.eliminated].reshape(ne, b * d) - _et_times(s, W, _to_units(s, xk))
    xp = _mv(Pinv, rp).reshape(ne * b, d)
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


def _preconditioner(s: SchurStructure, diag, offdiag, Pinv, W):
    """``(lower Cholesky factors [U, cd, cd], guarded)`` of the Schur-Jacobi blocks, ``S``'s
    diagonal block per kept unit: ``C_uu - sum_q W_q P^-1 W_q^T``."""
    c_entries, c_slots = s.c_unit
    U, c = s.units.shape
    d = s.block_dim
    Co = offdiag[s.kk]
    blocks = jnp.concatenate([diag[s.kept], Co, jnp.swapaxes(Co, -1, -2)])
    # c_entries: kept diagonal blocks, then kk entries (nk + k), then their transposes (< 0)
    idx = np.where(c_entries >= 0, c_entries, -c_entries - 1 + Co.shape[0])
    C = jnp.zeros((U * c * c, d, d), diag.dtype).at[c_slots].add(blocks[idx])
    C = jnp.swapaxes(C.reshape(U, c, c, d, d), 2, 3).reshape(U, c * d, c * d)
    M = C - _unit_diagonal(s, Pinv, W)
    return num.guarded_cholesky(0.5 * (M + jnp.swapaxes(M, -1, -2)))


def _apply_s(s: SchurStructure, fac, v):
    """``S v = C v - E (P^-1 (E^T v))`` from the stored blocks, ``v [nk, d]``."""
    Cd, Co, Pinv, W = fac[:4]
    out = num.matvec(s.reduced.rows, s.reduced.cols, Cd, Co, v)
    y = _mv(Pinv, _et_times(s, W, _to_units(s, v)))
    return out - _from_units(s, _e_times(s, W, y))


def _iterative_factor(s: SchurStructure, diag, offdiag):
    """``(C_diag, C_off, P^-1, W, preconditioner factors, clamped)``: everything the matrix-free
    reduced operator and its preconditioner need; ``S`` itself is not formed."""
    Pinv, W, clamped = _blocks(s, diag, offdiag)
    # a preconditioner block that needed its guard is reported like a clamped pivot
    L, guarded = _preconditioner(s, diag, offdiag, Pinv, W)
    return (diag[s.kept], offdiag[s.kk], Pinv, W, L, clamped | guarded)


def _iterative_tolerance(s: SchurStructure, dtype) -> float:
    """``pcg_tolerance`` when given, else 1e-6 (float64) / 1e-5 (float32): an LM step needs
    no more (Ceres' inexact Newton stops far earlier), and its predicted decrease is exact for
    any CG iterate."""
    if s.reduced.pcg_tolerance is not None:
        return s.reduced.pcg_tolerance
    return 1e-6 if jnp.dtype(dtype) == jnp.float64 else 1e-5


def _iterative_solve_factored(s: SchurStructure, fac, rhs):
    """``(x, iterations, relative residual of the reduced system)``."""
    _, _, Pinv, W, L, _ = fac

    def precondition(r):
        return _from_units(s, num.apply_block_jacobi(L, _to_units(s, r)))

    rk = _reduce_rhs(s, Pinv, W, rhs)
    xk, k, rel = num.conjugate_gradient(partial(_apply_s, s, fac), rk, precondition,
                                        max_iterations=s.reduced.pcg_max_iterations,
                                        tolerance=_iterative_tolerance(s, rhs.dtype))
    return _back_substitute(s, Pinv, W, rhs, xk), k, rel


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
    dD, dO = num.adjoint_blocks(rows, cols, x, lam)
    return dD, dO.astype(x.dtype), lam


_iterative_solve.defvjp(_iterative_fwd, _iterative_bwd)
