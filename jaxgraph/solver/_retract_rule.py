"""The retraction at the solution, ``d -> problem.retract(x, d)``, with its derivative in ``d``
as one contraction with precomputed partials.

The implicit backward differentiates the retraction at the solution twice (the values'
cotangent pulled back to the tangent space, and every CG step's ``H^T p`` through
``gradient_at``). Plain reverse mode transposes each kind's ``Exp``, group product and
normalisation (for SE(3): the quaternion exponential, product and norm), which XLA compiled
into about 55 kernels on smallGrid3D. Here the derivative is ``sum_k P_k dd_k`` with
``P_k = d retract / d d_k`` (one forward-mode pass per tangent component, all variables of a
group at once, computed once per backward), so the transpose is one product per variable
group. It is exact at every ``d`` (the partials are taken at the primal ``d``), not only at 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..graph.problem import Problem

__all__ = ["retract_with_partials"]


def _directions(problem: Problem, dtype):
    """``D[K, num_blocks, block_dim]``: direction ``k`` is tangent component ``k`` of every
    variable that has one (``K``: the largest tangent size), so that one JVP along it gives
    the partial derivative of every variable's parameters by its own component ``k``."""
    st = problem.structure
    K = max(st.kinds[v.name].tangent_dim for v in problem.variables)
    D = np.zeros((K, st.num_blocks, st.block_dim))
    for v in problem.variables:
        t, o, b = st.kinds[v.name].tangent_dim, st.offsets[v.name], st.blocks_per[v.name]
        for k in range(t):
            rows = o + np.arange(v.count) * b + k // st.block_dim
            D[k, rows, k % st.block_dim] = 1.0
    return jnp.asarray(D, dtype)


def retract_with_partials(problem: Problem, x: dict, d):
    """``problem.retract(x, d)`` (``d[num_blocks, block_dim]``, ``x`` the values dict; same
    values, same derivative in ``d``, up to rounding); ``x`` is held constant (its tangent is
    not propagated: callers differentiate in ``d`` alone)."""
    st = problem.structure
    x = jax.lax.stop_gradient(x)

    # problem and x are arguments, not closures: under vmap, scan or jvp their leaves are
    # tracers that a custom_jvp may not close over. The retraction does not depend on the
    # problem's float leaves, and x is held constant: their tangents are dropped.
    @jax.custom_jvp
    def retract(problem, x, d):
        return problem.retract(x, d)

    @retract.defjvp
    def retract_jvp(primals, tangents):
        (problem, x, d), (_, _, dd) = primals, tangents
        D = _directions(problem, d.dtype)
        plain = lambda d: problem.retract(x, d)  # noqa: E731  (not the rule: no recursion)
        out, P = jax.vmap(lambda e: jax.jvp(plain, (d,), (e,)), out_axes=(None, 0))(D)
        tangent = {}
        for v in problem.variables:
            t, o, b = st.kinds[v.name].tangent_dim, st.offsets[v.name], st.blocks_per[v.name]
            step = dd[o : o + v.count * b].reshape(v.count, t).astype(out[v.name].dtype)
            acc = P[v.name][0] * step[:, 0:1]
            for k in range(1, t):
                acc = acc + P[v.name][k] * step[:, k : k + 1]
            tangent[v.name] = acc
        return out, tangent

    return retract(problem, x, d)
