"""Public API of ``jaxgraph.linear`` (see the package docstring)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _host as host
from . import _numeric as num
from . import _ordering as ordmod
from ._symbolic import symbolic_cholesky

METHODS = ("auto", "host", "cholesky", "dense", "pcg")
# methods whose compiled code does not depend on the sparsity pattern (``size_class``)
DYNAMIC_METHODS = ("host", "dense", "pcg")
ORDERINGS = ("auto", "nd", "amd", "mindegree", "natural")

# ``method="auto"``: dense Cholesky up to this many scalar unknowns (n * d), the
# sparse multifrontal Cholesky above.  Measured with ``benchmarks/linear.py
# --crossover`` on the 2-core CPU (docs/linear.md): up to ~300 unknowns the dense
# path costs at most ~0.6 ms more per solve but compiles 3-8 s faster; at ~600
# unknowns it is ~5 ms (7x) slower per solve.
DENSE_MAX_UNKNOWNS = 300


def default_sparse_method() -> str:
    """``"host"`` (CHOLMOD via ``cvxopt``) on the CPU backend when available, else ``"cholesky"``."""
    return "host" if jax.default_backend() == "cpu" and host.available() else "cholesky"


def resolve_method(method: str, num_unknowns: int) -> str:
    """The concrete method ``"auto"`` stands for at ``num_unknowns = n * d`` scalar unknowns.

    Raises ValueError for ``"dense"`` above 16,384 unknowns (a 2 GiB float64 matrix)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}, expected one of {METHODS}")
    if method == "dense" and num_unknowns > 16384:
        raise ValueError(f"method 'dense' on {num_unknowns} unknowns needs a {num_unknowns}^2 matrix "
                         f"({8 * num_unknowns ** 2 / 2 ** 30:.1f} GiB in float64); use 'host', 'cholesky' or 'pcg'")
    if method != "auto":
        return method
    return "dense" if num_unknowns <= DENSE_MAX_UNKNOWNS else default_sparse_method()


@dataclass(frozen=True, eq=False)
class BlockStructure:
    """Static description of a block-sparse symmetric system (hash/eq by identity).

    Safe as a ``jax.jit`` static argument, closure constant or pytree aux data.
    Build it with :func:`analyze` (a fixed pattern) or :func:`size_class` (the pattern
    is passed to every call as ``pattern=(rows, cols)`` arrays); do not construct directly.
    """

    num_blocks: int
    block_dim: int
    rows: np.ndarray | None  # [M] int32; None: pattern given per call (size class)
    cols: np.ndarray | None
    method: str
    ordering: str
    pcg_max_iterations: int
    pcg_tolerance: float
    symbolic: object = None  # _symbolic.Symbolic for method "cholesky"
    stats: dict = field(default_factory=dict)

    num_offdiag_slots: int = -1  # size classes: M; -1: len(rows)

    @property
    def num_offdiag(self) -> int:
        return int(self.rows.shape[0]) if self.rows is not None else self.num_offdiag_slots

    @property
    def dynamic(self) -> bool:
        """True when the pattern is passed per call (see :func:`size_class`)."""
        return self.rows is None


class Factorization(NamedTuple):
    """Numeric factorisation (a pytree); reuse it for several right-hand sides.

    ``data``: method-specific arrays (Cholesky factors per tier of fronts, the
    dense factor, or for PCG the matrix blocks and block-Jacobi factors).
    ``clamped``: bool, shape ``[]`` (``[...]`` batched), true when some pivot block was not
    numerically positive definite and was replaced (see ``guarded_cholesky`` in docs/linear.md).
    Leading batch axes (from vmap or batched inputs) prefix every leaf.
    """

    data: tuple
    clamped: jax.Array


class SolveInfo(NamedTuple):
    """Diagnostics of one solve (leading batch axes if batched).

    ``clamped``: bool ``[...]``, a pivot block was replaced (H not positive definite).
    ``iterations``: int32 ``[...]``, PCG iterations (0 for the direct methods).
    ``residual_norm``: float ``[...]`` (the solve's dtype), ``||H x - b|| / ||b||``
    (0 when ``b == 0``), dimensionless.
    """

    clamped: jax.Array
    iterations: jax.Array
    residual_norm: jax.Array


