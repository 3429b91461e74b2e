"""Batched factorisations of small matrices in plain ``jax.numpy`` (no LAPACK call).

Why not ``jnp.linalg.cholesky``: on the CPU, jaxlib's batched LAPACK kernels split a
large batch into chunks on XLA's intra-op thread pool and block until the chunks are
done. When two such kernels are ready at the same time (independent branches of one
program: two problems' noise models prepared side by side, say), each occupies one pool
thread and waits for chunks queued behind the other; with as many such kernels as
threads (two on a 2-core machine) the program waits forever at 0 % CPU. GNC on
sphere2500 hung exactly so. These loops are unrolled over the (static, small) matrix
size and vectorised over the batch, so they are ordinary fused XLA code with no
blocking call, and for the 2x2-6x6 blocks of pose graphs they are also faster than one
LAPACK call per matrix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["MAX_UNROLLED", "cholesky", "eigh", "forward_substitution", "lower_inverse", "matmul", "matvec"]

#: Largest matrix size the unrolled loops are used for (compile time grows as size^2).
MAX_UNROLLED = 12


def matmul(a, b):
    """``a[..., n, k] @ b[..., k, m]`` for small matrices; float32 as ``k`` broadcast products.

    XLA:CPU runs a batched float32 ``dot`` of tiny matrices far slower than the same sum
    written elementwise (10,000 products of 6x6 matrices: 9.5 ms vs 0.4 ms; sphere2500's
    float32 linearisation 28 ms vs 6 ms), and 2.5x slower than its float64 dot. float64
    keeps the ``dot``: the unrolled form is faster there too (4.0 vs 0.6 ms) but adds
    0.3-0.9 s of XLA compile time to a 3D pose-graph solve, more than it saves in a solve.
    """
    if jnp.result_type(a, b) == jnp.float64:
        return jnp.matmul(a, b)
    out = a[..., :, 0:1] * b[..., 0:1, :]
    for i in range(1, a.shape[-1]):
        out = out + a[..., :, i : i + 1] * b[..., i : i + 1, :]
    return out


def matvec(m, v):
    """``m[..., n, k] @ v[..., k]`` (float32 unrolled, see :func:`matmul`)."""
    if jnp.result_type(m, v) == jnp.float64:
        return jnp.einsum("...ij,...j->...i", m, v)
    out = m[..., :, 0] * v[..., 0:1]
    for i in range(1, m.shape[-1]):
        out = out + m[..., :, i] * v[..., i : i + 1]
    return out


# jit: called eagerly (noise models built outside a trace) the unrolled loop would
# dispatch hundreds of tiny operations.
@jax.jit
def cholesky(A):
    """Lower Cholesky factor ``L`` of ``A[..., m, m]`` (lower triangle read), ``A = L L^T``.

    Like ``jax.lax.linalg.cholesky`` the factor of a matrix whose elimination meets a
    pivot <= 0 (not positive definite in floating point) is NaN on and below the
    diagonal (zero above), so callers test ``isfinite`` as for LAPACK. ``m`` must be at most ``MAX_UNROLLED``.
    """
    m = A.shape[-1]
    if m > MAX_UNROLLED:
        raise ValueError(f"smallmat.cholesky: size {m} exceeds MAX_UNROLLED={MAX_UNROLLED}")
    cols = []  # cols[k]: column k of L, rows k..m-1, shape [..., m - k]
    bad = jnp.zeros(A.shape[:-2], bool)
    for j in range(m):
        s = A[..., j:, j]
        for k, c in enumerate(cols):
            s = s - c[..., j - k :] * c[..., j - k : j - k + 1]
        pivot = s[..., 0]
        bad = bad | ~(pivot > 0)
        root = jnp.sqrt(jnp.where(pivot > 0, pivot, 1.0))
        cols.append(s / root[..., None])
    zero = jnp.zeros(A.shape[:-2] + (1,), A.dtype)
    L = jnp.stack([jnp.concatenate([zero] * k + [c], axis=-1) if k else c for k, c in enumerate(cols)], axis=-1)
    lower = jnp.tril(jnp.ones((m, m), bool))
    return jnp.where(bad[..., None, None] & lower, jnp.nan, L)


@jax.jit
def forward_substitution(L, b):
    """``L^-1 b`` for lower-triangular ``L[..., m, m]`` and ``b[..., m]``."""
    m = L.shape[-1]
    if m > MAX_UNROLLED:
        raise ValueError(f"smallmat.forward_substitution: size {m} exceeds MAX_UNROLLED={MAX_UNROLLED}")
    y = []
    for i in range(m):
        s = b[..., i]
        for k in range(i):
            s = s - L[..., i, k] * y[k]
        y.append(s / L[..., i, i])
    return jnp.stack(y, axis=-1)


@jax.jit
def lower_inverse(L):
    """``L^-1`` (lower triangular) of lower-triangular ``L[..., m, m]``."""
    m = L.shape[-1]
    eye = jnp.broadcast_to(jnp.eye(m, dtype=L.dtype), L.shape)
    # Column j of L^-1 is L^-1 e_j.
    return jnp.stack([forward_substitution(L, eye[..., :, j]) for j in range(m)], axis=-1)


# Sweeps of the cyclic Jacobi method in :func:`eigh`. Convergence is quadratic once the
# off-diagonal part is small; for 2x2 and 3x3 matrices (the translation blocks of SE(2) /
# SE(3) information matrices) six sweeps leave an off-diagonal norm at rounding level in
# float64 (tests/linear/test_smallmat.py checks against LAPACK for sizes 1-4).
_JACOBI_SWEEPS = 6
# eigh unrolls the m(m-1)/2 rotations of a sweep: kept to small sizes.
MAX_EIGH = 4


@jax.jit
def eigh(A):
    """Eigenvalues ``w[..., m]`` and eigenvectors ``V[..., m, m]`` (columns) of symmetric
    ``A[..., m, m]`` (the symmetric part is used), ``A = V diag(w) V^T``; ``m <= MAX_EIGH``.

    The cyclic Jacobi method (rotations unrolled, a loop over sweeps), vectorised over the
    batch: ordinary fused XLA code, where ``jnp.linalg.eigh`` is a batched LAPACK call that
    can deadlock XLA:CPU's thread pool beside another one (module docstring). Eigenvalues
    are not sorted.
    """
    m = A.shape[-1]
    if m > MAX_EIGH:
        raise ValueError(f"smallmat.eigh: size {m} exceeds MAX_EIGH={MAX_EIGH}")
    dtype = A.dtype
    # entries as separate [...] arrays (a[i][j] == a[j][i]): every update is elementwise
    a = [[0.5 * (A[..., i, j] + A[..., j, i]) for j in range(m)] for i in range(m)]
    one, zero = jnp.ones(A.shape[:-2], dtype), jnp.zeros(A.shape[:-2], dtype)
    v = [[one if i == j else zero for j in range(m)] for i in range(m)]
    pairs = [(p, q) for p in range(m - 1) for q in range(p + 1, m)]

    def sweep(_, state):
        a, v = [list(r) for r in state[0]], [list(r) for r in state[1]]
        for p, q in pairs:
            apq, app, aqq = a[p][q], a[p][p], a[q][q]
            # rotation zeroing a[p][q]: t = tan(angle), the smaller root (stable form)
            nonzero = apq != 0
            theta = (aqq - app) / (2 * jnp.where(nonzero, apq, one))
            t = jnp.sign(theta) / (jnp.abs(theta) + jnp.sqrt(theta * theta + 1))
            t = jnp.where(nonzero, jnp.where(theta == 0, one, t), zero)
            c = 1 / jnp.sqrt(t * t + 1)
            s = t * c
            for k in range(m):
                if k in (p, q):
                    continue
                akp, akq = a[k][p], a[k][q]
                a[k][p] = a[p][k] = c * akp - s * akq
                a[k][q] = a[q][k] = s * akp + c * akq
            a[p][p] = app - t * apq
            a[q][q] = aqq + t * apq
            a[p][q] = a[q][p] = zero
            for k in range(m):
                vkp, vkq = v[k][p], v[k][q]
                v[k][p] = c * vkp - s * vkq
                v[k][q] = s * vkp + c * vkq
        return a, v

    # A loop over sweeps, not an unrolled chain: XLA fuses a long elementwise chain by
    # duplicating shared operands, and an unrolled 4x4 took minutes to compile.
    a, v = jax.lax.fori_loop(0, _JACOBI_SWEEPS, sweep, (a, v)) if pairs else (a, v)
    w = jnp.stack([a[i][i] for i in range(m)], axis=-1)
    V = jnp.stack([jnp.stack(row, axis=-1) for row in v], axis=-2)
    return w, V
