"""``retract_with_partials`` (the implicit backward's retraction at the solution) against
plain autodiff of ``Problem.retract``: same values, same JVP and VJP in ``d`` (float64), for a
problem with an SE(2) group, an SE(3) group with a fixed variable, and a vector group (three
tangent sizes and block layouts), at ``d = 0`` and at a random ``d``."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxgraph import factors, noise
from jaxgraph.graph import Problem, VariableGroup
from jaxgraph.solver._retract_rule import retract_with_partials


def _problem():
    rng = np.random.default_rng(0)
    a = factors.prior("a", np.arange(3), jnp.asarray(rng.normal(size=(3, 3))), noise.isotropic(1.0), name="pa")
    q = rng.normal(size=(4, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    b_rows = jnp.asarray(np.concatenate([q, rng.normal(size=(4, 3))], 1))
    b = factors.prior("b", np.arange(4), b_rows, noise.isotropic(1.0), name="pb")
    c = factors.prior("c", np.arange(2), jnp.asarray(rng.normal(size=(2, 3))), noise.isotropic(1.0), name="pc")
    problem = Problem([VariableGroup("a", "SE2", 3), VariableGroup("b", "SE3", 4, fixed=[1]),
                       VariableGroup("c", 3, 2)], [a, b, c])
    values = {"a": jnp.asarray(rng.normal(size=(3, 3))), "b": b_rows, "c": jnp.asarray(rng.normal(size=(2, 3)))}
    return problem, values, rng


def test_values_jvp_and_vjp_equal_plain_autodiff():
    problem, x, rng = _problem()
    st = problem.structure
    shape = (st.num_blocks, st.block_dim)
    dd = jnp.asarray(rng.normal(size=shape))
    ct = {k: jnp.asarray(rng.normal(size=x[k].shape)) for k in x}

    @jax.jit  # one compile for everything: eager autodiff of the SE(3) closed forms is slow
    def both(d):
        out = []
        for f in (lambda d: problem.retract(x, d), lambda d: retract_with_partials(problem, x, d)):
            v, t = jax.jvp(f, (d,), (dd,))
            out.append((v, t, jax.vjp(f, d)[1](ct)[0]))
        return out

    for d in (jnp.zeros(shape), 0.3 * jnp.asarray(rng.normal(size=shape))):
        (v0, t0, g0), (v1, t1, g1) = both(d)
        for k in x:
            np.testing.assert_allclose(v1[k], v0[k], rtol=1e-14, atol=1e-15)
            np.testing.assert_allclose(t1[k], t0[k], rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(g1, g0, rtol=1e-12, atol=1e-13)
    # the fixed variable does not move, to first order either
    np.testing.assert_array_equal(t1["b"][1], 0.0)
