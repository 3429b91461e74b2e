"""Host sparse Cholesky: CHOLMOD (through ``cvxopt``) called from JAX as an XLA custom call.

Why a host library and not more JAX code: on CPU, CHOLMOD's supernodal factorisation
runs 5-7x faster than our JAX multifrontal Cholesky on the shared pose graphs
(torus3D 160 ms vs 920 ms, sphere2500 55 ms vs 280 ms, city10000 38 ms vs 320 ms per
factorisation, see docs/linear.md) and the compiled JAX program shrinks to one custom
call, so compile time no longer grows with the graph.  ``cvxopt`` ships CHOLMOD,
AMD and OpenBLAS inside its PyPI wheels (no compiler, no system SuiteSparse), and its
``cholmod.symbolic`` / ``cholmod.numeric`` split lets the symbolic analysis be computed
once per sparsity pattern and reused for every numeric factorisation.

The sparsity pattern is *data* (``rows``, ``cols`` int arrays, traced or not), so one
compiled program serves every graph of a size class; the host keeps the analysis of the
patterns it has seen (keyed by a digest of the pattern) in a small LRU cache.

Padding convention: a slot with ``rows[k] == cols[k]`` is unused and ignored.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading
from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np

from ..runtime import host_call

_MAX_PATTERNS = 16


_loaded: list = []


def available() -> bool:
    """True when the CHOLMOD backend (the ``cvxopt`` package) can be imported."""
    if not _loaded:
        try:
            import cvxopt.cholmod  # noqa: F401
        except ImportError:
            return False
        _single_threaded_blas()
        _loaded.append(True)
    return True


def _single_threaded_blas():
    """One thread for the OpenBLAS bundled with cvxopt (CHOLMOD's supernodal kernels).

    The fronts of pose graphs are small; on a 2-core machine a second BLAS thread only
    waits whenever another process holds a core.  Only cvxopt's own copy is touched
    (numpy's and XLA's thread settings are left alone).
    """
    import glob
    import os

    import cvxopt

    libs = os.path.join(os.path.dirname(os.path.dirname(cvxopt.__file__)), "cvxopt.libs")
    for path in glob.glob(os.path.join(libs, "libopenblas*.so*")):
        try:
            ctypes.CDLL(path).openblas_set_num_threads(1)
        except (OSError, AttributeError):  # not an OpenBLAS we can configure: keep its default
            pass


class _Pattern:
    """Scalar lower-triangular CCS pattern of one block pattern, with CHOLMOD's analysis.

    ``diag_slot [n*d*d]`` / ``off_slot [M*d*d]``: position in the CCS value array of every
    scalar of the input blocks (``nnz`` = dropped: upper half of a diagonal block, padded
    slots); ``diag_w``: 1 on block diagonals, 0.5 elsewhere (the solver factorises the
    symmetric part ``(D + D^T)/2``).
    """

    def __init__(self, n: int, d: int, rows: np.ndarray, cols: np.ndarray):
        from cvxopt import cholmod, matrix, spmatrix

        N = n * d
        a = np.arange(d)
        # diagonal blocks: scalar (i, j) -> lower (max, min); both halves feed one slot
        bi = np.arange(n)[:, None, None] * d
        di = np.broadcast_to(bi + a[None, :, None], (n, d, d))
        dj = np.broadcast_to(bi + a[None, None, :], (n, d, d))
        d_lo, d_hi = np.minimum(di, dj).ravel(), np.maximum(di, dj).ravel()
        self.diag_w = np.where(di == dj, 1.0, 0.5).ravel()
        # off-diagonal block k = H[r, c]; scalar (r d + p, c d + q) lies in the lower
        # triangle as is when r > c, else as its transpose
        r = rows.astype(np.int64)[:, None, None]
        c = cols.astype(np.int64)[:, None, None]
        oi = r * d + a[None, :, None]
        oj = c * d + a[None, None, :]
        o_hi = np.where(r > c, oi, oj)
        o_lo = np.where(r > c, oj, oi)
        valid = np.broadcast_to((r != c), o_hi.shape).ravel()
        hi = np.concatenate([d_hi, o_hi.ravel()[valid]])
        lo = np.concatenate([d_lo, o_lo.ravel()[valid]])
        key, inv = np.unique(lo * N + hi, return_inverse=True)  # column-major (CCS) order
        self.nnz = int(key.size)
        self.diag_slot = inv[: n * d * d]
        off_slot = np.full(valid.size, self.nnz, dtype=np.int64)
        off_slot[valid] = inv[n * d * d :]
        self.off_slot = off_slot
        self.diag_pos = np.searchsorted(key, np.arange(N) * (N + 1))  # CCS index of H_ii
        I = matrix(key % N)
        J = matrix(key // N)
        self.A = spmatrix(matrix(np.ones(self.nnz)), I, J, (N, N))
        self.F = cholmod.symbolic(self.A, uplo="L")
        self.lock = threading.Lock()
        self.last = None  # (diag, offdiag) of the factor currently held in F


_patterns: OrderedDict = OrderedDict()
_patterns_lock = threading.Lock()


def _pattern(n, d, rows, cols) -> _Pattern:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.asarray([n, d, rows.size], np.int64).tobytes())
    h.update(np.ascontiguousarray(rows, np.int32).tobytes())
    h.update(np.ascontiguousarray(cols, np.int32).tobytes())
    key = h.digest()
    with _patterns_lock:
        p = _patterns.get(key)
        if p is not None:
            _patterns.move_to_end(key)
            return p
    p = _Pattern(n, d, rows, cols)
    with _patterns_lock:
        _patterns[key] = p
        while len(_patterns) > _MAX_PATTERNS:
            _patterns.popitem(last=False)
    return p


def _factorize(p: _Pattern, diag: np.ndarray, offdiag: np.ndarray, dtype) -> bool:
    """Numeric factorisation into ``p.F``; returns ``clamped``.

    A matrix that is not numerically positive definite is factorised again with its
    diagonal scaled by ``1 + eps 16^k`` for k = 0, 1, ... up to ``sqrt(eps)`` (``eps`` of
    the input dtype: H was rounded to that precision, so a float32 H built from sums of
    J^T J blocks can be indefinite by a few ulps of its diagonal), and if that still fails
    with ``tau I`` added,
    ``tau = sqrt(eps) * max_i |H_ii| + 1e-30`` (a semi-definite H, e.g. without a gauge).
    Either way it is reported as clamped. The relative shift comes first because the
    absolute one is scaled by the stiffest variable (a 1e-6-sigma prior makes it 1e12 x
    sqrt(eps)), which would damp every other variable's step into uselessness.
    """
    from cvxopt import cholmod, matrix

    vals = np.bincount(p.diag_slot, weights=diag.ravel() * p.diag_w, minlength=p.nnz + 1)
    vals += np.bincount(p.off_slot, weights=offdiag.ravel(), minlength=p.nnz + 1)
    vals = vals[: p.nnz]
    dg = np.abs(vals[p.diag_pos])
    eps = float(np.finfo(dtype).eps)
    # No shift first; then the smallest relative shift that works (a pose graph's
    # low-frequency modes have eigenvalues far below its diagonal, so a larger shift damps
    # them away); then the absolute one.
    relative = [eps * 16.0**k * dg for k in range(int(np.log(eps**-0.5) / np.log(16.0)) + 1)]
    for k, shift in enumerate([0.0] + relative + [np.sqrt(eps) * dg.max() + 1e-30]):
        shifted = vals.copy()
        shifted[p.diag_pos] += shift
        p.A.V = matrix(shifted)
        try:
            cholmod.numeric(p.A, p.F)
            return k > 0
        except ArithmeticError:
            continue
    p.last = None  # indefinite beyond every shift: no usable factor
    raise ArithmeticError("H is not positive definite even after a diagonal shift")


def _host_solve(rows, cols, diag, offdiag, rhs, reuse):
    """Host side of one solve (single problem, numpy in / numpy out)."""
    from cvxopt import cholmod, matrix

    n, d = rhs.shape
    dt = rhs.dtype
    diag = np.asarray(diag, np.float64)
    offdiag = np.asarray(offdiag, np.float64)
    b = np.asarray(rhs, np.float64)
    if not (np.all(np.isfinite(diag)) and np.all(np.isfinite(offdiag))):
        return np.full((n, d), np.nan, dt), np.asarray(True)
    p = _pattern(n, d, np.asarray(rows), np.asarray(cols))
    with p.lock:
        if reuse and p.last is not None and np.array_equal(p.last[0], diag) and np.array_equal(p.last[1], offdiag):
            clamped = p.last[2]
        else:
            try:
                clamped = _factorize(p, diag, offdiag, dt)
            except ArithmeticError:
                return np.full((n, d), np.nan, dt), np.asarray(True)
            p.last = (diag.copy(), offdiag.copy(), clamped) if reuse else None
        x = matrix(b.reshape(n * d, 1))
        cholmod.solve(p.F, x)
    return np.asarray(x, np.float64).reshape(n, d).astype(dt), np.asarray(clamped)


# --------------------------------------------------------------------------- XLA custom call
# The host solve enters the compiled program as the named custom call below, not as a
# ``jax.pure_callback``, so that programs with it go to JAX's persistent compilation cache
# (see jaxgraph.runtime.host_call).

_TARGET = "jaxgraph_cholmod_solve"
_DTYPES = {"float32": np.float32, "float64": np.float64}


def _custom_call(outs, ins, opaque):
    """Inputs rows, cols, diag, offdiag, rhs; outputs (x, clamped); ``opaque`` =
    ``"n,d,m,dtype,reuse"``. A failure on the host gives a NaN solution (status 6)."""
    n, d, m, dt, reuse = opaque.split(",")
    n, d, m, dt = int(n), int(d), int(m), _DTYPES[dt]
    x_out = host_call.buffer(outs[0], dt, (n, d))
    clamped_out = host_call.buffer(outs[1], np.bool_, ())
    x_out[...], clamped_out[...] = np.nan, True  # until the solve succeeds
    x, clamped = _host_solve(
        host_call.buffer(ins[0], np.int32, (m,)), host_call.buffer(ins[1], np.int32, (m,)),
        host_call.buffer(ins[2], dt, (n, d, d)), host_call.buffer(ins[3], dt, (m, d, d)),
        host_call.buffer(ins[4], dt, (n, d)), reuse == "1",
    )
    x_out[...], clamped_out[...] = x, clamped


host_call.register(_TARGET, _custom_call)


def solve(rows, cols, diag, offdiag, rhs, *, reuse: bool = False):
    """``x = H^-1 rhs`` on the host; returns ``(x [n, d], clamped)``.

    Args:
      rows, cols: ``[M]`` int block pattern (traced or constant; ``rows == cols`` = unused).
      diag ``[n, d, d]``, offdiag ``[M, d, d]``, rhs ``[n, d]``: float32 or float64
        (factorised in float64 on the host, returned in the input dtype).
      reuse: keep the numeric factorisation and skip it when the next call on the same
        pattern brings identical blocks (``solve_factored`` and the reverse-mode adjoint).
    Under ``vmap`` the host is called once per batch element. CPU backend only.
    """
    n, d = rhs.shape
    m = rows.shape[0]
    dt = jnp.dtype(rhs.dtype).name
    if dt not in _DTYPES:
        raise TypeError(f"host solve: float32 or float64 blocks expected, got {dt}")
    results = (jax.ShapeDtypeStruct((n, d), rhs.dtype), jax.ShapeDtypeStruct((), jnp.bool_))
    args = (jnp.asarray(rows, jnp.int32), jnp.asarray(cols, jnp.int32), diag, offdiag, rhs)
    return host_call.call(_TARGET, results, *args, opaque=f"{n},{d},{m},{dt},{int(bool(reuse))}")
