"""Factor-graph problems: variable groups, factor groups, block structure, linearisation.

A :class:`Problem` is a pytree. Its leaves are the float parameters of its factor
groups (measurements, noise, robust thresholds, user data); everything structural
(variable groups, which factor touches which variable, the block-sparsity pattern of
the normal equations and the cached symbolic analysis of the linear solver) is static
auxiliary data, computed once in numpy when the problem is built. Two problems with
the same structure therefore share compiled code, can be stacked for ``jax.vmap``, and
``jax.grad`` with respect to a problem reaches every measurement and noise parameter.

Values are a ``dict`` mapping each variable-group name to a ``[count, param_dim]``
array (parametrisations in :mod:`jaxgraph.graph.manifolds`).
"""

from __future__ import annotations

import hashlib
from functools import partial
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import linear, smallmat
from ..runtime.compile_cache import entry_point
from .factors import FactorGroup, builtin_error, builtin_jacobians
from .kinds import KindSpec, kind_of

__all__ = ["VariableGroup", "Problem", "Linearization", "size_class"]


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


@dataclass(frozen=True)
class VariableGroup:
    """``count`` variables of one kind: a ``jaxgraph.lie`` group class (``lie.SE3``, ...), a
    Euclidean dimension, or an alias ``"SE2"``, ``"SE3"``, ``"SO3"``, ``"R<n>"`` (see
    ``graph/manifolds.py`` for the values layout of each).

    ``fixed`` lists indices held constant by the solver (g2o ``FIX``).
    """

    name: str
    kind: KindSpec
    count: int
    fixed: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "fixed", tuple(int(i) for i in np.asarray(self.fixed, dtype=np.int64).ravel()))


@dataclass(frozen=True, eq=False)
class _GroupStructure:
    global_index: np.ndarray  # [M, k] block index of every slot
    local_index: np.ndarray  # [M, k] index inside the slot's variable group
    free: np.ndarray  # [M, k] float 0/1: slot variable is not fixed
    pairs: tuple  # ((a, b), ...) slot pairs a < b giving off-diagonal blocks


@jax.tree_util.register_pytree_node_class
class _IndexData:
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


def _mask(x, dtype):
    """``x`` as a 0/1 float array, or ``None`` when it is a constant all-true mask."""
    if isinstance(x, np.ndarray) and x.all():
        return None
    return jnp.asarray(x).astype(dtype)


class _Structure:
    """Static structure of a problem; hashable by content so jit caches hit."""

    def __init__(self, variables, factor_groups, metadata):
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
        h = hashlib.sha1()
        h.update(repr(self.variables).encode())
        for g, gs in zip(factor_groups, self.groups):
            h.update(repr((g.name, g.kind, g.variables, g.residual_dim)).encode())
            h.update(gs.global_index.tobytes())
        for key in sorted(self.metadata):
            val = self.metadata[key]
            h.update(key.encode())
            h.update(val.tobytes() if isinstance(val, np.ndarray) else repr(val).encode())
        self.key = h.hexdigest()
        self._linear_cache: dict = {}

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _Structure) and self.key == other.key

    def index_data(self, sizes=None) -> _IndexData:
        """The index arrays: numpy constants, or padded to ``sizes`` (a :class:`_Layout`) as
        device arrays (leaves of a sized problem); computed once per structure and sizes."""
        if sizes is None:
            if "index" not in self._linear_cache:
                self._linear_cache["index"] = _IndexData(
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

    def _padded_index(self, sizes) -> _IndexData:
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
        return _IndexData(local, sfree, valid, cat(diag_ids), cat(rows), cat(cols), free, pad)

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


class _Layout:
    """Static part of a :meth:`Problem.sized` problem: kinds and padded counts only.

    Equal (and equally hashed) for every problem of one size class, so such problems
    share compiled code and stack under ``vmap``; the pattern is in :class:`_IndexData`.
    """

    def __init__(self, exact: _Structure, factor_groups, min_sizes=None):
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
        self.key = repr((self.variables, self.block_dim, self.group_counts, self.pairs))
        self._linear_cache: dict = {}

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _Layout) and self.key == other.key

    def _cache_key(self):
        """What :meth:`__eq__` compares, with the kinds themselves (``jaxgraph.runtime.executable_cache``)."""
        return (self.variables, self.block_dim, self.group_counts, self.pairs, tuple(sorted(self.kinds.items())))

    def linear_structure(self, method: str):
        """``jaxgraph.linear.size_class`` structure for ``method`` (pattern passed per call)."""
        if method not in self._linear_cache:
            from .. import linear

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


