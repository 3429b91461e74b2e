"""Static structure of a problem: block offsets, which factor touches which block, the
off-diagonal pattern of the normal equations, and size-class padding (numpy, computed once
when a problem is built; see :class:`jaxgraph.graph.Problem`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .. import linear
from .factors import FactorGroup
from .kinds import kind_of
from .variables import VariableGroup

__all__ = ["size_class", "Structure", "Layout", "IndexData", "pad_group"]


def size_class(count: int) -> int:
    """Padded size of a count: the smallest ``m * 2^e >= count`` with ``8 <= m < 16``.

    Counts up to 16 are kept as they are.  Padding is below 12.5 %, and graphs whose
    counts round to the same classes share one compiled solve (see :meth:`Problem.sized`).
    """
    count = int(count)
    if count <= 16:
        return count
    step = 1 << ((count - 1).bit_length() - 4)
    return -(-count // step) * step


@dataclass(frozen=True, eq=False)
class _GroupStructure:
    global_index: np.ndarray  # [M, k] block index of every slot
    local_index: np.ndarray  # [M, k] index inside the slot's variable group
    free: np.ndarray  # [M, k] float 0/1: slot variable is not fixed
    pairs: tuple  # ((a, b), ...) slot pairs a < b giving off-diagonal blocks


@jax.tree_util.register_pytree_node_class
class IndexData:
    """Which factor touches which variable, as arrays.

    For a problem built by the user these are numpy arrays derived from its static
    structure (constants of the compiled code); for a :meth:`Problem.sized` problem
    they are pytree leaves (traced), so the compiled code depends only on the sizes.

    local_index: per group ``[M, k]`` int32, variable index inside the slot's group.
    slot_free: per group ``[M, k]`` bool, slot variable is free and the factor is real.
    valid: per group ``[M]`` bool, the factor is real (False: padding).
    diag_ids: ``[sum_g M_g k_g]`` int32, block of each slot (diagonal contributions).
    off_rows, off_cols: ``[K]`` int32 off-diagonal block pattern (padding: rows == cols).
    free_blocks: ``[N]`` bool, the block is optimised (False: fixed or padding).
    pad_diag: ``[N, d]`` bool, unit diagonal of unused tangent coordinates and blocks.
    """

    def __init__(self, local_index, slot_free, valid, diag_ids, off_rows, off_cols, free_blocks, pad_diag):
        self.local_index = tuple(local_index)
        self.slot_free = tuple(slot_free)
        self.valid = tuple(valid)
        self.diag_ids = diag_ids
        self.off_rows = off_rows
        self.off_cols = off_cols
        self.free_blocks = free_blocks
        self.pad_diag = pad_diag

    def tree_flatten(self):
        return (self.local_index, self.slot_free, self.valid, self.diag_ids, self.off_rows, self.off_cols,
                self.free_blocks, self.pad_diag), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)


class _Keyed:
    """Static data compared and hashed by its ``key`` (a string of everything that shapes the
    compiled code), so jit caches hit for equal structures."""

    key: str

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return type(other) is type(self) and self.key == other.key


class Structure(_Keyed):
    """Static structure of a problem; hashable by content so jit caches hit."""

    def __init__(self, variables, factor_groups, metadata, anchored=None):
        self.variables = tuple(variables)
        self.kinds = {v.name: kind_of(v.kind) for v in self.variables}
        self.offsets, self.num_blocks = _block_offsets(self.variables)
        self.block_dim = max(self.kinds[v.name].tangent_dim for v in self.variables)
        d, n = self.block_dim, self.num_blocks
        free_blocks = np.ones(n, dtype=bool)
        pad = np.zeros((n, d))
        for v in self.variables:
            o, t = self.offsets[v.name], self.kinds[v.name].tangent_dim
            pad[o : o + v.count, t:] = 1.0
            if v.fixed:
                free_blocks[o + np.asarray(v.fixed)] = False
        pad[~free_blocks] = 1.0
        self.free_blocks = free_blocks
        self.pad_diag = pad
        groups, diag_ids, rows, cols = [], [], [], []
        for g in factor_groups:
            local = g.indices.array
            glob = np.stack([local[:, a] + self.offsets[v] for a, v in enumerate(g.variables)], 1)
            free = free_blocks[glob].astype(np.float64)
            k = glob.shape[1]
            pairs = tuple((a, b) for a in range(k) for b in range(a + 1, k))
            groups.append(_GroupStructure(glob, local, free, pairs))
            diag_ids.append(glob.reshape(-1))
            for a, b in pairs:
                rows.append(glob[:, a])
                cols.append(glob[:, b])
        self.groups = tuple(groups)
        self.diag_ids = np.concatenate(diag_ids) if diag_ids else np.zeros(0, np.int64)
        self.off_rows = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
        self.off_cols = np.concatenate(cols).astype(np.int64) if cols else np.zeros(0, np.int64)
        self.num_offdiag = int(self.off_rows.shape[0])
        self.metadata = dict(metadata or {})
        self.anchored = anchored  # (group, index) the Problem fixed for the gauge, or None
        h = hashlib.sha1()
        h.update(repr((self.variables, anchored)).encode())
        for g, gs in zip(factor_groups, self.groups):
            h.update(repr((g.name, g.type, g.variables)).encode())
            h.update(gs.global_index.tobytes())
        for key in sorted(self.metadata):
            val = self.metadata[key]
            h.update(key.encode())
            h.update(val.tobytes() if isinstance(val, np.ndarray) else repr(val).encode())
        self.key = h.hexdigest()
        self._linear_cache: dict = {}

    def slot_pairs(self, k: int) -> tuple:
        """Slot pairs ``(a, b)``, ``a < b``, of factor group ``k``: its off-diagonal blocks."""
        return self.groups[k].pairs

    def index_data(self, sizes=None) -> IndexData:
        """The index arrays: numpy constants, or padded to ``sizes`` (a :class:`Layout`) as
        device arrays (leaves of a sized problem); computed once per structure and sizes."""
        if sizes is None:
            if "index" not in self._linear_cache:
                self._linear_cache["index"] = IndexData(
                    [gs.local_index.astype(np.int32) for gs in self.groups],
                    [gs.free.astype(bool) for gs in self.groups],
                    [np.ones(gs.local_index.shape[0], bool) for gs in self.groups],
                    self.diag_ids.astype(np.int32), self.off_rows.astype(np.int32),
                    self.off_cols.astype(np.int32), self.free_blocks.copy(), self.pad_diag.astype(bool))
            return self._linear_cache["index"]
        key = ("index", sizes.key)
        if key not in self._linear_cache:
            # device_put: a transfer, not one compiled XLA program per array as jnp.asarray here
            with jax.ensure_compile_time_eval():  # concrete arrays even when first built inside a jit trace
                self._linear_cache[key] = jax.device_put(self._padded_index(sizes))
        return self._linear_cache[key]

    def _padded_index(self, sizes) -> IndexData:
        d = sizes.block_dim
        block = np.empty(self.num_blocks, np.int64)  # exact block -> padded block
        for v in self.variables:
            o, po = self.offsets[v.name], sizes.offsets[v.name]
            block[o : o + v.count] = po + np.arange(v.count)
        local, sfree, valid, diag_ids, rows, cols = [], [], [], [], [], []
        for gs, Mp, pairs in zip(self.groups, sizes.group_counts, sizes.pairs):
            M, k = gs.local_index.shape
            li = np.zeros((Mp, k), np.int32)
            li[:M] = gs.local_index
            fr = np.zeros((Mp, k), bool)
            fr[:M] = gs.free > 0
            va = np.zeros(Mp, bool)
            va[:M] = True
            glob = np.zeros((Mp, k), np.int64)
            glob[:M] = block[gs.global_index]
            local.append(li)
            sfree.append(fr)
            valid.append(va)
            diag_ids.append(glob.reshape(-1))
            for a, b in pairs:
                rows.append(glob[:, a])
                cols.append(np.where(va, glob[:, b], glob[:, a]))  # padding: rows == cols
        free = np.zeros(sizes.num_blocks, bool)
        free[block] = self.free_blocks
        pad = np.ones((sizes.num_blocks, d), bool)
        pad[block] = self.pad_diag > 0
        cat = lambda xs: np.concatenate(xs).astype(np.int32) if xs else np.zeros(0, np.int32)  # noqa: E731
        return IndexData(local, sfree, valid, cat(diag_ids), cat(rows), cat(cols), free, pad)

    def linear_structure(self, method: str):
        """Symbolic analysis of the normal equations for ``method``, computed once."""
        if method not in self._linear_cache:
            self._linear_cache[method] = linear.analyze(
                self.num_blocks, self.block_dim, self.off_rows, self.off_cols, method=method
            )
        return self._linear_cache[method]


def _block_offsets(variables) -> tuple[dict, int]:
    """First block of each variable group (groups stacked in order) and the block count."""
    offsets, n = {}, 0
    for v in variables:
        offsets[v.name] = n
        n += v.count
    return offsets, n


class Layout(_Keyed):
    """Static part of a :meth:`Problem.sized` problem: kinds and padded counts only.

    Equal (and equally hashed) for every problem of one size class, so such problems
    share compiled code and stack under ``vmap``; the pattern is in :class:`IndexData`.
    """

    def __init__(self, exact: Structure, factor_groups, min_sizes=None):
        min_sizes = min_sizes or {}
        self.variables = tuple(
            VariableGroup(v.name, v.kind, max(size_class(v.count), int(min_sizes.get(v.name, 0))))
            for v in exact.variables)
        self.kinds = exact.kinds
        self.offsets, self.num_blocks = _block_offsets(self.variables)
        self.block_dim = exact.block_dim
        self.group_counts = tuple(max(size_class(g.count), int(min_sizes.get(g.name, 0))) for g in factor_groups)
        self.pairs = tuple(gs.pairs for gs in exact.groups)
        self.num_offdiag = sum(M * len(p) for M, p in zip(self.group_counts, self.pairs))
        self.metadata = {}
        self.anchored = exact.anchored
        self.key = repr((self.variables, self.block_dim, self.group_counts, self.pairs, self.anchored))
        self._linear_cache: dict = {}

    def slot_pairs(self, k: int) -> tuple:
        """Slot pairs ``(a, b)``, ``a < b``, of factor group ``k``: its off-diagonal blocks."""
        return self.pairs[k]

    def _cache_key(self):
        """What :meth:`__eq__` compares, with the kinds themselves (``jaxgraph.runtime.executable_cache``)."""
        return (self.variables, self.block_dim, self.group_counts, self.pairs, tuple(sorted(self.kinds.items())),
                self.anchored)

    def linear_structure(self, method: str):
        """``jaxgraph.linear.size_class`` structure for ``method`` (pattern passed per call)."""
        if method not in self._linear_cache:
            self._linear_cache[method] = linear.size_class(self.num_blocks, self.block_dim, self.num_offdiag,
                                                           method=method)
        return self._linear_cache[method]


def _pad_rows(x, M: int, Mp: int):
    """Pad a per-factor leaf ``[M, ...]`` to ``[Mp, ...]`` with copies of its first row."""
    if Mp == M:
        return x
    # numpy for concrete leaves: no eager XLA op (and compile) per new shape
    xp = jnp if isinstance(x, jax.core.Tracer) else np
    x = xp.asarray(x)
    return xp.concatenate([x, xp.broadcast_to(x[:1], (Mp - M,) + x.shape[1:])], axis=0)


def pad_group(g: FactorGroup, Mp: int) -> FactorGroup:
    """The group with every per-factor leaf padded to ``Mp`` rows (indices: placeholders)."""
    M = g.count
    meas = jax.tree_util.tree_map(lambda x: _pad_rows(x, M, Mp), g.measurement)
    nd = None if g.noise is None else g.noise.per_factor_ndim

    def pad_param(x, per_factor_ndim):
        per = jnp.ndim(x) == per_factor_ndim if per_factor_ndim is not None else (
            jnp.ndim(x) >= 1 and jnp.shape(x)[0] == M)
        return _pad_rows(x, M, Mp) if per else x

    noise = None if g.noise is None else jax.tree_util.tree_map(lambda x: pad_param(x, nd), g.noise)
    robust = None if g.robust is None else jax.tree_util.tree_map(lambda x: pad_param(x, 1), g.robust)
    # the pattern of a sized group is data (Problem.index); its static indices are zeros
    placeholder = np.zeros((Mp, len(g.variables)), np.int64)
    return g.replace(indices=placeholder, measurement=meas, noise=noise, robust=robust)


