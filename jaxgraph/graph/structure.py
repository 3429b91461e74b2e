"""Static structure of a problem: block offsets, which factor touches which block, the
off-diagonal pattern of the normal equations, and size-class padding (numpy, computed once
when a problem is built; see :class:`jaxgraph.graph.Problem`).

Blocks without padding: the normal equations are split into square blocks of
``d = gcd`` of the variable groups' tangent sizes, and a variable of tangent size ``t`` owns
``t / d`` consecutive blocks (SE3 poses with 3-D points: ``d = 3``, two blocks per pose, one
per point; SE2 poses with 2-D points: ``d = 1``). Unknowns and stored entries are then the
true counts; a problem whose groups share one tangent size has one block per variable.
"""

from __future__ import annotations

import hashlib
import math
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
    global_index: np.ndarray  # [M, k] first block of every slot's variable
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
    off_rows, off_cols: ``[K]`` int32 off-diagonal block pattern (padding: rows == cols).
    free_blocks: ``[N]`` bool, the block is optimised (False: fixed or padding).
    pad_diag: ``[N, d]`` bool, unit diagonal of fixed and padding blocks.
    """

    def __init__(self, local_index, slot_free, valid, off_rows, off_cols, free_blocks, pad_diag):
        self.local_index = tuple(local_index)
        self.slot_free = tuple(slot_free)
        self.valid = tuple(valid)
        self.off_rows = off_rows
        self.off_cols = off_cols
        self.free_blocks = free_blocks
        self.pad_diag = pad_diag

    def tree_flatten(self):
        return (self.local_index, self.slot_free, self.valid, self.off_rows, self.off_cols,
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


class _Blocks:
    """Block layout shared by :class:`Structure` and :class:`Layout`: block size ``d``, blocks
    per variable of each group, each group's first block, and the pattern built from them."""

    def _set_blocks(self, variables, kinds):
        self.kinds = kinds
        dims = [kinds[v.name].tangent_dim for v in variables]
        self.block_dim = math.gcd(*dims) if dims else 1
        self.blocks_per = {v.name: t // self.block_dim for v, t in zip(variables, dims)}
        self.offsets, n = {}, 0
        for v in variables:
            self.offsets[v.name] = n
            n += v.count * self.blocks_per[v.name]
        self.num_blocks = n

    def variable_blocks(self, name: str, index) -> np.ndarray:
        """Block ids ``[..., b]`` of variables ``index`` (``[...]``, static) of group ``name``."""
        b = self.blocks_per[name]
        return self.offsets[name] + np.asarray(index, np.int64)[..., None] * b + np.arange(b)

    def block_variable(self, ids) -> list:
        """``(group name, local indices)`` of the variables owning block ids ``ids`` (static)."""
        ids = np.asarray(ids, np.int64)
        out = []
        for v in self.variables:
            o, b = self.offsets[v.name], self.blocks_per[v.name]
            mine = ids[(ids >= o) & (ids < o + v.count * b)]
            out.append((v.name, np.unique((mine - o) // b)))
        return out

    def _pattern(self, slot_blocks, valid, variable_valid):
        """Off-diagonal pattern ``(rows, cols)``: per factor group and slot pair ``(a, b)``
        every sub-block pair of the two variables (factor-major), then per variable group
        with several blocks per variable the pairs ``s < s'`` inside each variable.
        ``slot_blocks``: per group a list of ``[M, b_a]`` block ids; ``valid``: per group
        ``[M]`` (padding: rows == cols); ``variable_valid``: per variable group ``[count]``."""
        rows, cols = [], []
        for blocks, va, pairs in zip(slot_blocks, valid, self._pairs()):
            for a, b in pairs:
                r = np.broadcast_to(blocks[a][:, :, None], blocks[a].shape + blocks[b].shape[1:2])
                c = np.broadcast_to(blocks[b][:, None, :], r.shape)
                c = np.where(va[:, None, None], c, r)
                rows.append(r.reshape(-1))
                cols.append(c.reshape(-1))
        for v, vv in zip(self.variables, variable_valid):
            s, t = self.intra_pairs(v.name)
            if s.size:
                first = self.offsets[v.name] + np.arange(v.count) * self.blocks_per[v.name]
                r = first[:, None] + s
                rows.append(r.reshape(-1))
                cols.append(np.where(vv[:, None], first[:, None] + t, r).reshape(-1))
        cat = lambda xs: np.concatenate(xs).astype(np.int64) if xs else np.zeros(0, np.int64)  # noqa: E731
        return cat(rows), cat(cols)

    def intra_pairs(self, name: str):
        """Sub-block pairs ``(s, t)``, ``s < t``, inside one variable of group ``name``."""
        s, t = np.triu_indices(self.blocks_per[name], 1)
        return s, t

    def _offdiag_count(self, group_counts, slot_groups) -> int:
        """Length of :meth:`_pattern`'s arrays for factor groups of ``group_counts`` factors."""
        bp = self.blocks_per
        n = sum(M * bp[names[a]] * bp[names[b]]
                for M, names, pairs in zip(group_counts, slot_groups, self._pairs()) for a, b in pairs)
        return n + sum(v.count * len(self.intra_pairs(v.name)[0]) for v in self.variables)


class Structure(_Keyed, _Blocks):
    """Static structure of a problem; hashable by content so jit caches hit."""

    def __init__(self, variables, factor_groups, metadata, anchored=None):
        self.variables = tuple(variables)
        self._set_blocks(self.variables, {v.name: kind_of(v.kind) for v in self.variables})
        free_blocks = np.ones(self.num_blocks, dtype=bool)
        for v in self.variables:
            if v.fixed:
                free_blocks[self.variable_blocks(v.name, v.fixed).reshape(-1)] = False
        self.free_blocks = free_blocks
        self.pad_diag = np.repeat(~free_blocks[:, None], self.block_dim, axis=1).astype(np.float64)
        groups, slot_blocks = [], []
        self.slot_groups = tuple(g.variables for g in factor_groups)  # variable group of each slot
        self._names = tuple(g.name for g in factor_groups)
        for g in factor_groups:
            local = g.indices.array
            blocks = [self.variable_blocks(v, local[:, a]) for a, v in enumerate(g.variables)]
            glob = np.stack([bl[:, 0] for bl in blocks], 1)
            free = free_blocks[glob].astype(np.float64)
            k = glob.shape[1]
            pairs = tuple((a, b) for a in range(k) for b in range(a + 1, k))
            groups.append(_GroupStructure(glob, local, free, pairs))
            slot_blocks.append(blocks)
        self.groups = tuple(groups)
        self.off_rows, self.off_cols = self._pattern(
            slot_blocks, [np.ones(gs.local_index.shape[0], bool) for gs in groups],
            [np.ones(v.count, bool) for v in self.variables])
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
        self._types = tuple(g.type for g in factor_groups)
        self._linear_cache: dict = {}

    def _cache_key(self):
        """What shapes the compiled solve, for ``jaxgraph.runtime.executable_cache``: the
        variable groups, each factor group's name, type (keyed by its own fields or
        ``_cache_key``; a custom residual by its code) and slots, digests of the index arrays
        and of the metadata, and the gauge anchor. (:attr:`key` hashes the same data with
        ``repr``, which for a custom residual holds its memory address: good for one process.)"""
        meta = hashlib.sha1()
        for key in sorted(self.metadata):
            val = self.metadata[key]
            meta.update(key.encode())
            meta.update(val.tobytes() if isinstance(val, np.ndarray) else repr(val).encode())
        groups = tuple((gs_name, t, names, hashlib.sha1(gs.global_index.tobytes()).hexdigest())
                       for gs_name, t, names, gs in zip(self._names, self._types, self.slot_groups, self.groups))
        return (self.variables, groups, meta.hexdigest(), self.anchored)

    def _pairs(self):
        return [gs.pairs for gs in self.groups]

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
                    self.off_rows.astype(np.int32), self.off_cols.astype(np.int32), self.free_blocks.copy(),
                    self.pad_diag.astype(bool))
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
            o, po, b = self.offsets[v.name], sizes.offsets[v.name], self.blocks_per[v.name]
            block[o : o + v.count * b] = po + np.arange(v.count * b)
        local, sfree, valid, slot_blocks = [], [], [], []
        for names, gs, Mp in zip(self.slot_groups, self.groups, sizes.group_counts):
            M, k = gs.local_index.shape
            li = np.zeros((Mp, k), np.int64)
            li[:M] = gs.local_index
            fr = np.zeros((Mp, k), bool)
            fr[:M] = gs.free > 0
            va = np.zeros(Mp, bool)
            va[:M] = True
            local.append(li.astype(np.int32))
            sfree.append(fr)
            valid.append(va)
            slot_blocks.append([sizes.variable_blocks(names[a], li[:, a]) for a in range(k)])
        rows, cols = sizes._pattern(slot_blocks, valid, [np.arange(v.count) < u.count
                                                         for v, u in zip(sizes.variables, self.variables)])
        free = np.zeros(sizes.num_blocks, bool)
        free[block] = self.free_blocks
        pad = np.ones((sizes.num_blocks, d), bool)
        pad[block] = self.pad_diag > 0
        return IndexData(local, sfree, valid, rows.astype(np.int32), cols.astype(np.int32), free, pad)

    def linear_structure(self, method: str, schur: bool = True):
        """Symbolic analysis of the normal equations for ``method``, computed once. With
        ``schur`` and variable groups worth eliminating (:meth:`schur_groups`), a
        :func:`jaxgraph.linear.analyze_schur` plan whose reduced system uses ``method``."""
        key = (method, schur)
        if key not in self._linear_cache:
            groups = self.schur_groups() if schur else ()
            if groups:
                eliminate = np.concatenate([self.variable_blocks(g, np.arange(self.count(g))) for g in groups])
                # the kept variables (cameras) whole: an iterative solve's Schur-Jacobi blocks
                kept = [self.variable_blocks(v.name, np.arange(v.count)) for v in self.variables
                        if v.name not in groups]
                self._linear_cache[key] = linear.analyze_schur(self.num_blocks, self.block_dim, self.off_rows,
                                                               self.off_cols, eliminate, method=method,
                                                               kept_variables=kept)
            else:
                self._linear_cache[key] = linear.analyze(self.num_blocks, self.block_dim, self.off_rows,
                                                         self.off_cols, method=method)
        return self._linear_cache[key]

    def count(self, name: str) -> int:
        """Number of variables of group ``name``."""
        return next(v.count for v in self.variables if v.name == name)

    def schur_groups(self) -> tuple:
        """Variable groups to eliminate first by a Schur complement (points, landmarks): groups
        of which no factor touches two variables (so their block of ``H`` is block diagonal),
        smallest tangent first while no factor touches two eliminated variables, kept only when they
        hold at least as many unknowns as the rest (bundle adjustment, visual odometry; not a
        pose graph with a few landmarks, whose reduced system would only be denser)."""
        slots = [names for names in self.slot_groups]
        def unknowns(name):
            return self.count(name) * self.kinds[name].tangent_dim
        chosen = []
        # smallest variables first (points before cameras): their blocks of H are inverted
        # one by one, and a 9 x 9 camera block compiled a large unrolled inverse for nothing
        for v in sorted(self.variables, key=lambda v: (self.kinds[v.name].tangent_dim, -unknowns(v.name))):
            trial = set(chosen) | {v.name}
            if all(sum(n in trial for n in names) <= 1 for names in slots):
                chosen.append(v.name)
        total = sum(unknowns(v.name) for v in self.variables)
        eliminated = sum(unknowns(n) for n in chosen)
        if not chosen or eliminated == total or 2 * eliminated < total:
            return ()
        return tuple(n for n in (v.name for v in self.variables) if n in chosen)


class Layout(_Keyed, _Blocks):
    """Static part of a :meth:`Problem.sized` problem: kinds and padded counts only.

    Equal (and equally hashed) for every problem of one size class, so such problems
    share compiled code and stack under ``vmap``; the pattern is in :class:`IndexData`.
    """

    def __init__(self, exact: Structure, factor_groups, min_sizes=None):
        min_sizes = min_sizes or {}
        self.variables = tuple(
            VariableGroup(v.name, v.kind, max(size_class(v.count), int(min_sizes.get(v.name, 0))))
            for v in exact.variables)
        self._set_blocks(self.variables, exact.kinds)
        self.group_counts = tuple(max(size_class(g.count), int(min_sizes.get(g.name, 0))) for g in factor_groups)
        self.pairs = tuple(gs.pairs for gs in exact.groups)
        self.num_offdiag = self._offdiag_count(self.group_counts, exact.slot_groups)
        self.metadata = {}
        self.anchored = exact.anchored
        self.key = repr((self.variables, self.block_dim, self.group_counts, self.pairs, self.anchored))
        self._linear_cache: dict = {}

    def _pairs(self):
        return list(self.pairs)

    def slot_pairs(self, k: int) -> tuple:
        """Slot pairs ``(a, b)``, ``a < b``, of factor group ``k``: its off-diagonal blocks."""
        return self.pairs[k]

    def _cache_key(self):
        """What :meth:`__eq__` compares, with the kinds themselves (``jaxgraph.runtime.executable_cache``)."""
        return (self.variables, self.block_dim, self.group_counts, self.pairs, tuple(sorted(self.kinds.items())),
                self.anchored)

    def linear_structure(self, method: str, schur: bool = True):
        """``jaxgraph.linear.size_class`` structure for ``method`` (pattern passed per call; a
        size class has no fixed pattern to plan a Schur complement on, so ``schur`` is unused)."""
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


