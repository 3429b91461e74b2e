"""Tests of jaxgraph.linear against float64 numpy references.

Several sparsity patterns (chain, tree, grid with loops, isolated blocks,
duplicate / reversed off-diagonal blocks) are combined as disconnected
components of one graph, so each block size costs a single compilation.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgraph import linear

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "posegraph"


def union_pattern():
    """Edges of: chain(6) + binary tree(7) + 3x3 grid + isolated block + duplicated/reversed edges."""
    rows, cols = [], []
    off = 0
    for i in range(5):  # chain 0..5
        rows.append(off + i), cols.append(off + i + 1)
    off += 6
    for i in range(1, 7):  # tree
        rows.append(off + (i - 1) // 2), cols.append(off + i)
    off += 7
    g = np.arange(9).reshape(3, 3) + off  # grid with loops
    for a, b in zip(g[:, :-1].ravel(), g[:, 1:].ravel()):
        rows.append(a), cols.append(b)
    for a, b in zip(g[:-1, :].ravel(), g[1:, :].ravel()):
        rows.append(b), cols.append(a)  # reversed order
    off += 9
    off += 1  # isolated block (diagonal only)
    # duplicates: the same pair three times, in both orders
    rows += [off, off + 1, off]
    cols += [off + 1, off, off + 1]
    off += 2
    return off, np.array(rows), np.array(cols)


def random_system(n, d, rows, cols, seed=0, prior=True, batch=()):
    """SPD H = J^T J + prior from random per-edge Jacobians (float64 numpy)."""
    rng = np.random.default_rng(seed)
    M = len(rows)
    Ji = -np.eye(d) + 0.5 * rng.normal(size=batch + (M, d, d))
    Jj = np.eye(d) + 0.5 * rng.normal(size=batch + (M, d, d))
    diag = np.zeros(batch + (n, d, d))
    for k in range(M):
        diag[..., rows[k], :, :] += np.einsum("...ai,...aj->...ij", Ji[..., k, :, :], Ji[..., k, :, :])
        diag[..., cols[k], :, :] += np.einsum("...ai,...aj->...ij", Jj[..., k, :, :], Jj[..., k, :, :])
    if prior:
        # every component gets a prior so H is positive definite
        diag += 0.3 * np.eye(d)
    offd = np.einsum("...kai,...kaj->...kij", Ji, Jj)
    rhs = rng.normal(size=batch + (n, d))
    return diag, offd, rhs


def dense_reference(n, d, rows, cols, diag, offd):
    H = np.zeros((n * d, n * d))
    for i in range(n):
        H[i * d:(i + 1) * d, i * d:(i + 1) * d] += 0.5 * (diag[i] + diag[i].T)
    for k, (i, j) in enumerate(zip(rows, cols)):
        H[i * d:(i + 1) * d, j * d:(j + 1) * d] += offd[k]
        H[j * d:(j + 1) * d, i * d:(i + 1) * d] += offd[k].T
    return H


_JIT = {}


def jitted(structure):
    """One compiled solve per structure (re-used across tests)."""
    if structure not in _JIT:
        _JIT[structure] = jax.jit(lambda D, O, b: linear.solve_with_info(structure, D, O, b))
    return _JIT[structure]


_STRUCT = {}


def structure(d, method):
    key = (d, method)
    if key not in _STRUCT:
        n, r, c = union_pattern()
        _STRUCT[key] = linear.analyze(n, d, r, c, method=method)
    return _STRUCT[key]


@pytest.mark.parametrize("method", ["host", "cholesky", "dense", "pcg"])
@pytest.mark.parametrize("d", [1, 3, 6])
def test_matches_dense_float64(method, d):
    n, r, c = union_pattern()
    diag, offd, rhs = random_system(n, d, r, c, seed=d)
    x, info = jitted(structure(d, method))(diag, offd, rhs)
    H = dense_reference(n, d, r, c, diag, offd)
    xr = np.linalg.solve(H, rhs.reshape(-1)).reshape(n, d)
    assert x.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(x), xr, rtol=0, atol=1e-8 * np.abs(xr).max())
    assert not bool(info.clamped)
    assert float(info.residual_norm) < 1e-9


@pytest.mark.parametrize("method", ["host", "cholesky", "dense", "pcg"])
def test_float32_preserved_and_accurate(method):
    d = 3
    n, r, c = union_pattern()
    diag, offd, rhs = random_system(n, d, r, c, seed=7)
    s = structure(d, method)
    x, info = jitted(s)(*(a.astype(np.float32) for a in (diag, offd, rhs)))
    assert x.dtype == jnp.float32 and info.residual_norm.dtype == jnp.float32
    xr = np.linalg.solve(dense_reference(n, d, r, c, diag, offd), rhs.reshape(-1)).reshape(n, d)
    np.testing.assert_allclose(np.asarray(x), xr, rtol=0, atol=2e-3 * np.abs(xr).max())


def test_matvec_and_to_dense():
    d = 3
    n, r, c = union_pattern()
    diag, offd, rhs = random_system(n, d, r, c, seed=3)
    s = structure(d, "cholesky")
    H = dense_reference(n, d, r, c, diag, offd)
    np.testing.assert_allclose(np.asarray(linear.to_dense(s, diag, offd)), H, atol=1e-12)
    np.testing.assert_allclose(np.asarray(linear.matvec(s, diag, offd, rhs)).reshape(-1),
                               H @ rhs.reshape(-1), atol=1e-11)


def test_vmap_and_batched_inputs_match_single_solves():
    d = 3
    n, r, c = union_pattern()
    diag, offd, rhs = random_system(n, d, r, c, seed=11, batch=(3,))
    s = structure(d, "cholesky")
    xb = jax.vmap(jitted(s))(diag, offd, rhs)[0]
    for k in range(3):
        xk, _ = jitted(s)(diag[k], offd[k], rhs[k])
        np.testing.assert_allclose(np.asarray(xb[k]), np.asarray(xk), rtol=1e-10, atol=1e-12)
    # leading batch axes on the inputs directly, and factor / solve_factored reuse
    x2 = jax.jit(lambda D, O, b: linear.solve_factored(s, linear.factor(s, D, O), b))(
        diag, offd, np.stack([rhs, 2 * rhs], axis=1))  # [3, 2, n, d]
    np.testing.assert_allclose(np.asarray(x2[:, 0]), np.asarray(xb), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(x2[:, 1]), 2 * np.asarray(xb), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["host", "cholesky", pytest.param("pcg", marks=pytest.mark.slow)])
def test_gradient_matches_finite_differences(method):
    d = 2
    rows, cols = np.array([0, 1, 2, 0]), np.array([1, 2, 3, 3])
    n = 4
    diag, offd, rhs = random_system(n, d, rows, cols, seed=5)
    s = linear.analyze(n, d, rows, cols, method=method, pcg_tolerance=1e-13)
    w = np.random.default_rng(1).normal(size=(n, d))

    def loss(D, O, b):
        x = linear.solve(s, D, O, b)
        return jnp.sum(w * x) + 0.5 * jnp.sum(x ** 2)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(diag, offd, rhs)
    rng = np.random.default_rng(2)
    for arg, g in enumerate(grads):
        args = [diag, offd, rhs]
        v = rng.normal(size=args[arg].shape)
        eps = 1e-6
        plus = list(args)
        minus = list(args)
        plus[arg] = args[arg] + eps * v
        minus[arg] = args[arg] - eps * v
        fd = (float(loss(*plus)) - float(loss(*minus))) / (2 * eps)
        assert abs(float(np.sum(np.asarray(g) * v)) - fd) < 1e-6 * max(1.0, abs(fd)), (arg, fd)


def test_jit_does_not_retrace():
    d = 3
    n, r, c = union_pattern()
    s = structure(d, "cholesky")
    traces = []

    def f(structure, D, O, b):
        traces.append(1)
        return linear.solve(structure, D, O, b)

    g = jax.jit(f, static_argnums=0)  # the structure works as a static argument
    for seed in range(3):
        g(s, *random_system(n, d, r, c, seed=seed))
    assert len(traces) == 1


@pytest.mark.parametrize("method", ["host", "cholesky", "dense", "pcg"])
def test_semidefinite_input_is_finite_and_flagged(method):
    # a chain with no prior: H has the d-dimensional null space of a global shift
    d, n = 3, 6
    rows, cols = np.arange(n - 1), np.arange(1, n)
    rng = np.random.default_rng(0)
    J = np.eye(d) + 0.1 * rng.normal(size=(n - 1, d, d))
    diag = np.zeros((n, d, d))
    diag[rows] += np.einsum("kai,kaj->kij", J, J)
    diag[cols] += np.einsum("kai,kaj->kij", J, J)
    offd = -np.einsum("kai,kaj->kij", J, J)
    rhs = rng.normal(size=(n, d))
    s = linear.analyze(n, d, rows, cols, method=method, pcg_max_iterations=50)
    x, info = linear.solve_with_info(s, diag, offd, rhs)
    assert np.all(np.isfinite(np.asarray(x)))
    if method != "pcg":
        assert bool(info.clamped)
    # a zero diagonal block (variable with no factor at all) is also survived
    diag0 = diag.copy()
    diag0[:] = 0.0
    x0, info0 = linear.solve_with_info(s, diag0, offd * 0.0, rhs)
    assert np.all(np.isfinite(np.asarray(x0)))
    if method != "pcg":
        assert bool(info0.clamped)


def test_nested_dissection_reduces_fill_on_grid():
    w = 12
    g = np.arange(w * w).reshape(w, w)
    rows = np.concatenate([g[:, :-1].ravel(), g[:-1, :].ravel()])
    cols = np.concatenate([g[:, 1:].ravel(), g[1:, :].ravel()])
    n = w * w
    exact = dict(relax_cols=1, relax_frac=0.0)
    nat = linear.analyze(n, 1, rows, cols, method="cholesky", ordering="natural", **exact)
    # row-major natural order: L fills the envelope, row i spans columns from its
    # first neighbour (i - w for i >= w, i - 1 in the first grid row) to i, so
    # nnz(L) = n (diagonal) + (w - 1) + w (n - w)
    assert nat.stats["nnz_blocks_L"] == n + (w - 1) + w * (n - w)
    nd = linear.analyze(n, 1, rows, cols, method="cholesky", ordering="nd", **exact)
    md = linear.analyze(n, 1, rows, cols, method="cholesky", ordering="amd", **exact)
    assert nd.stats["nnz_blocks_L"] < 0.75 * nat.stats["nnz_blocks_L"]
    assert md.stats["nnz_blocks_L"] < 0.75 * nat.stats["nnz_blocks_L"]


def test_bad_input_messages():
    with pytest.raises(ValueError, match="outside"):
        linear.analyze(3, 2, np.array([0]), np.array([5]))
    with pytest.raises(ValueError, match="diagonal"):
        linear.analyze(3, 2, np.array([1]), np.array([1]))
    with pytest.raises(ValueError, match="unknown method"):
        linear.analyze(3, 2, np.array([0]), np.array([1]), method="lu")
    s = linear.analyze(3, 2, np.array([0]), np.array([1]))
    with pytest.raises(ValueError, match="diag_blocks must have shape"):
        linear.solve(s, np.zeros((3, 3, 3)), np.zeros((1, 2, 2)), np.zeros((3, 2)))
    with pytest.raises(TypeError, match="one dtype"):
        linear.solve(s, np.zeros((3, 2, 2), np.float32), np.zeros((1, 2, 2)), np.zeros((3, 2)))


def read_edges(path):
    ij = [line.split()[1:3] for line in open(path) if line.startswith("EDGE")]
    ij = np.array(ij, dtype=np.int64)
    return int(ij.max()) + 1, ij[:, 0], ij[:, 1]


@pytest.mark.parametrize("name,d", [("tinyGrid3D", 6), pytest.param("intel", 3, marks=pytest.mark.slow)])
def test_real_structures_against_scipy(name, d):
    sp = pytest.importorskip("scipy.sparse")
    spla = pytest.importorskip("scipy.sparse.linalg")
    path = DATA / f"{name}.g2o"
    if not path.exists():
        pytest.skip(f"{path} not available")
    n, r, c = read_edges(path)
    rng = np.random.default_rng(0)
    M = r.size
    Ji = -np.eye(d) + 0.3 * rng.normal(size=(M, d, d))
    Jj = np.eye(d) + 0.3 * rng.normal(size=(M, d, d))
    diag = np.zeros((n, d, d))
    np.add.at(diag, r, np.einsum("kai,kaj->kij", Ji, Ji))
    np.add.at(diag, c, np.einsum("kai,kaj->kij", Jj, Jj))
    diag[0] += np.eye(d)
    offd = np.einsum("kai,kaj->kij", Ji, Jj)
    rhs = rng.normal(size=(n, d))
    s = linear.analyze(n, d, r, c, method="cholesky")
    x, info = jax.jit(lambda D, O, b: linear.solve_with_info(s, D, O, b))(diag, offd, rhs)
    # the host CHOLMOD backend agrees with the JAX multifrontal one
    xh = linear.solve(linear.analyze(n, d, r, c, method="host"), diag, offd, rhs)
    np.testing.assert_allclose(np.asarray(xh), np.asarray(x), rtol=0, atol=1e-9 * np.abs(np.asarray(x)).max())
    bi = np.arange(d)
    I = np.concatenate([(r[:, None, None] * d + bi[None, :, None]) + 0 * bi[None, None, :],
                        (c[:, None, None] * d + bi[None, :, None]) + 0 * bi[None, None, :],
                        (np.arange(n)[:, None, None] * d + bi[None, :, None]) + 0 * bi[None, None, :]])
    J = np.concatenate([(c[:, None, None] * d + bi[None, None, :]) + 0 * bi[None, :, None],
                        (r[:, None, None] * d + bi[None, None, :]) + 0 * bi[None, :, None],
                        (np.arange(n)[:, None, None] * d + bi[None, None, :]) + 0 * bi[None, :, None]])
    V = np.concatenate([offd, np.swapaxes(offd, 1, 2), diag])
    H = sp.csc_matrix((V.ravel(), (I.ravel(), J.ravel())), shape=(n * d, n * d))
    xr = spla.spsolve(H, rhs.ravel()).reshape(n, d)
    np.testing.assert_allclose(np.asarray(x), xr, rtol=0, atol=1e-8 * np.abs(xr).max())
    assert float(info.residual_norm) < 1e-10


def padded_pattern(n, rows, cols, slots, seed):
    """``rows, cols`` padded to ``slots`` entries with unused (rows == cols) slots."""
    rng = np.random.default_rng(seed)
    pad = rng.integers(0, n, slots - rows.size)
    return (np.concatenate([rows, pad]).astype(np.int32), np.concatenate([cols, pad]).astype(np.int32))


@pytest.mark.parametrize("method", ["host", "dense", "pcg"])
def test_size_class_runs_different_patterns_with_one_compilation(method):
    d, n, slots = 3, 24, 40
    sc = linear.size_class(n, d, slots, method=method)
    traces = []

    @jax.jit
    def f(D, O, b, r, c):
        traces.append(1)
        return linear.solve_with_info(sc, D, O, b, pattern=(r, c))

    rng = np.random.default_rng(0)
    for seed in range(2):  # a chain plus random chords, different per seed
        chords = rng.choice(np.arange(n), size=(8, 2), replace=True)
        chords = chords[chords[:, 0] != chords[:, 1]]
        rows = np.concatenate([np.arange(n - 1), chords[:, 0]])
        cols = np.concatenate([np.arange(1, n), chords[:, 1]])
        diag, offd, rhs = random_system(n, d, rows, cols, seed=seed)
        r, c = padded_pattern(n, rows, cols, slots, seed)
        # padded slots carry garbage blocks: they must be ignored
        O = np.concatenate([offd, rng.normal(size=(slots - rows.size, d, d))])
        x, info = f(diag, O, rhs, r, c)
        xr = np.linalg.solve(dense_reference(n, d, rows, cols, diag, offd), rhs.reshape(-1)).reshape(n, d)
        np.testing.assert_allclose(np.asarray(x), xr, rtol=0, atol=1e-8 * np.abs(xr).max())
    assert len(traces) == 1


def test_size_class_vmap_over_different_patterns_matches_separate_solves():
    d, n, slots = 3, 20, 30
    sc = linear.size_class(n, d, slots, method="host")
    systems, pats = [], []
    for seed, step in ((1, 1), (2, 3)):  # a chain and a stride-3 cycle: different patterns
        rows = np.arange(n)
        cols = (rows + step) % n
        systems.append(random_system(n, d, rows, cols, seed=seed))
        pats.append(padded_pattern(n, rows, cols, slots, seed))
        systems[-1] = (systems[-1][0], np.concatenate([systems[-1][1], np.zeros((slots - n, d, d))]),
                       systems[-1][2])
    D, O, b = (np.stack(x) for x in zip(*systems))
    R, C = (np.stack(x) for x in zip(*pats))

    def one(D, O, b, r, c):
        return linear.solve(sc, D, O, b, pattern=(r, c))

    xb = jax.jit(jax.vmap(one))(D, O, b, R, C)
    grads = jax.jit(jax.grad(lambda O: jnp.sum(jax.vmap(one)(D, O, b, R, C) ** 2)))(O)
    for k in range(2):
        dense = linear.size_class(n, d, slots, method="dense")
        xk = linear.solve(dense, D[k], O[k], b[k], pattern=(R[k], C[k]))
        np.testing.assert_allclose(np.asarray(xb[k]), np.asarray(xk), rtol=1e-10, atol=1e-12)
        gk = jax.grad(lambda O: jnp.sum(linear.solve(dense, D[k], O, b[k], pattern=(R[k], C[k])) ** 2))(O[k])
        np.testing.assert_allclose(np.asarray(grads[k]), np.asarray(gk), rtol=1e-8, atol=1e-10)
        assert np.all(np.asarray(grads[k][n:]) == 0)  # unused slots get no gradient


def test_size_class_refuses_fixed_pattern_methods_and_missing_pattern():
    with pytest.raises(ValueError, match="fixed pattern"):
        linear.size_class(100, 3, 10, method="cholesky")
    sc = linear.size_class(4, 2, 3, method="dense")
    with pytest.raises(ValueError, match="pass pattern"):
        linear.solve(sc, np.zeros((4, 2, 2)), np.zeros((3, 2, 2)), np.zeros((4, 2)))
    s = linear.analyze(3, 2, np.array([0]), np.array([1]))
    with pytest.raises(ValueError, match="do not pass pattern"):
        linear.solve(s, np.eye(2)[None].repeat(3, 0), np.zeros((1, 2, 2)), np.zeros((3, 2)),
                     pattern=(np.array([0]), np.array([1])))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_off_diagonal_entry_is_caught_by_the_factor_diagonal(bad):
    """guarded_cholesky tests only the factor's diagonal: a non-finite entry below it reaches
    the diagonal of its row, so the stand-in (diagonal, finite) is used and flagged."""
    from jaxgraph.linear._numeric import guarded_cholesky

    rng = np.random.default_rng(1)
    B = rng.normal(size=(7, 7))
    A = B @ B.T + 7 * np.eye(7)
    for i, j in ((3, 1), (6, 0), (6, 5)):
        M = A.copy()
        M[i, j] = M[j, i] = bad
        L, clamped = guarded_cholesky(jnp.asarray(M))
        assert bool(clamped) and np.all(np.isfinite(np.asarray(L)))
        np.testing.assert_allclose(np.asarray(L), np.diag(np.sqrt(np.abs(np.diag(M)))), rtol=1e-12)
    L, clamped = guarded_cholesky(jnp.asarray(A))
    assert not bool(clamped)
    np.testing.assert_allclose(np.asarray(L), np.linalg.cholesky(A), rtol=1e-10)