def analyze(num_blocks: int, block_dim: int, rows, cols, *, method: str = "auto",
            ordering: str = "auto", pcg_max_iterations: int = 500,
            pcg_tolerance: float | None = None, leaf_size: int = 8,
            relax_cols: int = 8, relax_frac: float = 0.1, max_tiers: int = 6) -> BlockStructure:
    """Symbolic analysis of the block pattern, once per problem structure (numpy, not jit-able).

    Args:
      num_blocks: n, number of variable blocks.
      block_dim: d, the uniform block size (3 for SE2, 6 for SE3).
      rows, cols: ``[M]`` integer block coordinates of the off-diagonal blocks
        (``i != j``, either order, duplicates allowed and summed).
      method: ``"auto"`` (dense for ``n*d <= DENSE_MAX_UNKNOWNS``, else ``"host"``
        on CPU, ``"cholesky"`` elsewhere), ``"host"`` (CHOLMOD on the host through
        an XLA custom call), ``"cholesky"`` (sparse multifrontal in JAX),
        ``"dense"``, ``"pcg"`` (block-Jacobi preconditioned CG).
      ordering: fill-reducing ordering for ``"cholesky"``: ``"nd"`` nested
        dissection, ``"amd"``/``"mindegree"`` (exact minimum degree),
        ``"natural"``; ``"auto"`` builds nested dissection and minimum degree
        and keeps the one with the lower modelled factorisation time.
      pcg_max_iterations, pcg_tolerance: PCG stopping rule, relative residual
        ``||r|| <= tol ||b||``; the default tolerance is ``1e-10`` for float64 and
        ``1e-5`` for float32 inputs (chosen at trace time from the dtype).
      leaf_size, relax_cols, relax_frac, max_tiers: nested-dissection leaf size,
        supernode amalgamation and schedule parameters (see docs/linear.md).
    Returns:
      A :class:`BlockStructure`.
    """
    n = int(num_blocks)
    d = int(block_dim)
    if n < 1:
        raise ValueError(f"analyze: num_blocks must be >= 1, got {num_blocks}")
    if d < 1:
        raise ValueError(f"analyze: block_dim must be >= 1, got {block_dim}")
    rows = np.asarray(rows)
    cols = np.asarray(cols)
    if rows.ndim != 1 or cols.ndim != 1 or rows.shape != cols.shape:
        raise ValueError(f"analyze: rows and cols must be 1-D of equal length, got shapes "
                         f"{rows.shape} and {cols.shape}")
    if rows.size and not (np.issubdtype(rows.dtype, np.integer) and np.issubdtype(cols.dtype, np.integer)):
        raise TypeError(f"analyze: rows/cols must be integer arrays, got {rows.dtype}, {cols.dtype}")
    rows = rows.astype(np.int64)
    cols = cols.astype(np.int64)
    if rows.size:
        bad = np.nonzero((rows < 0) | (rows >= n) | (cols < 0) | (cols >= n))[0]
        if bad.size:
            k = int(bad[0])
            raise ValueError(f"analyze: off-diagonal block {k} has coordinates ({rows[k]}, {cols[k]}) "
                             f"outside [0, {n})")
        same = np.nonzero(rows == cols)[0]
        if same.size:
            k = int(same[0])
            raise ValueError(f"analyze: off-diagonal block {k} has rows[k] == cols[k] == {rows[k]}; "
                             "diagonal contributions belong in diag_blocks")
    if method not in METHODS:
        raise ValueError(f"analyze: unknown method {method!r}, expected one of {METHODS}")
    if ordering not in ORDERINGS:
        raise ValueError(f"analyze: unknown ordering {ordering!r}, expected one of {ORDERINGS}")
    if method == "host" and not host.available():
        raise ImportError("analyze: method 'host' needs the cvxopt package (pip install cvxopt)")
    method = resolve_method(method, n * d)
    stats = {}
    symbolic = None
    if method == "cholesky":
        t_start = time.perf_counter()
        indptr, indices = ordmod.adjacency_csr(n, rows, cols)
        # "auto" builds both candidate orderings and keeps the one whose tiered
        # schedule has the lower modelled factorisation time
        cands = ["nd", "mindegree"] if ordering == "auto" else [ordering]
        best = None
        for name in cands:
            t0 = time.perf_counter()
            if name == "nd":
                perm = ordmod.nested_dissection(n, indptr, indices, leaf_size=leaf_size)
            elif name in ("amd", "mindegree"):
                perm = ordmod.minimum_degree(n, indptr, indices)
            else:
                perm = ordmod.natural(n, indptr, indices)
            t1 = time.perf_counter()
            sym_ = symbolic_cholesky(n, d, rows, cols, indptr, indices, perm,
                                     relax_cols=relax_cols, relax_frac=relax_frac,
                                     max_tiers=max_tiers)
            t2 = time.perf_counter()
            if best is None or sym_.model_seconds < best[1].model_seconds:
                best = (name, sym_, t1 - t0, t2 - t1)
        ordering_used, symbolic, t_ord, t_sym = best
        stats = dict(ordering_seconds=t_ord, symbolic_seconds=t_sym,
                     num_supernodes=symbolic.num_supernodes, num_levels=symbolic.num_levels,
                     num_tiers=len(symbolic.tiers),
                     tiers=[(t.a, t.r, t.batch, t.steps) for t in symbolic.tiers],
                     nnz_blocks_L=symbolic.nnz_blocks, factor_flops=symbolic.flops,
                     padded_factor_flops=symbolic.padded_flops,
                     model_seconds=symbolic.model_seconds,
                     analyze_seconds=time.perf_counter() - t_start)
        ordering = ordering_used
    return BlockStructure(num_blocks=n, block_dim=d, rows=rows.astype(np.int32),
                          cols=cols.astype(np.int32), method=method, ordering=ordering,
                          pcg_max_iterations=int(pcg_max_iterations),
                          pcg_tolerance=None if pcg_tolerance is None else float(pcg_tolerance),
                          symbolic=symbolic, stats=stats)


