"""Run a traced function with its LAPACK-backed linear-algebra calls chained one after another.

Why: jaxlib's batched LAPACK kernels on CPU (``trsm``, ``potrf``, ...) split a batch into
chunks on XLA:CPU's intra-op thread pool and *block* their pool thread until the chunks
are done. When two such kernels are ready at the same time on a 2-thread pool, each holds
one thread and waits for chunks queued behind the other: the program never finishes, at
0 % CPU (docs/linear.md). ``jaxgraph.linear.selected_inverse`` computes, in each step of its
Takahashi recurrence, ``L11^-1`` and ``L21 L11^-T`` by two triangular solves that depend only
on the factor, so XLA may start both together; GNC's flip scores hit exactly that
(gdb: both pool threads in ``lapack_dtrsm_ffi`` -> ``ParallelBatchMap`` -> ``BlockingCounter::Wait``
inside the ``lax.cond`` of the TLS polishing; ``jaxgraph solve`` on intel's first 300 poses
with ``--gnc tls`` hung in 2 of 2 runs on a loaded 2-core machine).

:func:`chained` re-emits the function's jaxpr equation by equation and makes every such
call read the previous one's result (``a + 0 * finite(prev[0])``, which XLA keeps for
floating point), in every sub-jaxpr too (``scan`` bodies, ``cond`` branches, ``jit``). The
values are unchanged (the added term is exactly 0); only the order is forced, so at most
one blocking kernel per scope is in flight. Two calls in different scopes that XLA could
still overlap (two independent ``scan`` loops, say) are not chained; ``selected_inverse``'s
tiers already depend on one another by data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jcore

__all__ = ["chained"]

# Primitives whose CPU lowering is a jaxlib LAPACK kernel that may block a pool thread.
_BLOCKING = {
    lax.linalg.triangular_solve_p,
    lax.linalg.cholesky_p,
    lax.linalg.eigh_p,
    lax.linalg.lu_p,
    lax.linalg.qr_p,
    lax.linalg.svd_p,
}


def _after(x, prev):
    """``x`` made to depend (by data, exactly unchanged) on array ``prev``."""
    if prev is None or not jnp.issubdtype(x.dtype, jnp.inexact) or prev.size == 0:
        return x
    s = jnp.ravel(prev)[0]
    s = jnp.where(jnp.isfinite(s), s, jnp.zeros((), s.dtype))
    return x + (0 * s).astype(x.dtype)


def _closed_jaxprs(params):
    for v in params.values():
        if isinstance(v, jcore.ClosedJaxpr):
            yield v
        elif isinstance(v, tuple):
            yield from (b for b in v if isinstance(b, jcore.ClosedJaxpr))


def _blocks(jaxpr) -> bool:
    """Whether ``jaxpr`` (a Jaxpr) calls a blocking kernel, at any depth."""
    return any(e.primitive in _BLOCKING or any(_blocks(c.jaxpr) for c in _closed_jaxprs(e.params))
               for e in jaxpr.eqns)


def _chain_closed(cj):
    """A ClosedJaxpr with the same signature whose blocking calls are chained."""
    def fn(*args):
        return _eval(cj.jaxpr, cj.consts, *args)

    avals = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in cj.in_avals]
    return jax.make_jaxpr(fn)(*avals)


def _chain_params(params):
    out = {}
    for k, v in params.items():
        if isinstance(v, jcore.ClosedJaxpr):
            out[k] = _chain_closed(v)
        elif isinstance(v, tuple) and v and all(isinstance(b, jcore.ClosedJaxpr) for b in v):
            out[k] = tuple(_chain_closed(b) for b in v)
        else:
            out[k] = v
    return out


def _eval(jaxpr, consts, *args):
    env = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    for v, c in zip(jaxpr.constvars, consts):
        env[v] = c
    for v, a in zip(jaxpr.invars, args):
        env[v] = a
    prev = None
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        kernel = eqn.primitive in _BLOCKING
        compound = not kernel and any(_blocks(c.jaxpr) for c in _closed_jaxprs(eqn.params))
        params = eqn.params
        if kernel:
            # one operand carrying the dependency is enough (one copy, not two)
            first = next((i for i, x in enumerate(ins) if jnp.issubdtype(x.dtype, jnp.inexact)), None)
            if first is not None:
                ins[first] = _after(ins[first], prev)
        elif compound:
            # a loop, branch or call with kernels inside: every operand waits for the last
            # kernel (XLA may inline a one-trip loop, so one operand would not hold all of
            # its kernels back), and its own kernels are chained inside
            ins = [_after(x, prev) for x in ins]
            params = _chain_params(params)
        with eqn.ctx.manager:
            outs = eqn.primitive.bind(*ins, **eqn.primitive.get_bind_params(params))
        if not eqn.primitive.multiple_results:
            outs = [outs]
        if kernel or compound:
            # the next kernel waits for this one's results (all of them, for a loop whose
            # outputs need not all come from its last kernel)
            floats = [o for o in outs if jnp.issubdtype(o.dtype, jnp.inexact) and o.size]
            if floats:
                prev = floats[0] if len(floats) == 1 else jnp.stack([jnp.ravel(o)[0] for o in floats])
        for v, o in zip(eqn.outvars, outs):
            env[v] = o
    return [read(v) for v in jaxpr.outvars]


def chained(fn):
    """``fn`` (arrays in, a pytree of arrays out) with its blocking LAPACK calls chained.

    Traceable (use inside ``jit``/``vmap``); same values as ``fn``. Non-array arguments
    must be bound beforehand (``functools.partial``).
    """

    def wrapped(*args):
        closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        outs = _eval(closed.jaxpr, closed.consts, *jax.tree_util.tree_leaves(args))
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shape), outs)

    return wrapped