def _per_factor_ndim(noise) -> int | None:
    """Rank of a per-factor parameter leaf of a noise model (shared leaves have one less)."""
    from . import noise as nm

    for cls, nd in ((nm.Isotropic, 1), (nm.Diagonal, 2), (nm.SqrtInformation, 3), (nm.Information, 3)):
        if isinstance(noise, cls):
            return nd
    return None


def _pad_group(g: FactorGroup, Mp: int) -> FactorGroup:
    """The group with every per-factor leaf padded to ``Mp`` rows (indices: placeholders)."""
    M = g.count
    meas = jax.tree_util.tree_map(lambda x: _pad_rows(x, M, Mp), g.measurement)
    nd = _per_factor_ndim(g.noise)

    def pad_param(x, per_factor_ndim):
        per = jnp.ndim(x) == per_factor_ndim if per_factor_ndim is not None else (
            jnp.ndim(x) >= 1 and jnp.shape(x)[0] == M)
        return _pad_rows(x, M, Mp) if per else x

    noise = None if g.noise is None else jax.tree_util.tree_map(lambda x: pad_param(x, nd), g.noise)
    robust = None if g.robust is None else jax.tree_util.tree_map(lambda x: pad_param(x, 1), g.robust)
    # the pattern of a sized group is data (Problem.index); its static indices are zeros
    placeholder = np.zeros((Mp, len(g.variables)), np.int64)
    return FactorGroup(g.name, g.kind, g.variables, placeholder, meas, noise, robust, g.residual_fn, g.residual_dim)


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