def size_class(num_blocks: int, block_dim: int, num_offdiag: int, *, method: str = "auto",
               pcg_max_iterations: int = 500, pcg_tolerance: float | None = None) -> BlockStructure:
    """A structure for *any* pattern of ``num_offdiag`` off-diagonal slots (compiled code reuse).

    The pattern is passed to every call as ``pattern=(rows, cols)`` (``int32 [M]``
    arrays, traced or not, batched under ``vmap`` like the values), so one compiled
    program serves every graph padded to this size.  Slots with ``rows[k] == cols[k]``
    are unused (padding) and ignored.  Methods: ``"host"`` (symbolic analysis cached on
    the host per pattern), ``"dense"``, ``"pcg"``; ``"auto"`` as in :func:`analyze`
    (the JAX multifrontal ``"cholesky"`` needs a fixed pattern: use :func:`analyze`).
    """
    n, d, M = int(num_blocks), int(block_dim), int(num_offdiag)
    if n < 1 or d < 1 or M < 0:
        raise ValueError(f"size_class: need num_blocks >= 1, block_dim >= 1, num_offdiag >= 0, "
                         f"got {num_blocks}, {block_dim}, {num_offdiag}")
    method = resolve_method(method, n * d)
    if method not in DYNAMIC_METHODS:
        raise ValueError(f"size_class: method {method!r} needs a fixed pattern (use analyze); "
                         f"pattern-free methods: {DYNAMIC_METHODS}")
    if method == "host" and not host.available():
        raise ImportError("size_class: method 'host' needs the cvxopt package (pip install cvxopt)")
    return BlockStructure(num_blocks=n, block_dim=d, rows=None, cols=None, method=method,
                          ordering="host" if method == "host" else "natural",
                          pcg_max_iterations=int(pcg_max_iterations),
                          pcg_tolerance=None if pcg_tolerance is None else float(pcg_tolerance),
                          num_offdiag_slots=M)


# --------------------------------------------------------------------------- validation / batching


