"""Synthetic data for tests, benchmarks and robustness studies: perturbed copies of a
problem's values, pose graphs corrupted with random false loop closures."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from ..graph import factors as F
from ..graph import noise as N
from ..graph.problem import Problem

__all__ = ["perturbed_copies", "add_random_loop_closures"]


def perturbed_copies(problem, values, batch: int, sigma: float, seed: int):
    """``batch`` copies of ``values`` moved by ``Exp(noise)``, noise ~ N(0, sigma^2) per tangent entry.

    Every variable is perturbed (fixed ones stay put: ``Problem.retract`` leaves them).
    Returns a dict of ``[batch, count, param_dim]`` arrays.
    """
    total = sum(v.count for v in problem.variables)
    block = problem.structure.block_dim
    dtype = next(iter(values.values())).dtype
    keys = jax.random.split(jax.random.PRNGKey(seed), batch)
    noise = jax.vmap(lambda k: sigma * jax.random.normal(k, (total, block), dtype))(keys)
    return jax.vmap(lambda d: problem.retract(values, d))(noise)


def add_random_loop_closures(problem: Problem, values: dict, fraction: float = 0.1, *, seed: int = 0, group=None):
    """A copy of a pose graph with random false loop closures appended (for robustness tests).

    ``round(fraction * M)`` between factors are added to between group ``group`` (default:
    the first between group; ``M`` its size): random pairs ``(i, j)`` with ``|i - j| > 1``,
    uniformly random relative poses (rotation uniform on SO(n), translation uniform in a box
    as large as the extent of ``values``), each with the information matrix of a randomly
    chosen real loop closure (a non-odometry factor of the group; any factor if there is
    none). The group's noise must be an ``Information`` model.

    Returns ``(problem, outlier)``: the corrupted problem (same variables and other groups)
    and ``bool[M + added]``, True for the added factors.
    """
    groups = [g for g in problem.factors if isinstance(g.type, F.Between)]
    if group is not None:
        groups = [g for g in groups if g.name == group]
    if not groups:
        raise ValueError("add_random_loop_closures: the problem has no between factor group" + (f" {group!r}" if group else ""))
    g = groups[0]
    if not isinstance(g.noise, N.Information):
        raise TypeError(f"add_random_loop_closures: group {g.name!r} needs an Information noise model")
    var = g.variables[0]
    kind = problem.structure.kinds[var]
    n = next(v.count for v in problem.variables if v.name == var)
    rng = np.random.default_rng(seed)
    M = g.count
    k = int(round(fraction * M))
    idx = g.indices.array
    i = rng.integers(0, n, size=4 * k + 16)
    j = rng.integers(0, n, size=4 * k + 16)
    ok = np.abs(i - j) > 1
    i, j = i[ok][:k], j[ok][:k]
    if i.size < k:
        raise ValueError("add_random_loop_closures: the graph is too small for the requested outliers")
    meas = kind.random_rows(rng, k, np.asarray(values[var], np.float64))
    info = np.broadcast_to(np.asarray(g.noise.matrix, np.float64), (M, kind.tangent_dim, kind.tangent_dim))
    loops = np.nonzero(np.abs(idx[:, 0] - idx[:, 1]) != 1)[0]
    pool = loops if loops.size else np.arange(M)
    src = pool[rng.integers(0, pool.size, size=k)]
    dtype = jnp.result_type(g.measurement)
    new = F.between(
        var,
        np.concatenate([idx[:, 0], i]),
        np.concatenate([idx[:, 1], j]),
        jnp.asarray(np.concatenate([np.asarray(g.measurement, np.float64), meas]), dtype),
        N.Information(jnp.asarray(np.concatenate([info, info[src]]), dtype)),
        robust=g.robust,
        name=g.name,
    )
    fs = [new if f is g else f for f in problem.factors]
    corrupted = Problem(problem.variables, fs, anchor=False, metadata=problem.metadata)
    return corrupted, np.concatenate([np.zeros(M, bool), np.ones(k, bool)])
