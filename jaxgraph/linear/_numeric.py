"""Numeric kernels (jit-able JAX, single problem; batching is added by vmap).

Shapes: ``diag [n, d, d]``, ``offdiag [M, d, d]``, vectors ``[n, d]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

# --------------------------------------------------------------------------- helpers


def sym(blocks):
    """Symmetric part of square blocks; the solver treats H_ii as (D + D^T) / 2."""
    return 0.5 * (blocks + jnp.swapaxes(blocks, -1, -2))


def matvec(rows, cols, diag, offdiag, x):
    """y = H x for the block-sparse symmetric H (segment sums, no dense matrix)."""
    n = diag.shape[0]
    y = jnp.einsum("nij,nj->ni", sym(diag), x)
    if offdiag.shape[0]:
        y = y + jax.ops.segment_sum(jnp.einsum("kij,kj->ki", offdiag, x[cols]), rows, n)
        y = y + jax.ops.segment_sum(jnp.einsum("kji,kj->ki", offdiag, x[rows]), cols, n)
    return y


def adjoint_blocks(rows, cols, x, lam):
    """``(diag_bar, offdiag_bar)`` of a solve ``x = H^-1 b`` given ``lam = H^-1 x_bar`` (H
    symmetric): ``H_bar = -lam x^T`` folded onto the stored blocks (a diagonal block's
    symmetric part; an off-diagonal block stands for itself and its implied transpose)."""
    dD = -0.5 * (jnp.einsum("ni,nj->nij", lam, x) + jnp.einsum("ni,nj->nij", x, lam))
    dO = -(jnp.einsum("ki,kj->kij", lam[rows], x[cols]) + jnp.einsum("ki,kj->kij", x[rows], lam[cols]))
    return dD, dO


def guarded_cholesky(A):
    """Lower Cholesky factors of a batch ``A [..., m, m]`` (lower triangle read) that never fail.

    Rule: a matrix whose Cholesky breaks down (non-finite factor, i.e. a pivot
    <= 0 in floating point: semi-definite or indefinite input) gets the
    block-Jacobi stand-in ``diag(sqrt(max(|A_ii|, tau)))`` with
    ``tau = sqrt(eps) * max_i |A_ii| + 1e-30`` as its factor, so the solve stays
    finite.  Returns ``(L, clamped)``; ``clamped`` is true when any matrix of
    the batch was replaced.  Deliberately no second factorisation attempt: a
    ``lax.cond`` retry with a shifted matrix doubled the XLA:CPU compile time
    of the whole sparse solver (13.3 s vs 6.8 s on sphere2500) for a case
    (missing gauge prior) that damped solvers never reach.
    """
    L0 = lax.linalg.cholesky(A, symmetrize_input=False)
    # the diagonal tells: a non-finite entry L_ij (j < i) enters L_ii^2 = A_ii - sum_k L_ik^2,
    # and a breakdown leaves JAX's factor all NaN; one pass over m numbers instead of m^2
    # (a dense small solve's 132 x 132 test was a kernel of its own, 20 us a trial)
    ok = jnp.all(jnp.isfinite(jnp.diagonal(L0, axis1=-2, axis2=-1)), axis=-1)
    dg = jnp.abs(jnp.diagonal(A, axis1=-2, axis2=-1))
    tau = jnp.sqrt(jnp.finfo(A.dtype).eps) * jnp.max(dg, axis=-1, keepdims=True) + jnp.asarray(1e-30, A.dtype)
    Ld = jnp.sqrt(jnp.maximum(dg, tau))[..., None] * jnp.eye(A.shape[-1], dtype=A.dtype)
    L = jnp.where(ok[..., None, None], L0, Ld)
    return L, ~jnp.all(ok)


# --------------------------------------------------------------------------- dense


def assemble_dense(rows, cols, diag, offdiag):
    """Dense ``[n d, n d]`` matrix of the block system (small problems only)."""
    n, d, _ = diag.shape
    idx = jnp.arange(n, dtype=jnp.asarray(rows).dtype)
    # one scatter for the diagonal blocks and both triangles: XLA:CPU compiles each scatter
    # as a loop kernel of its own (a smaller program; on the quiet machine the whole solve's
    # cold compile did not change measurably, benchmarks/results/compare_revisions_cpu.json)
    at_rows = jnp.concatenate([idx, rows, cols])
    at_cols = jnp.concatenate([idx, cols, rows])
    blocks = jnp.concatenate([sym(diag), offdiag, jnp.swapaxes(offdiag, -1, -2)])
    # scattered straight into the [n, d, n, d] layout, whose reshape is free (a [n, n, d, d]
    # matrix needed a transposing copy of all n^2 d^2 entries)
    H = jnp.zeros((n, d, n, d), diag.dtype).at[at_rows, :, at_cols, :].add(blocks)
    return H.reshape(n * d, n * d)


def dense_factor(rows, cols, diag, offdiag):
    """``((L, H), clamped)``: the dense matrix is kept beside its factor for the residual."""
    H = assemble_dense(rows, cols, diag, offdiag)
    L, clamped = guarded_cholesky(H)
    return (L, H), clamped


def dense_solve(data, rhs):
    """``(x, relative residual |H x - b| / |b|)`` for ``rhs`` ``b [n, d]``; the residual is
    one dense product (the block product of :func:`matvec` adds gathers and two scatters,
    each a loop kernel that XLA:CPU compiles on its own)."""
    L, H = data
    n, d = rhs.shape
    b = rhs.reshape(n * d, 1)
    y = lax.linalg.triangular_solve(L, b, left_side=True, lower=True)
    x = lax.linalg.triangular_solve(L, y, left_side=True, lower=True, transpose_a=True)
    r = H @ x - b
    bn = jnp.sqrt(jnp.sum(b * b))
    rel = jnp.sqrt(jnp.sum(r * r)) / jnp.where(bn > 0, bn, jnp.asarray(1.0, b.dtype))
    return x.reshape(n, d), rel


# --------------------------------------------------------------------------- PCG


def block_jacobi(diag):
    """Cholesky factors of the (symmetrised) diagonal blocks, guarded."""
    return guarded_cholesky(sym(diag))


def apply_block_jacobi(Ld, r):
    """``(L L^T)^-1 r`` per block: ``Ld [n, d, d]`` from :func:`block_jacobi`, ``r [n, d]``."""
    y = lax.linalg.triangular_solve(Ld, r[..., None], left_side=True, lower=True)
    return lax.linalg.triangular_solve(Ld, y, left_side=True, lower=True, transpose_a=True)[..., 0]


def conjugate_gradient(apply_a, rhs, precondition, *, max_iterations, tolerance, x0=None, side=False):
    """Preconditioned conjugate gradients for ``A x = rhs``, ``A`` symmetric positive definite.

    The one CG of the package: ``method="pcg"`` solves (matrix-free block products,
    block-Jacobi preconditioner) and the implicit backward pass of the solver (exact
    Hessian-vector products, the factorised Gauss-Newton system as preconditioner, and a
    side output) both call it.  Runs in a ``lax.while_loop`` (jit/vmap-able; reverse mode through the loop is
    not supported, differentiate the solve around it instead).

    Args:
      apply_a: ``v -> A v`` on arrays shaped like ``rhs`` (any shape, e.g. ``[n, d]``).
      rhs: ``b``, float32 or float64; the iterates share its shape and dtype.
      precondition: ``r -> M^-1 r`` (symmetric positive definite), same shapes.
      max_iterations: iteration bound (int).
      tolerance: stop when ``||b - A x|| <= tolerance ||b||`` (Euclidean norms over all
        entries).
      x0: starting point (``rhs``'s shape); ``None``: zero (the residual is then ``b``
        itself, without evaluating ``A 0``).
      side: ``apply_a`` returns ``(A v, S v)`` with ``S`` a linear map to any pytree of
        arrays, computed together with ``A v`` (the implicit backward pass: one pullback
        gives both); CG then also returns ``S x`` as the sum of ``alpha_k S p_k`` over its
        steps, with no further product (``x0`` must be ``None``).
    Returns:
      ``(x, iterations, relative residual ||b - A x|| / ||b||)``, and ``S x`` fourth with
      ``side``: ``x`` like ``rhs``,
      ``iterations`` int32 scalar, the residual a scalar of ``rhs``'s dtype (the norm of the
      recursively updated residual; ``||r||`` itself when ``b == 0``).  Iteration also stops
      when a search direction has ``p^T A p <= 0`` or non-finite (``A`` not positive definite
      along ``p``, or NaN input): the step would be meaningless, so ``x`` is kept.
    """
    dt = rhs.dtype
    bnorm = jnp.sqrt(jnp.sum(rhs * rhs))
    thresh = tolerance * bnorm
    if side and x0 is not None:
        raise ValueError("conjugate_gradient: side needs x0=None (S x is summed from x = 0)")
    if x0 is None:
        x0, r0, rnorm0 = jnp.zeros_like(rhs), rhs, bnorm
    else:
        r0 = rhs - apply_a(x0)
        rnorm0 = jnp.sqrt(jnp.sum(r0 * r0))
    z0 = precondition(r0)
    rz0 = jnp.sum(r0 * z0)
    # S 0 = 0, shaped as apply_a's side output (traced for its shapes only)
    s0 = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(apply_a, rhs)[1]) if side else ()

    def cond(state):
        k, x, r, p, rz, rnorm, stalled, _ = state
        return (k < max_iterations) & (rnorm > thresh) & ~stalled

    def body(state):
        k, x, r, p, rz, rnorm, stalled, sx = state
        Ap, Sp = apply_a(p) if side else (apply_a(p), ())
        pAp = jnp.sum(p * Ap)
        good = (pAp > 0) & jnp.isfinite(pAp)
        alpha = jnp.where(good, rz / jnp.where(good, pAp, 1.0), 0.0)
        x = x + alpha * p
        sx = jax.tree_util.tree_map(lambda a, b: a + (alpha * b).astype(a.dtype), sx, Sp)
        r = r - alpha * Ap
        z = precondition(r)
        rz_new = jnp.sum(r * z)
        beta = jnp.where(rz > 0, rz_new / jnp.where(rz > 0, rz, 1.0), 0.0)
        p = z + beta * p
        return k + 1, x, r, p, rz_new, jnp.sqrt(jnp.sum(r * r)), ~good, sx

    state = (jnp.asarray(0, jnp.int32), x0, r0, z0, rz0, rnorm0, jnp.asarray(False), s0)
    k, x, r, _, _, rnorm, _, sx = lax.while_loop(cond, body, state)
    rel = rnorm / jnp.where(bnorm > 0, bnorm, jnp.asarray(1.0, dt))
    return (x, k, rel.astype(dt), sx) if side else (x, k, rel.astype(dt))


# --------------------------------------------------------------------------- multifrontal Cholesky


def cholesky_factor(tiers, n, d, diag, offdiag):
    """Multifrontal numeric factorisation.

    Each tier is one ``lax.scan`` over its steps; a step assembles ``batch``
    fronts from the input blocks and the children's update matrices (gathers
    from read-only buffers of earlier tiers and from this tier's own buffer),
    factors them (guarded Cholesky L11, L21 = F21 L11^-T by a triangular
    solve) and stores its update matrices F22 - L21 L21^T.
    Returns ``((L11, L21) per tier), clamped``.
    """
    dt = diag.dtype
    inputs = jnp.concatenate([jnp.zeros((1, d, d), dt), sym(diag), offdiag,
                              jnp.swapaxes(offdiag, -1, -2)], axis=0)
    buffers = [inputs]  # buffer 0: inputs, buffer u + 1: updates of tier u
    factors = []
    clamped = jnp.asarray(False)
    zero = jnp.zeros((), jnp.int32)
    for t, T in enumerate(tiers):
        a, r, B = T.a, T.r, T.batch
        m = a + r
        ad = a * d
        own = any(buf == t + 1 for buf, _ in T.srcs)
        ext = tuple(buffers[buf] for buf, _ in T.srcs if buf != t + 1)

        def step(carry, xs, a=a, r=r, B=B, m=m, ad=ad, t=t, T=T, own=own, ext=ext):
            ubuf, clamped = carry
            k, srcs, dst, pad = xs
            blocks = []
            it = iter(ext)
            for (buf, _), src in zip(T.srcs, srcs):
                blocks.append(jnp.take(ubuf if buf == t + 1 else next(it), src, axis=0, mode="clip"))
            Fb = jnp.zeros((B * m * m + 1, d, d), dt).at[dst].add(
                jnp.concatenate(blocks, axis=0), mode="promise_in_bounds")
            F = Fb[:-1].reshape(B, m, m, d, d).transpose(0, 1, 3, 2, 4).reshape(B, m * d, m * d)
            A11 = F[:, :ad, :ad] + pad.astype(dt)[:, :, None] * jnp.eye(ad, dtype=dt)
            L11, cl = guarded_cholesky(A11)
            if r:
                L21 = lax.linalg.triangular_solve(L11, F[:, ad:, :ad], left_side=False, lower=True,
                                                  transpose_a=True)
                U = F[:, ad:, ad:] - jnp.einsum("bik,bjk->bij", L21, L21)
                Ub = U.reshape(B, r, d, r, d).transpose(0, 1, 3, 2, 4).reshape(B * r * r, d, d)
                if own:
                    ubuf = lax.dynamic_update_slice(ubuf, Ub, (k * (B * r * r), zero, zero))
            else:
                L21 = jnp.zeros((B, 0, ad), dt)
                Ub = jnp.zeros((0, d, d), dt)
            return (ubuf, clamped | cl), (L11, L21, None if own else Ub)

        xs = (jnp.arange(T.steps, dtype=jnp.int32), tuple(jnp.asarray(s_) for _, s_ in T.srcs),
              jnp.asarray(T.dst), jnp.asarray(T.pad_diag))
        ubuf0 = jnp.zeros((T.u_size if own else 1, d, d), dt)
        (ubuf, clamped), (L11s, L21, Us) = lax.scan(step, (ubuf0, clamped), xs)
        if not own:
            ubuf = jnp.concatenate([Us.reshape(-1, d, d), jnp.zeros((1, d, d), dt)], axis=0)
        buffers.append(ubuf)
        factors.append((L11s, L21))
    return tuple(factors), clamped


def cholesky_solve(tiers, n, d, factors, rhs):
    """Forward then backward substitution with the multifrontal factor (scans over steps)."""
    y = jnp.concatenate([rhs, jnp.zeros((1, d), rhs.dtype)], axis=0)
    for T, (L11, L21) in zip(tiers, factors):
        B, a, r = T.batch, T.a, T.r

        def fwd(y, xs, B=B, a=a, r=r):
            L11, L21, ci, ri = xs
            z = lax.linalg.triangular_solve(L11, y[ci].reshape(B, a * d, 1), left_side=True,
                                            lower=True)[..., 0]
            y = y.at[ci].set(z.reshape(B, a, d), mode="promise_in_bounds")
            if r:
                y = y.at[ri].add(-jnp.einsum("bij,bj->bi", L21, z).reshape(B, r, d),
                                 mode="promise_in_bounds")
            return y, None

        y, _ = lax.scan(fwd, y, (L11, L21, jnp.asarray(T.col_idx), jnp.asarray(T.row_idx)))
    for T, (L11, L21) in zip(reversed(tiers), reversed(factors)):
        B, a, r = T.batch, T.a, T.r

        def bwd(y, xs, B=B, a=a, r=r):
            L11, L21, ci, ri = xs
            t = y[ci].reshape(B, a * d)
            if r:
                t = t - jnp.einsum("bji,bj->bi", L21, y[ri].reshape(B, r * d))
            x = lax.linalg.triangular_solve(L11, t[..., None], left_side=True, lower=True,
                                            transpose_a=True)[..., 0]
            return y.at[ci].set(x.reshape(B, a, d), mode="promise_in_bounds"), None

        y, _ = lax.scan(bwd, y, (L11, L21, jnp.asarray(T.col_idx), jnp.asarray(T.row_idx)),
                        reverse=True)
    return y[:n]