@jax.tree_util.register_pytree_node_class
class Problem:
    """A factor graph: variable groups plus stacked factor groups.

    Args:
      variables: sequence of :class:`VariableGroup`.
      factors: sequence of :class:`jaxgraph.factors.FactorGroup` (unique names).
      anchor: fix the gauge. If ``True`` (default) and the problem has no prior factor
        and no fixed variable, the first variable of the first Lie-group variable group is
        held fixed at its initial value. (``read_g2o`` instead adds GTSAM's convention, a
        prior on pose 0 at its initial value with isotropic sigma 1e-6.)
      metadata: static extra information (used by the g2o writer).

    Raises:
      ValueError / TypeError naming the factor group, factor index and variable on any
      inconsistency (unknown variable group, index out of range, measurement or noise of
      the wrong shape, a factor connecting a variable to itself, non-finite numbers).
    """

    def __init__(
        self,
        variables: Sequence[VariableGroup],
        factors: Sequence[FactorGroup],
        *,
        anchor: bool = True,
        metadata: Mapping[str, Any] | None = None,
    ):
        variables = list(variables)
        factors = list(factors)
        _validate_variables(variables)
        kinds = {v.name: kind_of(v.kind) for v in variables}
        counts = {v.name: v.count for v in variables}
        names = set()
        for gi, g in enumerate(factors):
            if not isinstance(g, FactorGroup):
                raise TypeError(
                    f"factors[{gi}] is a {type(g).__name__}, expected a FactorGroup "
                    "(build it with jaxgraph.factors.between/prior/custom)"
                )
            if g.name in names:
                raise ValueError(f"two factor groups are named {g.name!r}; names must be unique")
            names.add(g.name)
            _validate_group(g, kinds, counts)
        if anchor and not any(g.kind == "prior" for g in factors) and not any(v.fixed for v in variables):
            for k, v in enumerate(variables):
                if kinds[v.name].is_group:
                    variables[k] = VariableGroup(v.name, v.kind, v.count, (0,))
                    break
        self.factors = tuple(factors)
        self.structure = _Structure(variables, self.factors, metadata)
        self.index = None

    # -- pytree ----------------------------------------------------------------------
    def tree_flatten(self):
        return (self.factors, self.index), self.structure

    @classmethod
    def tree_unflatten(cls, structure, children):
        obj = object.__new__(cls)
        obj.factors = tuple(children[0])
        obj.index = children[1]
        obj.structure = structure
        return obj

    # -- size classes ----------------------------------------------------------------
    @property
    def is_sized(self) -> bool:
        """True for a problem from :meth:`sized` (its pattern is data, not structure)."""
        return self.index is not None

    def sized(self, min_sizes: Mapping[str, int] | None = None) -> "Problem":
        """The same problem padded to its size class, with the pattern as data.

        Every variable group and factor group is padded to :func:`size_class` of its
        count (or to ``min_sizes[name]`` when larger): padded variables are fixed at the
        identity, padded factors are masked out (zero residual, zero cost).  Which
        factor touches which variable becomes pytree leaves (:class:`_IndexData`)
        instead of static structure, so two graphs of one size class run the *same*
        compiled solve, and such problems stack under ``jax.vmap`` even when their
        sparsity patterns differ.  Use :meth:`pad_values` / :meth:`unpad_values` for
        the values.  The fixed-pattern linear solver ``"cholesky"`` (JAX multifrontal)
        cannot run on a sized problem; ``"host"``, ``"dense"`` and ``"pcg"`` can.
        """
        if self.is_sized:
            return self
        cached = getattr(self, "_sized", None)
        if cached is not None and min_sizes is None:
            return cached
        layout = _Layout(self.structure, self.factors, min_sizes)
        fs = tuple(_pad_group(g, Mp) for g, Mp in zip(self.factors, layout.group_counts))
        obj = Problem.tree_unflatten(layout, (fs, None))
        obj.index = self.structure.index_data(layout)
        if min_sizes is None and not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(fs)):
            self._sized = obj  # concrete leaves: reuse the padded copy on the next solve
        return obj

    def pad_values(self, values) -> dict:
        """Call on a :meth:`sized` problem: the original problem's values with identity rows appended."""
        st = self.structure
        out = {}
        for v in self.variables:
            x = values[v.name]
            extra = v.count - x.shape[0]
            if extra == 0:
                out[v.name] = x
            elif isinstance(x, jax.core.Tracer):
                out[v.name] = jnp.concatenate([x, st.kinds[v.name].identity(extra, x.dtype)], 0)
            else:  # numpy: no eager XLA op per new shape
                ident = st.kinds[v.name].identity_row(x.dtype)
                out[v.name] = np.concatenate([np.asarray(x), np.broadcast_to(ident, (extra, ident.size))], 0)
        return out

    def unpad_values(self, values, original: "Problem") -> dict:
        """Values of a :meth:`sized` problem cut back to the variable counts of ``original``
        (unchanged when this problem is not sized)."""
        if not self.is_sized:
            return values
        # an unpadded group is returned as is: a slice is one more dispatched op per solve
        return {v.name: values[v.name] if values[v.name].shape[-2] == v.count else values[v.name][..., : v.count, :]
                for v in original.variables}

    def _index(self) -> _IndexData:
        return self.index if self.index is not None else self.structure.index_data()

    def free_mask(self, dtype) -> jax.Array:
        """``[N, 1]`` 1 for optimised blocks, 0 for fixed (and padded) ones."""
        return jnp.asarray(self._index().free_blocks).astype(dtype)[:, None]

    def linear_pattern(self):
        """``(rows, cols)`` of the normal equations' off-diagonal blocks (padding: rows == cols)."""
        idx = self._index()
        return idx.off_rows, idx.off_cols

    # -- accessors -------------------------------------------------------------------
    @property
    def variables(self) -> tuple[VariableGroup, ...]:
        return self.structure.variables

    @property
    def metadata(self) -> dict:
        return self.structure.metadata

    def group(self, key) -> FactorGroup:
        """Factor group by name or position."""
        if isinstance(key, int):
            return self.factors[key]
        for g in self.factors:
            if g.name == key:
                return g
        raise KeyError(f"no factor group named {key!r}; groups: {[g.name for g in self.factors]}")

    def _group_index(self, key) -> int:
        if isinstance(key, int):
            return key
        for k, g in enumerate(self.factors):
            if g.name == key:
                return k
        raise KeyError(f"no factor group named {key!r}; groups: {[g.name for g in self.factors]}")

    def replace_group(self, key, group: FactorGroup) -> "Problem":
        """A problem with one factor group's leaves replaced (same structure)."""
        k = self._group_index(key)
        old = self.factors[k]
        if jax.tree_util.tree_structure(old) != jax.tree_util.tree_structure(group):
            raise ValueError(f"replace_group: group {old.name!r} must keep its structure")
        fs = list(self.factors)
        fs[k] = group
        return Problem.tree_unflatten(self.structure, (tuple(fs), self.index))

    def __repr__(self):
        vs = ", ".join(f"{v.name}: {v.count} x {v.kind}" for v in self.variables)
        fs = ", ".join(f"{g.name}: {g.count} x {g.kind}" for g in self.factors)
        return f"Problem(variables=[{vs}], factors=[{fs}])"

    # -- values ----------------------------------------------------------------------
    def check_values(self, values) -> None:
        """Raise a clear error unless ``values`` matches the problem's variable groups."""
        if not isinstance(values, Mapping):
            raise TypeError(f"values must be a dict of arrays keyed by variable group, got {type(values).__name__}")
        expected = {v.name for v in self.variables}
        if set(values) != expected:
            missing, extra = expected - set(values), set(values) - expected
            raise ValueError(f"values keys do not match the problem: missing {sorted(missing)}, unexpected {sorted(extra)}")
        dtypes = set()
        for v in self.variables:
            x = values[v.name]
            k = self.structure.kinds[v.name]
            shape = tuple(jnp.shape(x))
            if shape != (v.count, k.param_dim):
                raise ValueError(
                    f"values[{v.name!r}] must have shape ({v.count}, {k.param_dim}) "
                    f"({v.count} {v.kind} variables), got {shape}"
                )
            # an array's own dtype (jnp.result_type gives the same for arrays, 25x slower)
            dt = x.dtype if isinstance(x, (jax.Array, np.ndarray)) else jnp.result_type(x)
            if not jnp.issubdtype(dt, jnp.floating):
                raise TypeError(f"values[{v.name!r}] must be floating point, got {dt}")
            dtypes.add(dt)
        if len(dtypes) > 1:
            raise TypeError(f"all values must share one float dtype, got {sorted(map(str, dtypes))}")

    def identity_values(self, dtype=jnp.float32) -> dict:
        """Values at the identity (zeros for Euclidean variables)."""
        return {v.name: self.structure.kinds[v.name].identity(v.count, dtype) for v in self.variables}

    def retract(self, values, dx):
        """``X Exp(dx)`` for every variable; ``dx[N, block_dim]`` (fixed variables unchanged)."""
        st = self.structure
        out = {}
        for v in self.variables:
            k = st.kinds[v.name]
            o = st.offsets[v.name]
            p = values[v.name]
            moved = k.retract(p, dx[o : o + v.count, : k.tangent_dim].astype(p.dtype))
            free = self._index().free_blocks[o : o + v.count]
            out[v.name] = moved if isinstance(free, np.ndarray) and free.all() else jnp.where(free[:, None], moved, p)
        return out

    # -- evaluation ------------------------------------------------------------------
    def prepared(self, dtype) -> "Problem":
        """Leaves cast to ``dtype`` and noise models in solver form (done once per solve)."""
        fs = []
        for g in self.factors:
            meas = jax.tree_util.tree_map(
                lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else jnp.asarray(x),
                g.measurement,
            )
            if g.kind in ("between", "prior"):
                # Z^-1 as a matrix, once per solve instead of once per linearisation.
                k = self.structure.kinds[g.variables[0]]
                meas = k.inverse_matrix(k.to_matrix(meas))
            noise = None if g.noise is None else g.noise.astype(dtype).prepare()
            robust = None if g.robust is None else jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), g.robust)
            fs.append(g.replace(measurement=meas, noise=noise, robust=robust))
        return Problem.tree_unflatten(self.structure, (tuple(fs), self.index))

    def _group_terms(self, k: int, values, with_jacobians: bool, unwhitened=None):
        """Whitened (and robust-reweighted) residuals, Jacobians and per-factor costs.

        ``unwhitened``: the group's ``(r, J)`` when already computed (see :meth:`_builtin_terms`).
        """
        st = self.structure
        g = self.factors[k]
        idx = self._index()
        if unwhitened is not None:
            r, J = unwhitened
        else:
            local = idx.local_index[k]
            kinds = [st.kinds[v] for v in g.variables]
            params = [values[v][local[:, a]] for a, v in enumerate(g.variables)]
            r, J = g.residual_and_jacobians(kinds, params, with_jacobians)
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

    def cost(self, values) -> jax.Array:
        """Total cost ``sum_f rho_f`` (``0.5 |e|^2`` without robust loss); jit-compiled."""
        self.check_values(values)
        return _cost_jit(self, values)

    def linearize(self, values, accumulate=None) -> Linearization:
        """Gauss-Newton normal equations at ``values`` (call on a ``prepared`` problem).

        ``accumulate``: dtype of the result (default: the values' dtype). Residuals and
        Jacobians are computed in the values' dtype and widened before their products
        and sums are formed, so float32 Jacobians give an H that is positive
        semi-definite to float64 precision.
        """
        st = self.structure
        idx = self._index()
        d, n = st.block_dim, st.num_blocks
        dtype = _dtype_of(values)
        acc = dtype if accumulate is None else jnp.dtype(accumulate)
        cost = jnp.zeros((), acc)
        diag_parts, grad_parts, off_parts = [], [], []
        builtin = {g.variables[0] for g in self.factors if g.kind in ("between", "prior")}
        matrices = {v: st.kinds[v].to_matrix(values[v]) for v in builtin}
        unwhitened = self._builtin_terms(matrices)
        for k, g in enumerate(self.factors):
            pairs = st.groups[k].pairs if isinstance(st, _Structure) else st.pairs[k]
            _, e, J, costs = self._group_terms(k, values, True, unwhitened.get(k))
            e, costs = e.astype(acc), costs.astype(acc)
            cost = cost + jnp.sum(costs)
            padded = []
            for a, Ja in enumerate(J):
                if Ja.shape[-1] < d:
                    Ja = jnp.pad(Ja, ((0, 0), (0, 0), (0, d - Ja.shape[-1])))
                free = _mask(idx.slot_free[k][:, a], dtype)
                if free is not None:  # fixed variables (and padded factors) get no step
                    Ja = Ja * free[:, None, None]
                padded.append(Ja.astype(acc))
            Js = jnp.stack(padded, 1)  # [M, k, r, d]
            # J^T J and J^T e as broadcast products summed over r, not as batched dots:
            # XLA:CPU runs a dot per tiny (r x d) matrix, elementwise fusions vectorise
            diag_parts.append(_tdot(Js, Js).reshape(-1, d, d))
            grad_parts.append(_tdot(Js, e[:, None, :, None]).reshape(-1, d))
            for a, b in pairs:
                off_parts.append(_tdot(padded[a], padded[b]))
        ids = jnp.asarray(idx.diag_ids)
        diag = jax.ops.segment_sum(jnp.concatenate(diag_parts), ids, num_segments=n)
        diag = diag + jnp.asarray(idx.pad_diag).astype(acc)[:, :, None] * jnp.eye(d, dtype=acc)
        grad = jax.ops.segment_sum(jnp.concatenate(grad_parts), ids, num_segments=n)
        off = jnp.concatenate(off_parts) if off_parts else jnp.zeros((0, d, d), acc)
        return Linearization(cost, diag, off, grad)

    def _builtin_terms(self, matrices) -> dict:
        """``k -> (r, J)`` of the built-in (between / prior) groups, with one ``log`` and one
        right-Jacobian inverse per variable kind over all of them: each is a large piece of
        compiled code, and a prior group of one factor compiled its own copy (0.3-0.5 s of
        XLA time in a 3D solve)."""
        st, idx = self.structure, self._index()
        by_kind: dict = {}
        for k, g in enumerate(self.factors):
            if g.kind not in ("between", "prior"):
                continue
            kind = st.kinds[g.variables[0]]
            params = [matrices[v][idx.local_index[k][:, a]] for a, v in enumerate(g.variables)]
            E, context = builtin_error(g, kind, params)
            by_kind.setdefault(kind, []).append((k, g, E, context))
        out = {}
        for kind, items in by_kind.items():
            r = kind.log(jnp.concatenate([E for _, _, E, _ in items]))
            Jinv = kind.right_jacobian_inverse(r)
            start = 0
            for k, g, E, context in items:
                stop = start + E.shape[0]
                out[k] = (r[start:stop], builtin_jacobians(g, kind, context, Jinv[start:stop]))
                start = stop
        return out

    def zero_linearization(self, dtype) -> Linearization:
        """A :class:`Linearization` of zeros with the shapes :meth:`linearize` returns
        (known from the structure, so no second trace of the linearisation is needed)."""
        st = self.structure
        d, n = st.block_dim, st.num_blocks
        return Linearization(jnp.zeros((), dtype), jnp.zeros((n, d, d), dtype),
                             jnp.zeros((st.num_offdiag, d, d), dtype), jnp.zeros((n, d), dtype))

    # -- inspection --------------------------------------------------------------------
    def residuals(self, values, group, index=None) -> jax.Array:
        """Unwhitened tangent-space residuals ``[M, r]`` of a group (or ``[r]`` for one index)."""
        r = _terms_jit(self, values, self._group_index(group), False)[0]
        return r if index is None else r[index]

    def whitened_errors(self, values, group, index=None) -> jax.Array:
        """Whitened, robust-reweighted residuals ``sqrt(w) W r`` (``[M, r]`` or ``[r]``)."""
        e = _terms_jit(self, values, self._group_index(group), False)[1]
        return e if index is None else e[index]

    def factor_costs(self, values, group) -> jax.Array:
        """Cost of every factor of a group, ``[M]``."""
        return _terms_jit(self, values, self._group_index(group), False)[3]

    def jacobians(self, values, group, index=None) -> tuple:
        """Whitened Jacobians per slot, each ``[M, r, tangent_dim]`` (or ``[r, t]`` for one index).

        Derivatives are with respect to right perturbations ``X <- X Exp(d)``.
        """
        J = _terms_jit(self, values, self._group_index(group), True)[2]
        return J if index is None else tuple(Ja[index] for Ja in J)


