"""Global-quality initial values for pose graphs (see ``docs/robust.md``).

:func:`chordal` is the chordal relaxation of rotation averaging followed by linear least
squares for the translations (Martinec & Pajdla 2007; Carlone et al., ICRA 2015), the same
two steps as GTSAM's ``InitializePose3``, here for SE(2), SE(3) and SO(3) variable groups:

1. Rotations. A between factor ``Z = X_i^-1 X_j`` with rotation ``R_ij`` asks
   ``R_j = R_i R_ij``. Dropping the constraint ``R in SO(n)`` makes this linear in the
   matrix entries; row ``r`` of every rotation obeys ``R_j[r] = R_ij^T R_i[r]``, so the
   ``n`` rows are ``n`` right-hand sides of ONE block-sparse system with ``n x n`` blocks,
   solved with :mod:`jaxgraph.linear` (one factorisation). Each row of the result is
   projected to the nearest rotation (SVD, determinant +1).
2. Translations, given the rotations: the translation part of every between residual,
   ``R_i^T (t_j - t_i) - t_ij``, is linear in ``t``; one more sparse solve.

Weights. Edge ``k`` with information ``Λ`` weighs its rotation equation by
``|Λ_rr|_F / sqrt(n_r)`` (the isotropic part of the rotation block; for an isotropic block
it is its precision) and its translation equation by ``Λ_tt`` with eigenvalues replaced by
their absolute values (floored at ``1e-6`` of the largest). Both stay positive for
non-diagonal and indefinite matrices, which GTSAM's initialisers reject or fail on.

Gauge. Priors are equations like edges (so a g2o anchor prior places its pose); fixed
variables keep their values exactly; a connected component of the graph with neither a
prior nor a fixed variable is anchored at its lowest-index variable (kept at its given
value); variables no between/prior factor touches keep their values.
"""

from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from .. import linear, smallmat
from ..graph import noise as N
from ..runtime.compile_cache import entry_point
from .. import lie
from ..graph.factors import Between, Prior
from ..graph.problem import Problem

__all__ = ["chordal"]

