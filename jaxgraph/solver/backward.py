"""Differentiation through the solve: the three ``BackwardConfig.mode`` entry points.

``solve_compiled(problem, values, config)`` is the one jit-compiled entry of the solver; the
configuration's static fields (part of its pytree structure) select the mode and everything
else that shapes the program.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_derivatives import CustomVJPPrimal, SymbolicZero

from .. import linear
from ..runtime.compile_cache import entry_point
from ..graph.problem import Problem, values_dtype
from ._retract_rule import retract_with_partials
from .config import SolverConfig
from .loop import run

__all__ = ["solve_compiled"]


def _is_primal(x):
    return isinstance(x, CustomVJPPrimal)


def _stop(tree):
    return jax.tree_util.tree_map(jax.lax.stop_gradient, tree)


def _is_float(x):
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _implicit_cotangent(problem: Problem, x, vbar, config: SolverConfig, perturbed):
    """Problem cotangent of ``vbar`` (cotangent of the solution ``x``) by the IFT.

    At the solution the tangent gradient ``G(x, theta) = grad_d c(x Exp(d); theta)|_0`` is 0
    for every ``theta``, so ``H dx = -dG/dtheta dtheta`` with ``H`` the derivative of
    ``d -> G(x Exp(d))`` (the Hessian of ``d -> c(x Exp(d))`` wherever ``G(x) = 0``), and the
    cotangent is ``theta_bar = -(dG/dtheta)^T lam`` with ``H^T lam = u`` (``u``: ``vbar``
    pulled back to the tangent space). ``theta`` is the problem leaves the caller
    differentiates (``perturbed[i]`` for leaf ``i``); the others get no cotangent. ``G`` is
    the linearisation's ``J^T W e`` (analytic Jacobians, robust weights included), so both
    products are first derivatives of that code; differentiating the cost twice instead gave
    the same gradients with twice the XLA program (smallGrid3D: ``jit(value_and_grad)``
    compiled in 50 s, 27 s with this change alone).

    One reverse-mode linearisation of ``(d, theta) -> G`` serves everything: its primal is the
    Gauss-Newton system that preconditions CG (factorised once), and its pullback gives
    ``H^T p`` and ``(dG/dtheta)^T p`` together for every CG direction ``p``. Since ``lam`` is
    the sum of ``alpha_k p_k`` over the CG steps and the pullback is linear,
    ``theta_bar = -sum alpha_k (dG/dtheta)^T p_k`` accumulates inside the loop
    (``linear.conjugate_gradient``'s side output): the
    linearisation is traced once and its transpose once (before: a ``jax.linearize`` for the
    CG products, another for the starting residual, and a separate ``jax.vjp`` with its own
    primal for ``theta``; intel's ``jit(value_and_grad)`` had 5780 jaxpr equations, see
    ``benchmarks/backward_compile.py``). The pullback's ``theta`` half costs run time in every
    CG step (1-3 steps as a rule), not compile time.
    """
    dtype = values_dtype(x)
    st = problem.structure
    free = problem.free_mask(dtype)
    zero = jnp.zeros((st.num_blocks, st.block_dim), dtype)
    # the retraction's derivative as a product with its partials (see _retract_rule)
    _, pull = jax.vjp(lambda d: retract_with_partials(problem, x, d), zero)
    (u,) = pull(vbar)
    u = u * free
    leaves, treedef = jax.tree_util.tree_flatten(problem)
    fidx = [i for i, p in enumerate(perturbed) if p]

    def gradient_at(d, float_leaves):
        ls = list(leaves)
        for i, v in zip(fidx, float_leaves):
            ls[i] = v
        prob = jax.tree_util.tree_unflatten(treedef, ls).prepared(dtype)
        lin = prob.linearize(retract_with_partials(problem, x, d))
        return lin.gradient * free, lin

    fl = [leaves[i] for i in fidx]
    _, pull_g, lin = jax.vjp(gradient_at, zero, fl, has_aux=True)

    # Preconditioner: the factorised Gauss-Newton system at the solution.
    lstruct = st.linear_structure(config.linear_solver, config.schur)
    pattern = problem.linear_pattern() if lstruct.dynamic else None
    fac = linear.factor(lstruct, lin.diag, lin.offdiag, pattern=pattern)

    def precond(r):
        return linear.solve_factored(lstruct, fac, r, pattern=pattern) * free

    tol = 1e-12 if dtype == jnp.float64 else 1e-6

    def hessian_and_theta(p):  # (H^T p, (dG/dtheta)^T p) from one pullback; CG sums the second
        hp, fp = pull_g(p)
        return hp * free, fp

    *_, fbar = linear.conjugate_gradient(hessian_and_theta, u, precond, side=True, tolerance=tol,
                                         max_iterations=config.backward.implicit_max_iterations)
    cot = [None] * len(leaves)
    for i, v in zip(fidx, fbar):
        cot[i] = -v
    return jax.tree_util.tree_unflatten(treedef, cot)


def _implicit(problem, values, config):
    # The loop runs outside the custom VJP, on stopped inputs, and the VJP is attached to the
    # solution alone: with the custom VJP around the loop, JAX traced the loop twice under
    # jit(value_and_grad), as the VJP's primal and as its forward pass (intel: 0.17-0.19 s of
    # CPU each, of a 1.1-1.5 s trace).
    out, info = run(_stop(problem), _stop(values), config)
    return _attach_ift(problem, out, config), info


@jax.custom_vjp
def _attach_ift(problem, x, config):
    return x


def _attach_ift_fwd(problem, x, config):
    # symbolic_zeros: the arguments come as CustomVJPPrimal leaves that say which ones the
    # caller differentiates, and the backward pass transposes the linearisation for those
    # alone (a loss of the measurements: no transposed Cholesky factors of the noise models,
    # 5 % fewer equations to trace on intel)
    marks = tuple(() if p.perturbed and _is_float(p.value) else None
                  for p in jax.tree_util.tree_leaves(problem, is_leaf=_is_primal))
    problem, x, config = jax.tree_util.tree_map(lambda p: p.value, (problem, x, config), is_leaf=_is_primal)
    return x, (problem, x, config, marks)


def _attach_ift_bwd(res, xbar):
    problem, x, config, marks = res
    xbar = jax.tree_util.tree_map(lambda c: jnp.zeros(c.shape, c.dtype) if isinstance(c, SymbolicZero) else c,
                                  xbar, is_leaf=lambda c: isinstance(c, SymbolicZero))
    return _implicit_cotangent(problem, x, xbar, config, [m is not None for m in marks]), None, None


_attach_ift.defvjp(_attach_ift_fwd, _attach_ift_bwd, symbolic_zeros=True)


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


# A small program's bound on the work of one iteration besides its unknowns: the residual
# scalars of all factors and the scalars their measurements hold. A problem with a handful
# of unknowns can still carry a heavy residual (one camera pose against every pixel of an
# image rendered from a model of thousands of Gaussians: splat.tracking), whose solve takes
# seconds an iteration: neither one thread nor an unoptimised first program suits it.
SMALL_MAX_RESIDUALS = 8192
SMALL_MAX_MEASUREMENT = 65536


def _small(problem, values, config) -> bool:
    """Whether a solve is a small program (``entry_point``'s ``small``: its kernels in the
    calling thread, a quick first program): at most :data:`jaxgraph.linear.DENSE_MAX_UNKNOWNS`
    scalar unknowns, :data:`SMALL_MAX_RESIDUALS` residual scalars and
    :data:`SMALL_MAX_MEASUREMENT` measurement scalars, where one solve takes milliseconds
    even unoptimised and compiling is nearly all of the first call."""
    kinds = problem.structure.kinds
    if sum(v.count * kinds[v.name].tangent_dim for v in problem.variables) > linear.DENSE_MAX_UNKNOWNS:
        return False
    residuals = sum(g.count * g.type.residual_dim([kinds[v] for v in g.variables])
                    for g in problem.factors)
    measured = sum(int(jnp.size(x)) for g in problem.factors for x in jax.tree_util.tree_leaves(g.measurement))
    return residuals <= SMALL_MAX_RESIDUALS and measured <= SMALL_MAX_MEASUREMENT


# The solver's single compiled entry point: static settings travel in the config's pytree
# structure, so there is no list of static argument names.
solve_compiled = entry_point(_dispatch, executable_cache=True, small=_small, by_identity=True)