def _check(structure, diag=None, offdiag=None, vec=None, who="solve", pattern=None):
    if not isinstance(structure, BlockStructure):
        raise TypeError(f"{who}: expected a BlockStructure from jaxgraph.linear.analyze, "
                        f"got {type(structure).__name__}")
    n, d, M = structure.num_blocks, structure.block_dim, structure.num_offdiag
    if diag is not None and (diag.ndim < 3 or diag.shape[-3:] != (n, d, d)):
        raise ValueError(f"{who}: diag_blocks must have shape [..., {n}, {d}, {d}], got {diag.shape}")
    if offdiag is not None and (offdiag.ndim < 3 or offdiag.shape[-3:] != (M, d, d)):
        raise ValueError(f"{who}: offdiag_blocks must have shape [..., {M}, {d}, {d}], got {offdiag.shape}")
    if vec is not None and (vec.ndim < 2 or vec.shape[-2:] != (n, d)):
        raise ValueError(f"{who}: vector must have shape [..., {n}, {d}], got {vec.shape}")
    arrays = [a for a in (diag, offdiag, vec) if a is not None]
    for a in arrays:
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise TypeError(f"{who}: expected floating-point arrays, got {a.dtype}")
    dts = {a.dtype for a in arrays}
    if len(dts) > 1:
        raise TypeError(f"{who}: all arrays must share one dtype, got {sorted(map(str, dts))}")
    if structure.dynamic:
        if pattern is None:
            raise ValueError(f"{who}: this structure comes from size_class; pass pattern=(rows, cols)")
        rows, cols = (jnp.asarray(x) for x in pattern)
        if rows.shape != cols.shape or rows.ndim < 1 or rows.shape[-1] != M:
            raise ValueError(f"{who}: pattern rows/cols must have shape [..., {M}], got "
                             f"{rows.shape} and {cols.shape}")
        if not (jnp.issubdtype(rows.dtype, jnp.integer) and jnp.issubdtype(cols.dtype, jnp.integer)):
            raise TypeError(f"{who}: pattern rows/cols must be integer arrays, got {rows.dtype}, {cols.dtype}")
        return rows.astype(jnp.int32), cols.astype(jnp.int32)
    if pattern is not None:
        raise ValueError(f"{who}: this structure has a fixed pattern (from analyze); do not pass pattern")
    return jnp.asarray(structure.rows), jnp.asarray(structure.cols)


def _batched(fn, args, core_ndims):
    """Apply ``fn`` (single problem) over broadcast leading batch axes of ``args``."""
    batch = jnp.broadcast_shapes(*[a.shape[: a.ndim - k] for a, k in zip(args, core_ndims)])
    if not batch:
        return fn(*args)
    # unbatched arguments (e.g. a fixed pattern) stay unbatched: in_axes None
    axes = [None if a.ndim == k else 0 for a, k in zip(args, core_ndims)]
    args = [a if ax is None else jnp.broadcast_to(a, batch + a.shape[a.ndim - k:])
            for a, k, ax in zip(args, core_ndims, axes)]
    f = fn
    for _ in batch:
        f = jax.vmap(f, in_axes=axes)
    return f(*args)


def _tol(structure, dtype):
    if structure.pcg_tolerance is not None:
        return structure.pcg_tolerance
    return 1e-10 if jnp.dtype(dtype) == jnp.float64 else 1e-5


# --------------------------------------------------------------------------- single-problem cores
# ``rows, cols``: the pattern as arrays (constants of a fixed structure, or the traced
# pattern of a size class, whose unused slots ``rows == cols`` are masked to zero here).


def _masked(structure, rows, cols, offdiag):
    if not structure.dynamic:
        return offdiag
    return offdiag * (rows != cols).astype(offdiag.dtype)[:, None, None]


def _factor1(structure, rows, cols, diag, offdiag):
    offdiag = _masked(structure, rows, cols, offdiag)
    if structure.method == "dense":
        data, clamped = num.dense_factor(rows, cols, diag, offdiag)
    elif structure.method == "pcg":
        Ld, clamped = num.block_jacobi(diag)
        data = (diag, offdiag, Ld)
    elif structure.method == "host":
        # the factor lives on the host (cached per pattern); the blocks identify it
        _, clamped = host.solve(rows, cols, diag, offdiag, jnp.zeros(diag.shape[:2], diag.dtype),
                                reuse=True)
        data = (diag, offdiag)
    else:
        sy = structure.symbolic
        data, clamped = num.cholesky_factor(sy.tiers, structure.num_blocks, structure.block_dim,
                                            diag, offdiag)
    return Factorization(data=data, clamped=clamped)


