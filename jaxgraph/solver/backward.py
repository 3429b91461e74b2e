"""Differentiation through the solve: the three ``BackwardConfig.mode`` entry points.

``solve_compiled(problem, values, config)`` is the one jit-compiled entry of the solver; the
configuration's static fields (part of its pytree structure) select the mode and everything
else that shapes the program.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import linear
from ..runtime.compile_cache import entry_point
from ..graph.problem import Problem, values_dtype
from .config import SolverConfig
from .loop import run

__all__ = ["solve_compiled"]


def _stop(tree):
    return jax.tree_util.tree_map(jax.lax.stop_gradient, tree)


def _is_float(x):
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _zero_cotangent(tree):
    return jax.tree_util.tree_map(
        lambda x: jnp.zeros(jnp.shape(x), jnp.result_type(x)) if _is_float(x) else np.zeros(jnp.shape(x), jax.dtypes.float0),
        tree,
    )


def _implicit_cotangent(problem: Problem, x, vbar, config: SolverConfig):
    """Problem cotangent of ``vbar`` (cotangent of the solution ``x``) by the IFT.

    At the solution the tangent gradient ``G(x, theta) = grad_d c(x Exp(d); theta)|_0`` is 0,
    so ``dx = -H^-1 dG/dtheta dtheta`` with ``H`` the Hessian of ``d -> c(x Exp(d))`` at 0.
    ``G`` is the linearisation's ``J^T W e`` (analytic Jacobians, robust weights included), so
    ``H v`` and ``dG/dtheta`` are first derivatives of that code; ``H`` is the derivative of
    ``d -> G(x Exp(d))``, which equals the Hessian above wherever ``G(x) = 0``. Differentiating
    the cost twice instead gave the same gradients with twice the XLA program (smallGrid3D:
    ``jit(value_and_grad)`` compiled in 50 s, 27 s with this change alone).
    """
    dtype = values_dtype(x)
    st = problem.structure
    free = problem.free_mask(dtype)
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
        return prob.prepared(dtype).linearize(prob.retract(x, d)).gradient * free

    fl = [leaves[i] for i in fidx]
    prepared = problem.prepared(dtype)  # once, not in every CG iteration

    def gradient_at(d):
        lin = prepared.linearize(prepared.retract(x, d))
        return lin.gradient * free, lin

    # jax.linearize: one evaluation of the linearisation at the solution gives the CG loop its
    # tangent map and the preconditioner its Gauss-Newton system (a jvp in the loop plus a
    # separate linearisation for the preconditioner: smallGrid3D's jit(value_and_grad) had
    # 9 % more HLO and 39 more dots; XLA hoisted the loop-invariant part either way, so the
    # run time is the same).
    _, hvp, lin = jax.linearize(gradient_at, zero, has_aux=True)

    # Preconditioner: the factorised Gauss-Newton system at the solution.
    lstruct = st.linear_structure(config.linear_solver, config.schur)
    pattern = problem.linear_pattern() if lstruct.dynamic else None
    fac = linear.factor(lstruct, lin.diag, lin.offdiag, pattern=pattern)

    def precond(r):
        return linear.solve_factored(lstruct, fac, r, pattern=pattern) * free

    tol = 1e-12 if dtype == jnp.float64 else 1e-6
    lam, _, _ = linear.conjugate_gradient(hvp, u, precond, x0=precond(u), tolerance=tol,
                                          max_iterations=config.backward.implicit_max_iterations)
    _, pull_theta = jax.vjp(lambda f: tangent_gradient(f, zero), fl)
    (fbar,) = pull_theta(-lam)
    cot = list(_zero_cotangent(leaves))
    for i, v in zip(fidx, fbar):
        cot[i] = v
    return jax.tree_util.tree_unflatten(treedef, cot)


@jax.custom_vjp
def _implicit(problem, values, config):
    return run(problem, values, config)


def _implicit_fwd(problem, values, config):
    out, info = run(problem, values, config)
    return (out, info), (problem, out, values, config)


def _implicit_bwd(res, cts):
    problem, out, values, config = res
    pbar = _implicit_cotangent(problem, out, cts[0], config)
    return pbar, _zero_cotangent(values), _zero_cotangent(config)


_implicit.defvjp(_implicit_fwd, _implicit_bwd)


def _truncated(problem, values, config: SolverConfig):
    k = config.backward.truncated_iterations
    n = config.termination.max_iterations
    head = config.replace(max_iterations=n - k, backward="implicit")
    mid, info1 = run(_stop(problem), _stop(values), _stop(head))
    # The last k trials: undamped Gauss-Newton steps from the point reached, never stopping
    # early, so their derivative converges geometrically to the implicit one.
    tail = config.replace(method="gn", max_iterations=k, backward="unroll")
    out, info2 = run(problem, _stop(mid), tail, unrolled=True, stop=False)
    cat = lambda a, b: jnp.concatenate([a, b])  # noqa: E731
    info = info2._replace(
        initial_cost=info1.initial_cost,
        status=info1.status,
        converged=info1.converged & jnp.isfinite(info2.cost),
        iterations=info1.iterations + info2.iterations,
        accepted_steps=info1.accepted_steps + info2.accepted_steps,
        linear_clamped=info1.linear_clamped + info2.linear_clamped,
        history_cost=cat(info1.history_cost, info2.history_cost),
        history_damping=cat(info1.history_damping, info2.history_damping),
        history_step_norm=cat(info1.history_step_norm, info2.history_step_norm),
        history_accepted=cat(info1.history_accepted, info2.history_accepted),
        history_mask=cat(info1.history_mask, info2.history_mask),
    )
    return out, info


def _dispatch(problem, values, config: SolverConfig):
    mode = config.backward.mode
    if mode == "implicit":
        return _implicit(problem, values, config)
    if mode == "unroll":
        return run(problem, values, config, unrolled=True)
    return _truncated(problem, values, config)


# The solver's single compiled entry point: static settings travel in the config's pytree
# structure, so there is no list of static argument names.
solve_compiled = entry_point(_dispatch, executable_cache=True)