@partial(entry_point, static_argnames=("k", "with_jacobians"))
def _terms_jit(problem, values, k, with_jacobians):
    return problem.prepared(_dtype_of(values))._group_terms(k, values, with_jacobians)


@entry_point
def _cost_jit(problem, values):
    p = problem.prepared(_dtype_of(values))
    total = jnp.zeros((), _dtype_of(values))
    for k in range(len(p.factors)):
        total = total + jnp.sum(p._group_terms(k, values, False)[3])
    return total


def _tdot(A, B):
    """``A^T B`` over the last two axes, ``[..., r, i] x [..., r, j] -> [..., i, j]``: a
    broadcast product summed over ``r`` in float64, unrolled over ``r`` otherwise (see
    smallmat.matmul: the float32 reduction is as slow as a float32 batched dot)."""
    if jnp.result_type(A, B) == jnp.float64:
        return jnp.sum(A[..., :, :, None] * B[..., :, None, :], axis=-3)
    return smallmat.matmul(jnp.swapaxes(A, -1, -2), B)


def _dtype_of(values):
    leaves = jax.tree_util.tree_leaves(values)
    return jnp.result_type(*leaves) if leaves else jnp.float32


# ----------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------
def _validate_variables(variables):
    seen = set()
    for k, v in enumerate(variables):
        if not isinstance(v, VariableGroup):
            raise TypeError(f"variables[{k}] is a {type(v).__name__}, expected a VariableGroup")
        if v.name in seen:
            raise ValueError(f"two variable groups are named {v.name!r}; names must be unique")
        seen.add(v.name)
        kind_of(v.kind)
        if int(v.count) != v.count or v.count <= 0:
            raise ValueError(f"variable group {v.name!r}: count must be a positive integer, got {v.count}")
        bad = [i for i in v.fixed if not 0 <= i < v.count]
        if bad:
            raise ValueError(f"variable group {v.name!r}: fixed index {bad[0]} out of range (count {v.count})")