def _solve_factored1(structure, rows, cols, fact, rhs):
    """Returns (x, iterations, pcg relative residual or None)."""
    zero = jnp.asarray(0, jnp.int32)
    if structure.method == "dense":
        x, rel = num.dense_solve(fact.data, rhs)
        return x, zero, rel
    if structure.method == "pcg":
        diag, offdiag, Ld = fact.data
        return num.conjugate_gradient(partial(num.matvec, rows, cols, diag, offdiag), rhs,
                                      partial(num.apply_block_jacobi, Ld),
                                      max_iterations=structure.pcg_max_iterations,
                                      tolerance=_tol(structure, rhs.dtype))
    if structure.method == "host":
        diag, offdiag = fact.data
        return host.solve(rows, cols, diag, offdiag, rhs, reuse=True)[0], zero, None
    x = num.cholesky_solve(structure.symbolic.tiers, structure.num_blocks, structure.block_dim,
                           fact.data, rhs)
    return x, zero, None


def _residual(rows, cols, diag, offdiag, x, rhs):
    r = num.matvec(rows, cols, diag, offdiag, x) - rhs
    bn = jnp.sqrt(jnp.sum(rhs * rhs))
    return jnp.sqrt(jnp.sum(r * r)) / jnp.where(bn > 0, bn, jnp.asarray(1.0, rhs.dtype))


def _forward(structure, rows, cols, diag, offdiag, rhs, reuse):
    if structure.method == "host":
        # one host call: factor and solve (the factor is kept only when the adjoint needs it)
        offdiag = _masked(structure, rows, cols, offdiag)
        x, clamped = host.solve(rows, cols, diag, offdiag, rhs, reuse=reuse)
        fact = Factorization(data=(diag, offdiag), clamped=clamped)
        k, rel = jnp.asarray(0, jnp.int32), None
    else:
        fact = _factor1(structure, rows, cols, diag, offdiag)
        x, k, rel = _solve_factored1(structure, rows, cols, fact, rhs)
    if rel is None:
        rel = _residual(rows, cols, diag, _masked(structure, rows, cols, offdiag), x, rhs)
    return x, SolveInfo(fact.clamped, k, rel), fact


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _solve1(structure, rows, cols, diag, offdiag, rhs):
    x, info, _ = _forward(structure, rows, cols, diag, offdiag, rhs, reuse=False)
    return x, info


def _solve1_fwd(structure, rows, cols, diag, offdiag, rhs):
    x, info, fact = _forward(structure, rows, cols, diag, offdiag, rhs, reuse=True)
    return (x, info), (rows, cols, fact, x)


def _solve1_bwd(structure, res, cts):
    rows, cols, fact, x = res
    xbar = cts[0]
    # H symmetric: the adjoint system is H lam = xbar, solved with the same factor
    lam, _, _ = _solve_factored1(structure, rows, cols, fact, xbar)
    dD, dO = num.adjoint_blocks(rows, cols, x, lam)
    dO = _masked(structure, rows, cols, dO.astype(x.dtype))
    return None, None, dD, dO, lam


_solve1.defvjp(_solve1_fwd, _solve1_bwd)


# --------------------------------------------------------------------------- public functions
# ``pattern``: ``(rows, cols)`` int arrays ``[..., M]``, required for structures from
# :func:`size_class` and refused for structures from :func:`analyze`.


def factor(structure: BlockStructure, diag_blocks, offdiag_blocks, *, pattern=None) -> Factorization:
    """Numeric factorisation of H (jit/vmap-able).

    Args:
      diag_blocks: ``[..., n, d, d]`` diagonal blocks H_ii (symmetrised internally).
      offdiag_blocks: ``[..., M, d, d]``, ``offdiag_blocks[k] = H[rows[k], cols[k]]``.
      pattern: ``(rows, cols)`` for a :func:`size_class` structure.
    Returns:
      :class:`Factorization` with the inputs' leading batch axes.  For ``"host"`` the
      factor itself stays on the host (cached per pattern); the Factorization holds the
      blocks, and :func:`solve_factored` reuses the host factor while they match.
    """
    if not isinstance(structure, BlockStructure):  # a plan that solves itself (analyze_schur)
        return structure.factor(diag_blocks, offdiag_blocks)
    diag_blocks = jnp.asarray(diag_blocks)
    offdiag_blocks = jnp.asarray(offdiag_blocks)
    rows, cols = _check(structure, diag_blocks, offdiag_blocks, who="factor", pattern=pattern)
    return _batched(partial(_factor1, structure), [rows, cols, diag_blocks, offdiag_blocks], [1, 1, 3, 3])


