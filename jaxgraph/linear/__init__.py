"""Block-sparse symmetric linear solvers for the normal equations ``H x = b``.

H has ``n`` blocks of uniform size ``d`` (``jaxgraph.graph`` uses the gcd of the
variables' tangent sizes: a variable owns ``t / d`` consecutive blocks, nothing padded).
It is given as

* ``diag_blocks [n, d, d]``: H_ii (the solver uses the symmetric part),
* ``offdiag_blocks [M, d, d]``: ``offdiag_blocks[k] = H[rows[k], cols[k]]`` for the
  static coordinates ``rows, cols [M]`` (``i != j``, either order, duplicates are
  summed; ``H[cols[k], rows[k]]`` is the implied transpose).

Usage::

    from jaxgraph import linear
    structure = linear.analyze(n, d, rows, cols)             # numpy, once, outside jit
    x = linear.solve(structure, diag, offdiag, rhs)           # [n, d]; jit/vmap/grad
    f = linear.factor(structure, diag, offdiag)               # reusable factorisation
    x2 = linear.solve_factored(structure, f, rhs2)            # more right-hand sides
    y = linear.matvec(structure, diag, offdiag, x)            # H x via segment sums
    x, info = linear.solve_with_info(structure, diag, offdiag, rhs)
    # info.clamped (pivot block replaced: H not numerically PD), info.iterations (PCG),
    # info.residual_norm (||Hx - b|| / ||b||)
    plan = linear.selected_inverse_plan(n, d, rows, cols)    # numpy, once per pattern
    S, sinfo = linear.selected_inverse(plan, diag, offdiag, pairs=(i, j))  # (H^-1)[i[k], j[k]]
    schur = linear.analyze_schur(n, d, rows, cols, eliminate)  # points first (bundle adjustment);
    # method="pcg" (or "auto" from ITERATIVE_MIN_UNKNOWNS kept unknowns): S never formed, CG
    # with the Schur-Jacobi preconditioner (kept_variables: its blocks)
    x, info = linear.solve_with_info(schur, diag, offdiag, rhs)   # unbatched: vmap for batches
    x, k, rel = linear.conjugate_gradient(apply_a, b, precondition, max_iterations=100,
                                          tolerance=1e-10)   # any SPD operator (callables)

``structure`` is a frozen object hashed by identity: pass it as a closure
constant, a ``jax.jit`` static argument or pytree aux data.  Every array
function accepts leading batch axes (broadcast against each other) and is
``vmap``-able; dtype is preserved (float32 in, float32 out).  ``solve`` has a
``custom_vjp``: its reverse mode solves ``H lam = x_bar`` with the same
factorisation (H is symmetric) and returns ``rhs_bar = lam``,
``H_bar = -lam x^T`` folded onto the given blocks.

``size_class(n, d, M, method=...)`` gives a structure for *any* pattern of ``M``
off-diagonal slots; every call then passes ``pattern=(rows, cols)`` (arrays, traced or
not; ``rows == cols`` marks an unused slot), so one compiled program serves every graph
of that size and different patterns stack under ``vmap``.

Methods (``analyze(..., method=...)``):

* ``"host"``: CHOLMOD (supernodal, from the ``cvxopt`` wheels) on the host through
  an XLA custom call; the symbolic analysis is cached per pattern.  The CPU default.
* ``"cholesky"``: sparse multifrontal block Cholesky in JAX.  Ordering (nested
  dissection by default), elimination tree, supernodes and a level schedule
  are computed in numpy by ``analyze``; the numeric factorisation runs in JAX
  as batched dense Cholesky / triangular solves / matmuls, one ``lax.scan`` per
  tier of fronts, with static scatter/gather maps (CPU, GPU, vmap).  On CPU set
  ``OPENBLAS_NUM_THREADS=1`` (see docs/linear.md).
* ``"dense"``: assembles the dense ``nd x nd`` matrix (small problems).
* ``"pcg"``: matrix-free block-Jacobi preconditioned conjugate gradients in a
  ``lax.while_loop`` (``pcg_max_iterations``, ``pcg_tolerance``).
* ``"auto"`` (default): ``"dense"`` when ``n*d <= DENSE_MAX_UNKNOWNS`` (300), else
  ``"host"`` on the CPU backend (when ``cvxopt`` imports) and ``"cholesky"`` elsewhere.

Selected inversion (``selected_inverse``): blocks of ``H^-1`` on the pattern of the
sparse Cholesky factor (every diagonal block, every block of ``H``'s own pattern) by the
Takahashi recurrences, at about the cost of one factorisation; ``SelectedInverseInfo``
reports ``clamped`` and per-variable pivot ratios (singularity test).  Marginal
covariances and GNC's flip scores use it.

Robustness: a pivot block that is not numerically positive definite (e.g. a
missing gauge prior without damping) gets a block-Jacobi stand-in factor
``diag(sqrt(max(|A_ii|, sqrt(eps) max|A_ii|)))``; outputs stay finite and
``clamped`` is set.
Details and measurements: ``docs/linear.md``.
"""

from ._inverse import (
    SelectedInverseInfo,
    SelectedInversePlan,
    selected_inverse,
    selected_inverse_plan,
)
from ._numeric import conjugate_gradient
from ._schur import ITERATIVE_MIN_UNKNOWNS, SchurStructure, analyze_schur
from ._api import (
    DENSE_MAX_UNKNOWNS,
    DYNAMIC_METHODS,
    METHODS,
    ORDERINGS,
    BlockStructure,
    Factorization,
    SolveInfo,
    analyze,
    default_sparse_method,
    factor,
    matvec,
    solve,
    solve_factored,
    resolve_method,
    size_class,
    solve_with_info,
    to_dense,
)

__all__ = [
    "DENSE_MAX_UNKNOWNS",
    "DYNAMIC_METHODS",
    "ITERATIVE_MIN_UNKNOWNS",
    "METHODS",
    "ORDERINGS",
    "BlockStructure",
    "Factorization",
    "SelectedInverseInfo",
    "SelectedInversePlan",
    "SchurStructure",
    "SolveInfo",
    "analyze",
    "analyze_schur",
    "conjugate_gradient",
    "default_sparse_method",
    "factor",
    "matvec",
    "solve",
    "solve_factored",
    "resolve_method",
    "selected_inverse",
    "selected_inverse_plan",
    "size_class",
    "solve_with_info",
    "to_dense",
]
