"""Size classes: the compiled solve depends on the padded sizes, not on the sparsity pattern.

Independent truths: the solve of the unpadded problem with the JAX multifrontal Cholesky
(a fixed-pattern, separately compiled code path), and JAX's own compile events.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

import jaxgraph
from jaxgraph.factors import between, prior
from jaxgraph.graph.problem import size_class
from jaxgraph.noise import diagonal


def loop_graph(n, loops, seed):
    """An SE2 chain of ``n`` poses with ``loops`` random loop closures, noisy odometry start."""
    rng = np.random.default_rng(seed)
    truth = np.stack([np.cos(np.arange(n) / 5.0) * 5, np.sin(np.arange(n) / 5.0) * 5, np.arange(n) / 5.0 + np.pi / 2], 1)
    i = np.arange(n - 1)
    j = i + 1
    li = rng.integers(0, n - 5, loops)
    lj = li + rng.integers(3, 5, loops)
    i, j = np.concatenate([i, li]), np.concatenate([j, lj])

    def rel(a, b):
        c, s = np.cos(truth[a, 2]), np.sin(truth[a, 2])
        d = truth[b, :2] - truth[a, :2]
        return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1],
                         np.angle(np.exp(1j * (truth[b, 2] - truth[a, 2])))], 1)

    z = rel(i, j) + 0.02 * rng.normal(size=(i.size, 3))
    sig = np.array([0.1, 0.1, 0.05])
    problem = jaxgraph.Problem(
        [jaxgraph.VariableGroup("poses", "SE2", n)],
        [between("poses", i, j, jnp.asarray(z), diagonal(jnp.asarray(sig)), name="edges"),
         prior("poses", [0], jnp.asarray(truth[:1]), diagonal(jnp.asarray([1e-3] * 3)), name="anchor")],
    )
    values = {"poses": jnp.asarray(truth + 0.1 * rng.normal(size=truth.shape))}
    return problem, values


@functools.lru_cache(maxsize=None)
def graph_and_reference(n, loops, seed):
    """A graph, its values and the reference solve of the unpadded problem (fixed-pattern
    JAX multifrontal Cholesky, compiled separately per graph)."""
    p, v = loop_graph(n, loops, seed)
    return p, v, jaxgraph.solve(p, v, linear_solver="cholesky")


def compile_events(fn):
    """Run ``fn``; return its output and how many times XLA compiled the solver's program."""
    names = []

    def listener(event, duration, fun_name=None, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            names.append(fun_name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        out = fn()
        jax.block_until_ready(out)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return out, sum(1 for n in names if n and "_dispatch" in n)  # jaxgraph.solver's one jitted entry


def test_size_class_rounding():
    assert [size_class(c) for c in (1, 9, 16, 17, 3500, 5000)] == [1, 9, 16, 18, 3584, 5120]
    for c in range(17, 3000, 37):
        assert c <= size_class(c) < 1.125 * c + 1


def test_two_graphs_of_one_size_class_share_one_compiled_solve():
    p1, v1, ref1 = graph_and_reference(60, 12, seed=1)
    p2, v2, ref2 = graph_and_reference(58, 13, seed=2)  # other counts and loops, same size class
    assert p1.sized().structure == p2.sized().structure
    kw = dict(linear_solver="host")
    (o1, i1), n1 = compile_events(lambda: jaxgraph.solve(p1, v1, **kw))
    (o2, i2), n2 = compile_events(lambda: jaxgraph.solve(p2, v2, **kw))
    assert n1 >= 1 and n2 == 0
    for v, o, i, (ref, iref) in ((v1, o1, i1, ref1), (v2, o2, i2, ref2)):
        assert o["poses"].shape == v["poses"].shape
        np.testing.assert_allclose(np.asarray(o["poses"]), np.asarray(ref["poses"]), atol=1e-8)
        np.testing.assert_allclose(float(i.cost), float(iref.cost), rtol=1e-10)
        assert bool(i.converged)


def test_vmap_over_different_patterns_of_one_size_class_matches_separate_solves():
    p1, v1, ref1 = graph_and_reference(60, 12, seed=1)
    p2, v2, ref2 = graph_and_reference(60, 12, seed=4)  # same counts, different loop closures
    s1, s2 = p1.sized(), p2.sized()
    stacked = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), s1, s2)
    vals = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), s1.pad_values(v1), s2.pad_values(v2))
    out, info = jax.jit(jax.vmap(lambda p, v: jaxgraph.solve(p, v, linear_solver="host")))(stacked, vals)
    for k, (v, (ref, iref)) in enumerate(((v1, ref1), (v2, ref2))):
        np.testing.assert_allclose(np.asarray(out["poses"][k, : v["poses"].shape[0]]),
                                   np.asarray(ref["poses"]), atol=1e-8)
        np.testing.assert_allclose(float(info.cost[k]), float(iref.cost), rtol=1e-10)