def chordal(problem: Problem, values: dict, *, linear_solver: str = "auto") -> dict:
    """Chordal initialisation of every SE2 / SE3 / SO3 variable group of ``problem``.

    Args:
      problem: a :class:`jaxgraph.Problem` whose variable groups are all Lie groups
        (SE2, SE3, SO3, SO2, by class or alias). Between and prior factors are used; other
        factors are ignored.
      values: dict ``group -> [count, param_dim]``; supplies the dtype, the values of fixed
        variables, of component anchors and of untouched variables.
      linear_solver: ``"auto" | "cholesky" | "dense" | "pcg"``, the method of
        :func:`jaxgraph.linear.analyze` for both sparse solves.

    Returns:
      values in the problem's layout and dtype (``[count, param_dim]`` per group).

    Raises:
      TypeError if a variable group is not a Lie group (``"R<n>"``).
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"chordal: problem must be a jaxgraph.Problem, got {type(problem).__name__}")
    bad = [v for v in problem.variables if not _rotation_group(problem.structure.kinds[v.name])]
    if bad:
        v = bad[0]
        raise TypeError(
            f"chordal initialisation needs rotation or rigid-motion variables (SE2, SE3, SO2, SO3); variable group "
            f"{v.name!r} is {problem.structure.kinds[v.name].name} (initialise it yourself and solve with jaxgraph.solve)"
        )
    if linear_solver not in linear.METHODS:
        raise ValueError(f"chordal: linear_solver must be one of {linear.METHODS}, got {linear_solver!r}")
    problem.check_values(values)
    plan = _plan(jax.tree_util.tree_structure(problem), _layout(problem), linear_solver)
    return plan.run(problem, dict(values))


# ----------------------------------------------------------------------------------
# Static plan (numpy, once per problem structure)
# ----------------------------------------------------------------------------------
def _layout(problem: Problem) -> tuple:
    """Hashable description of what the plan needs: variables and factor index arrays."""
    vars_ = tuple((v.name, problem.structure.kinds[v.name], v.count, tuple(v.fixed)) for v in problem.variables)
    facs = tuple((g.type, g.variables, g.indices) for g in problem.factors)
    return vars_, facs


class _GroupPlan:
    """Everything static about one variable group: edges, priors, known variables, analysis."""

    def __init__(self, name, kind, count, fixed, edges, priors, linear_solver):
        self.name, self.kind, self.count = name, kind, count
        self.rdim = kind.group.space_dim  # rotations are rdim x rdim matrices
        self.edges = edges  # ((factor group position, i[m], j[m]), ...)
        self.priors = priors  # ((factor group position, index[m]), ...)
        ei = np.concatenate([e[1] for e in edges]) if edges else np.zeros(0, np.int64)
        ej = np.concatenate([e[2] for e in edges]) if edges else np.zeros(0, np.int64)
        pi = np.concatenate([p[1] for p in priors]) if priors else np.zeros(0, np.int64)
        known = np.zeros(count, bool)
        known[list(fixed)] = True
        label = _components(count, ei, ej)
        anchored = np.zeros(count, bool)  # per component label
        anchored[label[known]] = True
        anchored[label[pi]] = True
        # Lowest index of every component (labels are component minima).
        roots = np.nonzero(label == np.arange(count))[0]
        known[roots[~anchored[roots]]] = True
        self.known = known
        self.free_i = (~known[ei]).astype(np.float64)
        self.free_j = (~known[ej]).astype(np.float64)
        self.free_p = (~known[pi]).astype(np.float64)
        self.ei, self.ej, self.pi = ei, ej, pi
        self.structure = linear.analyze(count, self.rdim, ei, ej, method=linear_solver)


class _Plan:
    def __init__(self, groups):
        self.groups = groups
        self.run_jit = entry_point(self._core)

    def run(self, problem, values):
        return self.run_jit(problem, values)

    def _core(self, problem, values):
        out = dict(values)
        for gp in self.groups:
            out[gp.name] = _initialise_group(gp, problem, values[gp.name])
        return out


@lru_cache(maxsize=32)
def _plan(treedef, layout, linear_solver) -> _Plan:
    # ``treedef`` keys the cache on the full problem structure (noise-model classes
    # included); ``layout`` carries the index arrays the plan is built from.
    del treedef
    vars_, facs = layout
    groups = []
    for name, kind, count, fixed in vars_:
        edges, priors = [], []
        for k, (ftype, fvars, idx) in enumerate(facs):
            if fvars[0] != name:
                continue
            a = idx.array
            if isinstance(ftype, Between):
                edges.append((k, a[:, 0], a[:, 1]))
            elif isinstance(ftype, Prior):
                priors.append((k, a[:, 0]))
        if edges or priors:
            groups.append(_GroupPlan(name, kind, count, fixed, tuple(edges), tuple(priors), linear_solver))
    return _Plan(tuple(groups))


def _components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected-component label of every vertex (the smallest vertex index in it).

    Hooking plus pointer jumping, vectorised over edges (a few rounds even on long chains).
    """
    lab = np.arange(n)
    while True:
        m = np.minimum(lab[i], lab[j])
        new = lab.copy()
        np.minimum.at(new, lab[i], m)
        np.minimum.at(new, lab[j], m)
        while True:
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, lab):
            return lab
        lab = new


# ----------------------------------------------------------------------------------
# Numeric part (traced)
# ----------------------------------------------------------------------------------
def _information(group, d: int, dtype) -> jax.Array:
    """Information matrices ``[M, d, d]`` of a factor group (symmetrised, possibly indefinite)."""
    M = group.count
    nz = group.noise
    if nz is None:
        lam = jnp.eye(d, dtype=dtype)
    elif isinstance(nz, N.Information):
        lam = jnp.asarray(nz.matrix, dtype)
        lam = 0.5 * (lam + jnp.swapaxes(lam, -1, -2))
    else:
        W = jnp.asarray(nz.astype(dtype).sqrt_information(d), dtype)
        lam = jnp.swapaxes(W, -1, -2) @ W
    return jnp.broadcast_to(lam, (M, d, d))


