"""Nonlinear least squares on factor graphs: Levenberg-Marquardt and Gauss-Newton.

``values, info = solve(problem, initial_values, ...)`` runs the whole optimisation as one
jit-compiled ``lax.while_loop``. Each loop trip solves the damped normal equations
``(H + lambda D) dx = -g`` with :mod:`jaxgraph.linear`, retracts ``X <- X Exp(dx)`` and
linearises at the candidate (the cost comes with it, so a trial costs one linearisation
and one linear solve). Steps are accepted on model fidelity like GTSAM's LM; see
``docs/solver.md`` for the exact rules and the status codes.
"""

from __future__ import annotations

from functools import lru_cache, partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .graph.problem import Problem, _dtype_of

__all__ = ["solve", "SolveInfo", "STATUS", "LINEAR_SOLVERS", "METHODS", "BACKWARD"]

METHODS = ("lm", "gn")
BACKWARD = ("implicit", "unroll", "truncated")
LINEAR_SOLVERS = ("auto", "cholesky", "dense", "pcg")

# Status codes in ``info.status``.
STATUS = {
    0: "running (max_iterations reached)",
    1: "converged: relative or absolute cost decrease below tolerance",
    2: "converged: gradient norm below gradient_tolerance",
    3: "converged: step norm below step_tolerance",
    4: "converged: no decrease possible even at maximum damping (local minimum to working precision)",
    5: "stopped: Gauss-Newton step increased the cost (values of that step returned, like GTSAM)",
    6: "stopped: non-finite cost or step",
}


class SolveInfo(NamedTuple):
    """Solver report (a pytree of arrays; under ``vmap`` every field gains the batch axis).

    Attributes:
      cost: final cost ``sum rho(|W r|)`` (``0.5 |W r|^2`` per factor without robust loss).
      initial_cost: cost at the initial values.
      iterations: loop trips = linear solves (accepted and rejected LM trials).
      accepted_steps: number of accepted steps.
      converged: True for status 1-4.
      status: int code, see ``jaxgraph.solvers.STATUS``.
      damping: final LM damping ``lambda``.
      gradient_norm: max-abs gradient ``J^T W e`` at the returned values.
      history_cost / history_damping / history_step_norm / history_accepted: ``[max_iterations]``,
        the cost after trial k (the current cost, i.e. unchanged if rejected), the damping
        used by trial k, the step norm ``|dx|_2`` of trial k and whether it was accepted.
      history_mask: ``[max_iterations]`` True for trials that ran.
    """

    cost: jax.Array
    initial_cost: jax.Array
    iterations: jax.Array
    accepted_steps: jax.Array
    converged: jax.Array
    status: jax.Array
    damping: jax.Array
    gradient_norm: jax.Array
    history_cost: jax.Array
    history_damping: jax.Array
    history_step_norm: jax.Array
    history_accepted: jax.Array
    history_mask: jax.Array


# ----------------------------------------------------------------------------------
# Linear solver dispatch
# ----------------------------------------------------------------------------------
def _linear_module():
    try:
        from . import linear
    except ImportError:  # pragma: no cover - the package ships jaxgraph.linear
        return None
    return linear if hasattr(linear, "analyze") and hasattr(linear, "solve") else None


def _analyze(structure, method: str):
    """Symbolic analysis, once per problem structure and method (numpy, not traced)."""
    lin = _linear_module()
    if lin is None:
        return ("fallback-dense", None)
    return (
        "linear",
        lin.analyze(
            structure.num_blocks,
            structure.block_dim,
            structure.off_rows,
            structure.off_cols,
            method=method,
        ),
    )


def _fallback_dense_solve(structure, diag, off, rhs):
    # Used only while jaxgraph.linear is unavailable (development); small problems only.
    n, d = structure.num_blocks, structure.block_dim
    H = jnp.zeros((n, d, n, d), diag.dtype)
    ar = jnp.arange(n)
    H = H.at[ar, :, ar, :].add(diag)
    r, c = jnp.asarray(structure.off_rows), jnp.asarray(structure.off_cols)
    H = H.at[r, :, c, :].add(off)
    H = H.at[c, :, r, :].add(jnp.swapaxes(off, -1, -2))
    H = H.reshape(n * d, n * d)
    L = jnp.linalg.cholesky(H)
    x = jax.scipy.linalg.cho_solve((L, True), rhs.reshape(-1))
    return x.reshape(n, d)


