"""Selected inversion: requested blocks of ``H^-1`` without a dense inverse.

``selected_inverse(plan, diag, offdiag, pairs=(rows, cols))`` factors the block normal
equations with the sparse multifrontal Cholesky (``method="cholesky"``), runs the
Takahashi recurrences of ``_selinv`` over the factor's pattern and gathers the blocks
``(H^-1)[rows[k], cols[k]]``.  Marginal covariances (diagonal blocks) and GNC's flip
scores (the blocks between the variables of a factor) are its two users.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _numeric as num
from . import _selinv
from ._api import BlockStructure, _batched, _check, analyze

# Plans hold numpy maps of the size of the factor: keep those of the last few patterns.
_MAX_PLANS = 16
_plans: OrderedDict = OrderedDict()


@dataclass(frozen=True, eq=False)
class SelectedInversePlan:
    """Static data of :func:`selected_inverse` for one block pattern (numpy, hashed by identity).

    ``structure``: the ``method="cholesky"`` :class:`BlockStructure` of the pattern
    (ordering, supernodes, tiers).  ``maps``: the selected-inversion gather maps.
    ``located``: cache of the storage locations of requested ``pairs`` (filled on use).
    Build it with :func:`selected_inverse_plan`; use it as a closure constant or a
    ``jax.jit`` static argument.
    """

    structure: BlockStructure
    maps: _selinv.SelinvPlan
    located: dict = field(default_factory=dict, repr=False)

    def locations(self, rows: np.ndarray, cols: np.ndarray):
        """Where ``(H^-1)[rows[k], cols[k]]`` is stored (numpy, cached per request)."""
        key = _digest(self.structure.num_blocks, rows, cols)
        hit = self.located.get(key)
        if hit is None:
            hit = _selinv.pair_locations(self.structure.symbolic.tiers, self.structure.num_blocks,
                                         rows, cols)
            self.located[key] = hit
        return hit


class SelectedInverseInfo(NamedTuple):
    """Diagnostics of the factorisation behind :func:`selected_inverse` (batch axes lead).

    ``clamped``: bool ``[]``, some pivot block was not numerically positive definite and
    was replaced (``guarded_cholesky``): the blocks are then not those of ``H^-1``.
    ``pivot_ratio``: ``[n]`` in the blocks' dtype, per variable block the smallest
    Cholesky pivot (Schur-complement diagonal entry ``L_kk^2``) divided by the matching
    diagonal entry of ``H``; a ratio of a few ``eps`` means ``H`` is singular there.
    """

    clamped: jax.Array
    pivot_ratio: jax.Array


def _digest(n: int, rows, cols) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    rows = np.ascontiguousarray(rows, np.int64)
    cols = np.ascontiguousarray(cols, np.int64)
    h.update(np.asarray([n, rows.size], np.int64).tobytes())
    h.update(rows.tobytes())
    h.update(cols.tobytes())
    return h.digest()


def selected_inverse_plan(num_blocks: int, block_dim: int, rows, cols) -> SelectedInversePlan:
    """Symbolic analysis for :func:`selected_inverse` (numpy, outside ``jit``).

    Args:
      num_blocks, block_dim, rows, cols: the pattern, as for :func:`analyze` (``rows, cols
        [M]`` integer block coordinates of the off-diagonal blocks).
    Returns:
      A :class:`SelectedInversePlan`; the same object for the same pattern while it stays
      among the last 16 patterns seen (the analysis costs up to seconds for 10^4 blocks).
    """
    rows = np.asarray(rows)
    cols = np.asarray(cols)
    key = (int(block_dim), _digest(int(num_blocks), rows, cols))
    plan = _plans.get(key)
    if plan is None:
        structure = analyze(num_blocks, block_dim, rows, cols, method="cholesky")
        maps = _selinv.plan_selected_inverse(structure.symbolic.tiers, structure.num_blocks)
        plan = SelectedInversePlan(structure=structure, maps=maps)
        _plans[key] = plan
        while len(_plans) > _MAX_PLANS:
            _plans.popitem(last=False)
    else:
        _plans.move_to_end(key)
    return plan


def _pivot_ratios(tiers, n: int, d: int, diag, factors):
    """``[n]``: per variable the smallest ``L_kk^2 / H_kk`` of its ``d`` scalar pivots."""
    dt = diag.dtype
    # padded front columns index block n: give them a unit reference entry
    hdiag = jnp.concatenate([jnp.diagonal(diag, axis1=-2, axis2=-1), jnp.ones((1, d), dt)])
    ratio = jnp.full((n + 1,), jnp.inf, dt)
    for T, (L11, _) in zip(tiers, factors):
        piv = jnp.diagonal(L11, axis1=-2, axis2=-1) ** 2
        ci = jnp.asarray(T.col_idx)
        ref = hdiag[ci].reshape(piv.shape)
        r_ = (piv / jnp.where(ref > 0, ref, 1)).reshape(ci.shape + (d,)).min(axis=-1)
        ratio = ratio.at[ci].min(r_)
    return ratio[:n]


def _selected_inverse1(plan, locations, diag, offdiag):
    st = plan.structure
    tiers, n, d = st.symbolic.tiers, st.num_blocks, st.block_dim
    factors, clamped = num.cholesky_factor(tiers, n, d, diag, offdiag)
    buffers = _selinv.selected_inverse(tiers, plan.maps, d, factors)
    info = SelectedInverseInfo(clamped=clamped, pivot_ratio=_pivot_ratios(tiers, n, d, diag, factors))
    return _selinv.pair_blocks(locations, buffers), info


def selected_inverse(plan: SelectedInversePlan, diag_blocks, offdiag_blocks, *, pairs):
    """Requested blocks of ``H^-1`` by sparse Cholesky and selected inversion (jit/vmap-able).

    Only the blocks of the inverse on the pattern of the Cholesky factor are formed (from
    the root of the elimination tree down, at about the cost of one factorisation); never
    a dense inverse.  Every diagonal block and every block ``(i, j)`` of ``H``'s own pattern
    (e.g. the variables of one factor) lies on it.

    Args:
      plan: :func:`selected_inverse_plan` of the pattern.
      diag_blocks: ``[..., n, d, d]`` float32/float64, ``H_ii`` (symmetrised internally).
      offdiag_blocks: ``[..., M, d, d]``, ``offdiag_blocks[k] = H[rows[k], cols[k]]`` of
        the plan's pattern.  Leading batch axes broadcast against each other.
      pairs: ``(rows, cols)``, static integer numpy arrays ``[K]``: the blocks wanted.
    Returns:
      ``(blocks, info)``: ``blocks [..., K, d, d]`` (``blocks[k] = (H^-1)[rows[k],
      cols[k]]``, the inputs' dtype) and a :class:`SelectedInverseInfo`.  A singular ``H``
      gives meaningless (possibly non-finite) blocks; ``info`` tells.
    Raises:
      ValueError for a pair off the pattern of the factor or out of range, or for blocks of
      the wrong shape.
    """
    if not isinstance(plan, SelectedInversePlan):
        raise TypeError("selected_inverse: expected a SelectedInversePlan from "
                        f"jaxgraph.linear.selected_inverse_plan, got {type(plan).__name__}")
    diag_blocks = jnp.asarray(diag_blocks)
    offdiag_blocks = jnp.asarray(offdiag_blocks)
    _check(plan.structure, diag_blocks, offdiag_blocks, who="selected_inverse")
    rows, cols = (np.asarray(a) for a in pairs)
    n = plan.structure.num_blocks
    if (rows.ndim != 1 or rows.shape != cols.shape
            or (rows.size and not (np.issubdtype(rows.dtype, np.integer) and np.issubdtype(cols.dtype, np.integer)))):
        raise ValueError(f"selected_inverse: pairs must be two 1-D integer arrays of equal length, "
                         f"got shapes {rows.shape} and {cols.shape}")
    if rows.size and (min(rows.min(), cols.min()) < 0 or max(rows.max(), cols.max()) >= n):
        raise ValueError(f"selected_inverse: a pair lies outside [0, {n})")
    locations = plan.locations(rows, cols)
    return _batched(partial(_selected_inverse1, plan, locations), [diag_blocks, offdiag_blocks], [3, 3])