def _rotation_group(kind) -> bool:
    """Kinds chordal initialisation handles: SO(n) and SE(n) groups of :mod:`jaxgraph.lie`."""
    return kind.is_group and issubclass(kind.group, (lie.SOBase, lie.SEBase))


def _rigid(kind) -> bool:
    """SE(n): a rotation and a translation (tangent order: translation, then rotation)."""
    return issubclass(kind.group, lie.SEBase)


def _blocks(kind, lam: jax.Array):
    """Rotation and translation blocks of tangent-space information ``[M, d, d]``."""
    if _rigid(kind):
        n = kind.group.space_dim
        return lam[:, n:, n:], lam[:, :n, :n]
    return lam, None


def _positive_matrix(lam: jax.Array) -> jax.Array:
    """``V |w| V^T`` with ``|w|`` floored at 1e-6 of its largest (1e-12 of all edges').

    ``smallmat.eigh``, not ``jnp.linalg.eigh``: the edges' and the priors' blocks are
    decomposed side by side, and two batched LAPACK calls ready at once can deadlock
    XLA:CPU's thread pool (see ``jaxgraph.smallmat``)."""
    w, V = smallmat.eigh(lam)
    a = jnp.abs(w)
    top = jnp.max(a, axis=-1, keepdims=True)
    floor = jnp.maximum(1e-6 * top, 1e-12 * jnp.max(a))
    a = jnp.maximum(a, jnp.where(floor > 0, floor, 1.0))
    return jnp.einsum("mij,mj,mkj->mik", V, a, V)


def _positive_scalar(lam: jax.Array) -> jax.Array:
    """Isotropic weight ``|Λ|_F / sqrt(n)``, floored like :func:`_positive_matrix`."""
    n = lam.shape[-1]
    w = jnp.sqrt(jnp.sum(lam * lam, axis=(-2, -1)) / n)
    floor = 1e-12 * jnp.max(w) if w.size else 0.0
    return jnp.maximum(w, jnp.where(floor > 0, floor, 1.0))