def solve_factored(structure: BlockStructure, factorization: Factorization, rhs, *, pattern=None):
    """Solve H x = rhs with an existing factorisation; ``rhs [..., n, d] -> x [..., n, d]``.

    Batch axes of ``rhs`` beyond those of the factorisation are vmapped over
    with the factorisation shared.
    """
    if not isinstance(structure, BlockStructure):
        return structure.solve_factored(factorization, rhs)
    rhs = jnp.asarray(rhs)
    rows, cols = _check(structure, vec=rhs, who="solve_factored", pattern=pattern)
    fb = jnp.ndim(factorization.clamped)
    rb = rhs.ndim - 2
    if rb < fb:
        raise ValueError(f"solve_factored: rhs has {rb} batch axes but the factorisation has {fb}")
    pb = rows.ndim - 1
    if pb > fb:
        raise ValueError(f"solve_factored: the pattern has {pb} batch axes but the factorisation has {fb}")
    rows = jnp.broadcast_to(rows, jnp.shape(factorization.clamped) + rows.shape[pb:])
    cols = jnp.broadcast_to(cols, rows.shape)

    def one(r, c, f, b):
        return _solve_factored1(structure, r, c, f, b)[0]

    f = one
    for _ in range(rb - fb):
        f = jax.vmap(f, in_axes=(None, None, None, 0))
    for _ in range(fb):
        f = jax.vmap(f)
    return f(rows, cols, factorization, rhs)


def solve_with_info(structure: BlockStructure, diag_blocks, offdiag_blocks, rhs, *, pattern=None):
    """Like :func:`solve` (same arguments and shapes) but returns ``(x, info)``: ``x [..., n, d]``
    in the inputs' dtype and a :class:`SolveInfo` whose fields have the batch shape ``[...]``."""
    if not isinstance(structure, BlockStructure):
        return structure.solve_with_info(diag_blocks, offdiag_blocks, rhs)
    diag_blocks = jnp.asarray(diag_blocks)
    offdiag_blocks = jnp.asarray(offdiag_blocks)
    rhs = jnp.asarray(rhs)
    rows, cols = _check(structure, diag_blocks, offdiag_blocks, rhs, who="solve", pattern=pattern)
    return _batched(partial(_solve1, structure), [rows, cols, diag_blocks, offdiag_blocks, rhs],
                    [1, 1, 3, 3, 2])


def solve(structure: BlockStructure, diag_blocks, offdiag_blocks, rhs, *, pattern=None):
    """Solve H x = rhs (jit/vmap/grad-able; reverse mode reuses the factorisation).

    Args:
      structure: from :func:`analyze` or :func:`size_class`.
      diag_blocks: ``[..., n, d, d]``; offdiag_blocks: ``[..., M, d, d]`` with
        ``offdiag_blocks[k] = H[rows[k], cols[k]]``; rhs: ``[..., n, d]``.
        Leading batch axes broadcast against each other.
      pattern: ``(rows, cols)`` ``[..., M]`` for a :func:`size_class` structure.
    Returns:
      x: ``[..., n, d]``, same dtype as the inputs.
    """
    return solve_with_info(structure, diag_blocks, offdiag_blocks, rhs, pattern=pattern)[0]


def matvec(structure: BlockStructure, diag_blocks, offdiag_blocks, x, *, pattern=None):
    """Block-sparse product ``H x``; ``x [..., n, d] -> [..., n, d]``."""
    diag_blocks = jnp.asarray(diag_blocks)
    offdiag_blocks = jnp.asarray(offdiag_blocks)
    x = jnp.asarray(x)
    r, c = _check(structure, diag_blocks, offdiag_blocks, x, who="matvec", pattern=pattern)

    def one(r, c, D, O, v):
        return num.matvec(r, c, D, _masked(structure, r, c, O), v)

    return _batched(one, [r, c, diag_blocks, offdiag_blocks, x], [1, 1, 3, 3, 2])


def to_dense(structure: BlockStructure, diag_blocks, offdiag_blocks, *, pattern=None):
    """Dense ``[..., n d, n d]`` matrix (for small problems and tests)."""
    diag_blocks = jnp.asarray(diag_blocks)
    offdiag_blocks = jnp.asarray(offdiag_blocks)
    r, c = _check(structure, diag_blocks, offdiag_blocks, who="to_dense", pattern=pattern)

    def one(r, c, D, O):
        return num.assemble_dense(r, c, D, _masked(structure, r, c, O))

    return _batched(one, [r, c, diag_blocks, offdiag_blocks], [1, 1, 3, 3])