def zero_quaternions(params: np.ndarray) -> np.ndarray:
    """Rows of SE3/SO3 parameters ``[M, 4 or 7]`` whose quaternion (first 4 numbers) has norm
    below 1e-12 (NaN rows excluded: those are reported as non-finite)."""
    q = np.asarray(params, np.float64)[:, :4]
    # squared norms against 1e-24: no square root, no norm's temporaries (5x faster on
    # 20,000 rows; called on every solve's initial values)
    return np.flatnonzero(np.einsum("ij,ij->i", q, q) < 1e-24)


def _concrete(x):
    return not isinstance(x, jax.core.Tracer)


def _validate_group(g: FactorGroup, kinds: dict, counts: dict):
    name = g.name
    M = g.count
    idx = g.indices.array
    for a, v in enumerate(g.variables):
        if v not in kinds:
            raise ValueError(
                f"factor group {name!r} refers to unknown variable group {v!r}; known groups: {sorted(kinds)}"
            )
        col = idx[:, a]
        bad = np.nonzero((col < 0) | (col >= counts[v]))[0]
        if bad.size:
            f = int(bad[0])
            raise ValueError(
                f"factor group {name!r}, factor {f}: index {int(col[f])} out of range for variable group "
                f"{v!r} ({counts[v]} variables)"
            )
    for a in range(idx.shape[1]):
        for b in range(a + 1, idx.shape[1]):
            same = np.nonzero((idx[:, a] == idx[:, b]) & (g.variables[a] == g.variables[b]))[0]
            if same.size:
                f = int(same[0])
                raise ValueError(
                    f"factor group {name!r}, factor {f} connects variable {g.variables[a]!r}[{int(idx[f, a])}] "
                    "to itself"
                )
    if g.kind in ("between", "prior"):
        k = kinds[g.variables[0]]
        if not k.is_group:
            raise TypeError(
                f"factor group {name!r} ({g.kind}) needs a Lie-group variable (SE2, SE3, SO3), but "
                f"variable group {g.variables[0]!r} is {k.name}"
            )
        shape = tuple(jnp.shape(g.measurement))
        if shape != (M, k.param_dim):
            raise ValueError(
                f"factor group {name!r} ({g.kind} on {k.name} variable group {g.variables[0]!r}): measurement "
                f"must have shape ({M}, {k.param_dim}), one {k.name} parameter vector per factor, got {shape}"
            )
        if k.name in ("SE3", "SO3") and _concrete(g.measurement):
            bad = zero_quaternions(np.asarray(g.measurement))
            if bad.size:
                raise ValueError(
                    f"factor group {name!r}, factor {int(bad[0])}: zero quaternion in the measurement "
                    f"({bad.size} such factor(s)); a rotation needs a unit (or at least non-zero) quaternion"
                )
        rdim = k.tangent_dim
    else:
        for leaf in jax.tree_util.tree_leaves(g.measurement):
            if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != M:
                raise ValueError(
                    f"factor group {name!r} (custom): every data leaf needs leading axis {M} (one row per "
                    f"factor), got a leaf of shape {jnp.shape(leaf)}"
                )
        rdim = g.residual_dim
        if rdim is None or rdim <= 0:
            raise ValueError(f"factor group {name!r} (custom): residual_dim must be a positive integer")
        one_params = tuple(
            jax.ShapeDtypeStruct((kinds[v].param_dim,), jnp.float32) for v in g.variables
        )
        one_data = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(jnp.shape(x)[1:], jnp.result_type(x)), g.measurement
        )
        try:
            out = jax.eval_shape(g.residual_fn, one_params, one_data)
        except Exception as exc:  # report which group failed, keep the original cause
            raise ValueError(f"factor group {name!r} (custom): the residual function failed on one factor: {exc}") from exc
        if tuple(out.shape) != (rdim,):
            raise ValueError(
                f"factor group {name!r} (custom): residual function returns shape {tuple(out.shape)}, "
                f"expected ({rdim},) (residual_dim)"
            )
    if g.noise is not None:
        msg = g.noise.check(rdim, M)
        if msg:
            raise ValueError(f"factor group {name!r}: {msg}")
    if g.robust is not None:
        msg = g.robust.check(M)
        if msg:
            raise ValueError(f"factor group {name!r}: {msg}")
    for leaf in jax.tree_util.tree_leaves((g.measurement, g.noise, g.robust)):
        if _concrete(leaf) and jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            a = np.asarray(leaf)
            if not np.all(np.isfinite(a)):
                bad = np.argwhere(~np.isfinite(a))[0]
                where = f"factor {int(bad[0])}" if a.ndim and a.shape[0] == M else "shared parameter"
                raise ValueError(f"factor group {name!r}, {where}: non-finite number in measurement/noise/robust parameters")