def _initialise_group(gp: _GroupPlan, problem: Problem, P: jax.Array) -> jax.Array:
    dtype = P.dtype
    kind, n, rd = gp.kind, gp.count, gp.rdim
    T0 = kind.to_matrix(P)
    R0 = T0[:, :rd, :rd]
    is_se = _rigid(kind)
    t0 = T0[:, :rd, rd] if is_se else None

    def gather(entries):
        Rs, ts, wr, lt = [], [], [], []
        for entry in entries:
            g = problem.factors[entry[0]]
            Z = kind.to_matrix(jnp.asarray(g.measurement, dtype))
            lam_r, lam_t = _blocks(kind, _information(g, kind.tangent_dim, dtype))
            Rs.append(Z[:, :rd, :rd])
            wr.append(_positive_scalar(lam_r))
            if is_se:
                ts.append(Z[:, :rd, rd])
                lt.append(_positive_matrix(lam_t))
        if not Rs:
            z = jnp.zeros((0, rd, rd), dtype)
            return z, jnp.zeros((0, rd), dtype), jnp.zeros((0,), dtype), z
        cat = jnp.concatenate
        return cat(Rs), (cat(ts) if is_se else None), cat(wr), (cat(lt) if is_se else None)

    Rz, tz, wz, Lz = gather(gp.edges)
    Rp, tp, wp, Lp = gather(gp.priors)
    ei, ej, pi = gp.ei, gp.ej, gp.pi
    fi, fj, fp = (jnp.asarray(f, dtype) for f in (gp.free_i, gp.free_j, gp.free_p))
    known = jnp.asarray(gp.known)
    eye = jnp.eye(rd, dtype=dtype)

    def seg(x, ids):
        return jax.ops.segment_sum(x, jnp.asarray(ids), num_segments=n)

    def system(diag_e_i, diag_e_j, diag_p, off, b_i, b_j, b_p, b_known):
        diag = seg(diag_e_i, ei) + seg(diag_e_j, ej) + seg(diag_p, pi)
        diag = jnp.where(known[:, None, None], eye, diag)
        b = seg(b_i, ei) + seg(b_j, ej) + seg(b_p, pi)
        b = jnp.where(known[:, None, None] if b.ndim == 3 else known[:, None], b_known, b)
        return diag, off, b

    # -- rotations: unknown rows x_i = R_i[r], equations x_j = R_ij^T x_i, x_a = Rp[r]
    def rotation_system(_):
        wI = wz[:, None, None] * eye
        return system(
            wI * fi[:, None, None],
            wI * fj[:, None, None],
            wp[:, None, None] * eye * fp[:, None, None],
            -wz[:, None, None] * Rz * (fi * fj)[:, None, None],
            # b as matrices whose row r is the right-hand side of row-system r
            (wz * fi * (1 - fj))[:, None, None] * (R0[ej] @ jnp.swapaxes(Rz, -1, -2)),
            (wz * fj * (1 - fi))[:, None, None] * (R0[ei] @ Rz),
            (wp * fp)[:, None, None] * Rp,
            R0,
        )

    # -- translations: e = R_i^T (t_j - t_i) - t_ij with information Λ_tt (world frame S)
    def translation_system(R):
        Ri = R[ei]
        S = Ri @ Lz @ jnp.swapaxes(Ri, -1, -2)
        RLt = jnp.einsum("mab,mbc,mc->ma", Ri, Lz, tz)
        Sp = R[pi] @ Lp @ jnp.swapaxes(R[pi], -1, -2)
        diag, off, b = system(
            S * fi[:, None, None],
            S * fj[:, None, None],
            Sp * fp[:, None, None],
            -S * (fi * fj)[:, None, None],
            fi[:, None] * (-RLt + (1 - fj)[:, None] * jnp.einsum("mab,mb->ma", S, t0[ej])),
            fj[:, None] * (RLt + (1 - fi)[:, None] * jnp.einsum("mab,mb->ma", S, t0[ei])),
            fp[:, None] * jnp.einsum("mab,mb->ma", Sp, tp),
            t0,
        )
        # The translation right-hand side rides in row 0 of the rotation stage's [n, rd, rd].
        return diag, off, jnp.zeros((n, rd, rd), dtype).at[:, 0, :].set(b)

    def stage(R, translations):
        # One traced factorisation serves both stages (halves compile time): stage 0
        # solves for the rotation rows, stage 1 for the translations given them.
        if is_se:
            diag, off, B = jax.lax.cond(translations, translation_system, rotation_system, R)
        else:
            diag, off, B = rotation_system(R)
        fac = linear.factor(gp.structure, diag, off)
        X = jnp.swapaxes(linear.solve_factored(gp.structure, fac, jnp.swapaxes(B, 0, 1)), 0, 1)
        R_new = jnp.where(translations, R, jnp.where(known[:, None, None], R0, _project_rotations(X)))
        return R_new, X[:, 0, :]

    if not is_se:
        R, _ = stage(R0, jnp.zeros((), bool))
        return jnp.where(known[:, None], P, kind.from_matrix(R))
    R, (_, t) = jax.lax.scan(stage, R0, jnp.arange(2) == 1)
    t = jnp.where(known[:, None], t0, t)
    T = T0.at[:, :rd, :rd].set(R).at[:, :rd, rd].set(t)
    return jnp.where(known[:, None], P, kind.from_matrix(T))


def _project_rotations(M: jax.Array) -> jax.Array:
    """Nearest rotation (Frobenius) to each ``[n, k, k]`` matrix: ``U diag(1, .., det) V^T``."""
    U, _, Vt = jnp.linalg.svd(M)
    det = jnp.linalg.det(U @ Vt)
    U = U.at[:, :, -1].multiply(jnp.where(det < 0, -1.0, 1.0).astype(M.dtype)[:, None])
    return U @ Vt