def _linear_solve(structure, method, diag, off, rhs):
    kind, lstruct = structure.linear_structure(method)
    if kind == "fallback-dense":
        return _fallback_dense_solve(structure, diag, off, rhs)
    return _linear_module().solve(lstruct, diag, off, rhs)


# ----------------------------------------------------------------------------------
# The solver
# ----------------------------------------------------------------------------------
def solve(
    problem: Problem,
    initial_values: dict,
    *,
    method: str = "lm",
    linear_solver: str = "auto",
    max_iterations: int = 100,
    tolerance: float = 1e-5,
    absolute_tolerance: float | None = None,
    gradient_tolerance: float = 0.0,
    step_tolerance: float = 0.0,
    initial_damping: float = 1e-5,
    damping_factor: float = 10.0,
    max_damping: float = 1e5,
    min_damping: float = 0.0,
    diagonal_damping: bool = False,
    min_model_fidelity: float = 1e-3,
    callback: Callable | None = None,
    backward: str = "implicit",
    backward_iterations: int = 10,
    implicit_max_iterations: int = 50,
):
    """Minimise the problem's cost from ``initial_values``.

    Args:
      problem: a :class:`jaxgraph.Problem` (e.g. from :func:`jaxgraph.io.read_g2o`).
      initial_values: dict ``group name -> [count, param_dim]`` float array; its dtype
        (float32 or float64) is the dtype of the whole solve.
      method: ``"lm"`` (Levenberg-Marquardt, adaptive damping) or ``"gn"`` (Gauss-Newton).
      linear_solver: ``"auto" | "cholesky" | "dense" | "pcg"``, passed to
        :func:`jaxgraph.linear.analyze` as its ``method``.
      max_iterations: loop trips (linear solves), accepted or not; static.
      tolerance: stop when ``(cost - new_cost) <= tolerance * cost`` after a step.
      absolute_tolerance: stop when ``cost - new_cost <= absolute_tolerance``; ``None``
        (default) uses ``tolerance`` (GTSAM's defaults are both 1e-5), so ``tolerance=0.0``
        disables both cost criteria.
      gradient_tolerance: stop when ``max |J^T W e| <= gradient_tolerance``.
      step_tolerance: stop when an accepted step has ``|dx|_2 <= step_tolerance``.
      initial_damping, damping_factor, max_damping, min_damping: LM damping ``lambda``
        (GTSAM defaults: 1e-5, 10, 1e5, 0); divided by ``damping_factor`` after an accepted
        step, multiplied after a rejected one; the solve stops when it reaches ``max_damping``.
      diagonal_damping: damp with ``lambda * diag(H)`` (clamped to >= 1e-6) instead of
        ``lambda * I``; static.
      min_model_fidelity: an LM step is accepted when actual / predicted decrease exceeds it.
      callback: optional ``callback(iteration, cost, damping, step_norm, accepted)`` called
        from inside the compiled loop via ``jax.debug.callback`` after every trial; static
        (keep the same function object to avoid recompiling).
      backward: how reverse-mode derivatives (``jax.grad``/``jax.vjp``) of the returned values
        with respect to the problem's float leaves are computed:
        ``"implicit"`` (default): implicit function theorem at the returned point, one linear
        solve with the exact Hessian of the cost in the tangent space (matrix-free
        Hessian-vector products, preconditioned by the Gauss-Newton system's factorisation),
        memory independent of the iterations; the initial values get zero gradient.
        ``"unroll"``: differentiate through the iterations as run (a fixed-length scan of
        ``max_iterations`` trials; with ``tolerance=0.0`` none stops early).
        ``"truncated"``: run ``max_iterations - backward_iterations`` trials without
        gradient, then differentiate through ``backward_iterations`` undamped Gauss-Newton
        steps from the point reached (their derivative approaches the implicit one
        geometrically; status and convergence are those of the first part).
        Forward-mode (``jax.jvp``) works with ``"unroll"`` and ``"truncated"``.
      backward_iterations: trials differentiated by ``backward="truncated"``; static.
      implicit_max_iterations: preconditioned-CG iterations allowed for the implicit
        backward solve (it usually needs 1-3); static.

    Returns:
      ``(values, info)``: optimised values (same structure and dtype as
      ``initial_values``) and a :class:`SolveInfo`.

    ``jax.jit``, ``jax.vmap`` (over problems sharing a structure; each problem stops
    changing once it has converged) and repeated calls without retracing are supported.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if linear_solver not in LINEAR_SOLVERS:
        raise ValueError(f"linear_solver must be one of {LINEAR_SOLVERS}, got {linear_solver!r}")
    if int(max_iterations) != max_iterations or max_iterations < 1:
        raise ValueError(f"max_iterations must be a positive integer, got {max_iterations}")
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a jaxgraph.Problem, got {type(problem).__name__}")
    problem.check_values(initial_values)
    dtype = _dtype_of(initial_values)
    values = {k: jnp.asarray(v, dtype) for k, v in initial_values.items()}
    opts = {
        "tolerance": tolerance,
        "absolute_tolerance": tolerance if absolute_tolerance is None else absolute_tolerance,
        "gradient_tolerance": gradient_tolerance,
        "step_tolerance": step_tolerance,
        "initial_damping": initial_damping,
        "damping_factor": damping_factor,
        "max_damping": max_damping,
        "min_damping": min_damping,
        "min_model_fidelity": min_model_fidelity,
    }
    opts = {k: jnp.asarray(v, dtype) for k, v in opts.items()}
    if backward not in BACKWARD:
        raise ValueError(f"backward must be one of {BACKWARD}, got {backward!r}")
    static = dict(
        method=method,
        linear_solver=linear_solver,
        max_iterations=int(max_iterations),
        diagonal_damping=bool(diagonal_damping),
        callback=callback,
    )
    if backward == "implicit":
        return _implicit_jit(problem, values, opts, implicit_max_iterations=int(implicit_max_iterations), **static)
    if backward == "unroll":
        return _solve_jit(problem, values, opts, unrolled=True, **static)
    k = int(backward_iterations)
    if not 1 <= k < max_iterations:
        raise ValueError(
            f"backward_iterations must be in [1, max_iterations) = [1, {max_iterations}), got {backward_iterations}"
        )
    return _truncated_jit(problem, values, opts, backward_iterations=k, **static)


class _State(NamedTuple):
    values: dict  # accepted values
    lin: object  # linearisation at the accepted values
    cand: dict  # candidate values of the pending trial
    gdx: jax.Array  # g . dx of the pending trial
    ddx: jax.Array  # lambda * dx^T D dx of the pending trial
    step_norm: jax.Array
    lam_used: jax.Array
    lam: jax.Array
    initial_cost: jax.Array
    it: jax.Array
    accepted_steps: jax.Array
    status: jax.Array
    running: jax.Array
    first: jax.Array
    h_cost: jax.Array
    h_lam: jax.Array
    h_step: jax.Array
    h_acc: jax.Array
    h_mask: jax.Array


def _select(pred, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


def _solve_core(problem, values, opts, *, method, linear_solver, max_iterations, diagonal_damping, callback, unrolled=False, stop=True):
    # Loop layout: every trip linearises at the pending candidate (trip 0: at the initial
    # values), accepts or rejects it, then solves for the next candidate. Linearisation and
    # linear solve are each traced once, which halves compile time against the obvious
    # layout that also linearises before the loop.
    dtype = _dtype_of(values)
    p = problem.prepared(dtype)
    st = p.structure
    st.linear_structure(linear_solver)  # analysis happens here, at trace time, once per structure
    d = st.block_dim
    free = jnp.asarray(st.free_blocks, dtype)[:, None]
    eye = jnp.eye(d, dtype=dtype)
    lm = method == "lm"
    zero = jnp.zeros((), dtype)

    def next_step(values, lin, lam):
        if lm:
            if diagonal_damping:
                dvec = jnp.maximum(jnp.diagonal(lin.diag, axis1=-2, axis2=-1), 1e-6)
            else:
                dvec = jnp.ones((st.num_blocks, d), dtype)
            A = lin.diag + (lam * dvec)[:, :, None] * eye
        else:
            dvec = jnp.zeros((st.num_blocks, d), dtype)
            A = lin.diag
        dx = _linear_solve(st, linear_solver, A, lin.offdiag, -lin.gradient) * free
        cand = p.retract(values, dx)
        gdx = jnp.sum(lin.gradient * dx)
        ddx = jnp.sum(dvec * dx * dx) * lam
        return cand, gdx, ddx, jnp.sqrt(jnp.sum(dx * dx))

    zeros = jnp.zeros((max_iterations,), dtype)
    lin_shape = jax.eval_shape(p.linearize, values)
    s0 = _State(
        values=values,
        lin=jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), lin_shape),
        cand=values,
        gdx=zero,
        ddx=zero,
        step_norm=zero,
        lam_used=zero,
        initial_cost=zero,
        lam=opts["initial_damping"] if lm else zero,
        it=jnp.zeros((), jnp.int32),
        accepted_steps=jnp.zeros((), jnp.int32),
        status=jnp.zeros((), jnp.int32),
        running=jnp.ones((), bool),
        first=jnp.ones((), bool),
        h_cost=zeros,
        h_lam=zeros,
        h_step=zeros,
        h_acc=jnp.zeros((max_iterations,), bool),
        h_mask=jnp.zeros((max_iterations,), bool),
    )

    def cond(s):
        return s.running

    def body(s):
        lin_c = p.linearize(s.cand)
        lin = s.lin
        # Predicted decrease of the undamped quadratic model, using (H + lam D) dx = -g.
        predicted = 0.5 * (s.ddx - s.gdx)
        actual = lin.cost - lin_c.cost
        finite = jnp.isfinite(lin_c.cost)
        if lm:
            ok = finite & (predicted > 0) & (actual > opts["min_model_fidelity"] * predicted)
            lam = jnp.where(
                ok,
                jnp.maximum(s.lam / opts["damping_factor"], opts["min_damping"]),
                s.lam * opts["damping_factor"],
            )
        else:
            ok = finite
            lam = s.lam
        accept = s.first | ok
        lam = jnp.where(s.first, s.lam, lam)
        new_values = _select(accept, s.cand, s.values)
        new_lin = _select(accept, lin_c, lin)
        gnorm = jnp.max(jnp.abs(new_lin.gradient))
        trial = ~s.first
        conv_cost = trial & ok & (
            (actual <= opts["tolerance"] * lin.cost) | (actual <= opts["absolute_tolerance"])
        )
        conv_cost = conv_cost | (new_lin.cost <= 0)
        conv_grad = gnorm <= opts["gradient_tolerance"]
        conv_step = trial & ok & (s.step_norm <= opts["step_tolerance"])
        limit = trial & (~ok) & (lam >= opts["max_damping"]) if lm else jnp.zeros((), bool)
        increased = trial & ok & (actual < 0) if not lm else jnp.zeros((), bool)
        bad = trial & (~finite) if not lm else jnp.zeros((), bool)
        status = jnp.select(
            [bad, increased, conv_cost, conv_grad, conv_step, limit], [6, 5, 1, 2, 3, 4], 0
        ).astype(jnp.int32)
        if not stop:  # fixed number of trials (truncated backward); only non-finite steps are refused
            status = jnp.zeros((), jnp.int32)
        it = s.it + trial.astype(jnp.int32)
        running = (status == 0) & (it < max_iterations)
        k = jnp.maximum(s.it, 0)
        if callback is not None:
            jax.debug.callback(
                lambda *a: None if bool(a[0]) else callback(*a[1:]),
                s.first, s.it, new_lin.cost, s.lam_used, s.step_norm, ok,
            )

        def step(_):
            return next_step(new_values, new_lin, lam)

        def no_step(_):
            return s.cand, zero, zero, zero

        cand, gdx, ddx, step_norm = jax.lax.cond(running, step, no_step, None)

        def record(h, x):
            return jnp.where(trial, h.at[k].set(x), h)

        return _State(
            values=new_values,
            lin=new_lin,
            cand=cand,
            gdx=gdx,
            ddx=ddx,
            step_norm=step_norm,
            lam_used=lam,
            lam=lam,
            initial_cost=jnp.where(s.first, lin_c.cost, s.initial_cost),
            it=it,
            accepted_steps=s.accepted_steps + (trial & ok).astype(jnp.int32),
            status=status,
            running=running,
            first=jnp.zeros((), bool),
            h_cost=record(s.h_cost, new_lin.cost),
            h_lam=record(s.h_lam, s.lam_used),
            h_step=record(s.h_step, s.step_norm),
            h_acc=record(s.h_acc, ok),
            h_mask=record(s.h_mask, True),
        )

    if unrolled:
        # Fixed trip count (differentiable in reverse mode); a stopped state is carried
        # through unchanged, so the result equals the while-loop's.
        def scan_body(s, _):
            return _select(s.running, body(s), s), None

        s, _ = jax.lax.scan(scan_body, s0, None, length=max_iterations + 1)
    else:
        s = jax.lax.while_loop(cond, body, s0)
    info = SolveInfo(
        cost=s.lin.cost,
        initial_cost=s.initial_cost,
        iterations=s.it,
        accepted_steps=s.accepted_steps,
        converged=(s.status >= 1) & (s.status <= 4),
        status=s.status,
        damping=s.lam,
        gradient_norm=jnp.max(jnp.abs(s.lin.gradient)),
        history_cost=s.h_cost,
        history_damping=s.h_lam,
        history_step_norm=s.h_step,
        history_accepted=s.h_acc,
        history_mask=s.h_mask,
    )
    return s.values, info


_STATIC = ("method", "linear_solver", "max_iterations", "diagonal_damping", "callback")
_solve_jit = jax.jit(_solve_core, static_argnames=_STATIC + ("unrolled",))


# ----------------------------------------------------------------------------------
# Differentiation through the solve (see ``backward`` in ``solve``)
# ----------------------------------------------------------------------------------
def _stop(tree):
    return jax.tree_util.tree_map(jax.lax.stop_gradient, tree)


def _is_float(x):
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _zero_cotangent(tree):
    return jax.tree_util.tree_map(
        lambda x: jnp.zeros(jnp.shape(x), jnp.result_type(x)) if _is_float(x) else np.zeros(jnp.shape(x), jax.dtypes.float0),
        tree,
    )


def _total_cost(prepared, values):
    total = jnp.zeros((), _dtype_of(values))
    for k in range(len(prepared.factors)):
        total = total + jnp.sum(prepared._group_terms(k, values, False)[3])
    return total


def _pcg(A, b, M, tol, maxit):
    """Preconditioned CG for the symmetric system A x = b, started at M b."""
    x = M(b)
    r = b - A(x)
    z = M(r)
    bn = jnp.sqrt(jnp.sum(b * b))

    def cond(c):
        x, r, z, p, rz, k = c
        return (k < maxit) & (jnp.sqrt(jnp.sum(r * r)) > tol * bn)

    def body(c):
        x, r, z, p, rz, k = c
        Ap = A(p)
        pAp = jnp.sum(p * Ap)
        alpha = jnp.where(pAp > 0, rz / jnp.where(pAp > 0, pAp, 1), 0)
        x = x + alpha * p
        r = r - alpha * Ap
        z = M(r)
        rz_new = jnp.sum(r * z)
        beta = jnp.where(rz > 0, rz_new / jnp.where(rz > 0, rz, 1), 0)
        return x, r, z, z + beta * p, rz_new, k + 1

    rz = jnp.sum(r * z)
    x, *_ = jax.lax.while_loop(cond, body, (x, r, z, z, rz, jnp.zeros((), jnp.int32)))
    return x


def _implicit_cotangent(problem, x, vbar, linear_solver, maxit):
    """Problem cotangent of ``vbar`` (cotangent of the solution ``x``) by the IFT.

    At the solution the tangent gradient ``G(x, theta) = grad_d c(x Exp(d); theta)|_0`` is 0,
    so ``dx = -H^-1 dG/dtheta dtheta`` with ``H`` the Hessian of ``d -> c(x Exp(d))`` at 0.
    """
    dtype = _dtype_of(x)
    st = problem.structure
    free = jnp.asarray(st.free_blocks, dtype)[:, None]
    zero = jnp.zeros((st.num_blocks, st.block_dim), dtype)
    _, pull = jax.vjp(lambda d: problem.retract(x, d), zero)
    (u,) = pull(vbar)
    u = u * free
    leaves, treedef = jax.tree_util.tree_flatten(problem)
    fidx = [i for i, leaf in enumerate(leaves) if _is_float(leaf)]

    def tangent_gradient(float_leaves, d):
        ls = list(leaves)
        for i, v in zip(fidx, float_leaves):
            ls[i] = v
        prob = jax.tree_util.tree_unflatten(treedef, ls)
        prepared = prob.prepared(dtype)
        return jax.grad(lambda dd: _total_cost(prepared, prob.retract(x, dd)))(d) * free

    fl = [leaves[i] for i in fidx]

    def hvp(w):
        return jax.jvp(lambda d: tangent_gradient(fl, d), (zero,), (w,))[1] * free

    lin = problem.prepared(dtype).linearize(x)
    lin_mod = _linear_module()
    kind, lstruct = st.linear_structure(linear_solver)
    if kind == "linear":
        fac = lin_mod.factor(lstruct, lin.diag, lin.offdiag)

        def precond(r):
            return lin_mod.solve_factored(lstruct, fac, r) * free
    else:

        def precond(r):
            return _linear_solve(st, linear_solver, lin.diag, lin.offdiag, r) * free

    tol = 1e-12 if dtype == jnp.float64 else 1e-6
    lam = _pcg(hvp, u, precond, tol, maxit)
    _, pull_theta = jax.vjp(lambda f: tangent_gradient(f, zero), fl)
    (fbar,) = pull_theta(-lam)
    cot = list(_zero_cotangent(leaves))
    for i, v in zip(fidx, fbar):
        cot[i] = v
    return jax.tree_util.tree_unflatten(treedef, cot)


@lru_cache(maxsize=None)
def _implicit_fn(method, linear_solver, max_iterations, diagonal_damping, callback, implicit_max_iterations):
    core = partial(
        _solve_core,
        method=method,
        linear_solver=linear_solver,
        max_iterations=max_iterations,
        diagonal_damping=diagonal_damping,
        callback=callback,
    )

    @jax.custom_vjp
    def f(problem, values, opts):
        return core(problem, values, opts)

    def fwd(problem, values, opts):
        out, info = core(problem, values, opts)
        return (out, info), (problem, out, values, opts)

    def bwd(res, cts):
        problem, out, values, opts = res
        pbar = _implicit_cotangent(problem, out, cts[0], linear_solver, implicit_max_iterations)
        return pbar, _zero_cotangent(values), _zero_cotangent(opts)

    f.defvjp(fwd, bwd)
    return f


@partial(jax.jit, static_argnames=_STATIC + ("implicit_max_iterations",))
def _implicit_jit(problem, values, opts, *, method, linear_solver, max_iterations, diagonal_damping, callback, implicit_max_iterations):
    f = _implicit_fn(method, linear_solver, max_iterations, diagonal_damping, callback, implicit_max_iterations)
    return f(problem, values, opts)


@partial(jax.jit, static_argnames=_STATIC + ("backward_iterations",))
def _truncated_jit(problem, values, opts, *, method, linear_solver, max_iterations, diagonal_damping, callback, backward_iterations):
    k = backward_iterations
    common = dict(linear_solver=linear_solver, diagonal_damping=diagonal_damping, callback=callback)
    mid, info1 = _solve_core(
        _stop(problem), _stop(values), _stop(opts), method=method, max_iterations=max_iterations - k, **common
    )
    # The last k trials: undamped Gauss-Newton steps from the point reached, never stopping
    # early, so their derivative converges geometrically to the implicit one.
    out, info2 = _solve_core(problem, _stop(mid), opts, method="gn", max_iterations=k, unrolled=True, stop=False, **common)
    cat = lambda a, b: jnp.concatenate([a, b])  # noqa: E731
    info = info2._replace(
        initial_cost=info1.initial_cost,
        status=info1.status,
        converged=info1.converged,
        iterations=info1.iterations + info2.iterations,
        accepted_steps=info1.accepted_steps + info2.accepted_steps,
        history_cost=cat(info1.history_cost, info2.history_cost),
        history_damping=cat(info1.history_damping, info2.history_damping),
        history_step_norm=cat(info1.history_step_norm, info2.history_step_norm),
        history_accepted=cat(info1.history_accepted, info2.history_accepted),
        history_mask=cat(info1.history_mask, info2.history_mask),
    )
    return out, info
