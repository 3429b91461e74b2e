"""The group classes as jaxlie's: dataclass pytrees that flax serialises, JAX's dtypes, the
tangent-space helpers and the SO(3) conversions (each against an independent truth)."""

import dataclasses

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgraph import lie
from jaxgraph.lie import SE2, SE3, SO2, SO3

from ._reference import rotation

GROUPS = [SO2, SE2, SO3, SE3]
FIELDS = {SO2: "unit_complex", SE2: "unit_complex_xy", SO3: "wxyz", SE3: "wxyz_xyz"}
BATCHES = [(), (3,), (2, 1, 3)]


def _sample(group, batch, dtype=jnp.float64, seed=0):
    return group.sample_uniform(jax.random.PRNGKey(seed), batch, dtype)


@pytest.mark.parametrize("batch", BATCHES, ids=str)
@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.__name__)
def test_flax_round_trip(group, batch):
    g = _sample(group, batch)
    field = FIELDS[group]
    assert dataclasses.is_dataclass(g) and [f.name for f in dataclasses.fields(g)] == [field]
    state = flax.serialization.to_state_dict(g)
    assert list(state) == [field]
    target = group.identity(batch)
    for restored in (
        flax.serialization.from_bytes(target, flax.serialization.to_bytes(g)),
        flax.serialization.from_state_dict(target, state),
    ):
        assert type(restored) is group
        np.testing.assert_array_equal(np.asarray(restored.parameters()), np.asarray(g.parameters()))
    # Pytree key paths carry jaxlie's field name (what orbax writes).
    (path, _), = jax.tree_util.tree_flatten_with_path(g)[0]
    assert path == (jax.tree_util.GetAttrKey(field),)
    with pytest.raises(ValueError, match=field):
        flax.serialization.from_state_dict(target, {"params": state[field]})


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.__name__)
def test_dtypes_follow_jax(group):
    default = jax.dtypes.canonicalize_dtype(jnp.float64)  # float64 here: conftest enables x64
    assert group.identity().parameters().dtype == default
    assert group.sample_uniform(jax.random.PRNGKey(0)).parameters().dtype == default
    for dtype in (jnp.float32, jnp.float64):
        g = _sample(group, (2,), dtype)
        x = jnp.zeros((2, group.tangent_dim), dtype)
        for out in (g.parameters(), (g @ g).parameters(), g.inverse().parameters(), g.log(), group.exp(x).parameters(),
                    g.jlog(), g.adjoint(), g.as_matrix(), lie.manifold.zero_tangents(g)):
            assert out.dtype == dtype
    if issubclass(group, lie.SEBase):
        rot = group._rotation_type.identity((), jnp.float32)
        t = np.arange(group.space_dim, dtype=np.float64) + 0.1  # float64 translation is kept, not cast down
        pose = group.from_rotation_and_translation(rot, t)
        assert pose.parameters().dtype == jnp.float64
        np.testing.assert_array_equal(np.asarray(pose.translation()), t)


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.__name__)
def test_jlog_and_rplus_jacobian_match_autodiff(group):
    g = _sample(group, (4,), seed=1)

    def log_after(d, x):
        return (x @ group.exp(d)).log()

    def params_after(d, x):
        return lie.manifold.rplus(x, d).parameters()

    zero = jnp.zeros(group.tangent_dim)
    expected_jlog = jax.vmap(lambda x: jax.jacfwd(log_after)(zero, x))(g)
    expected_rplus = jax.vmap(lambda x: jax.jacfwd(params_after)(zero, x))(g)
    np.testing.assert_allclose(np.asarray(g.jlog()), np.asarray(expected_jlog), atol=1e-10)
    np.testing.assert_allclose(
        np.asarray(lie.manifold.rplus_jacobian_parameters_wrt_delta(g)), np.asarray(expected_rplus), atol=1e-12
    )


def test_manifold_grad_is_the_tangent_gradient():
    """grad of f(T) in the tangent space equals the finite difference of f(T exp(d)) at d = 0."""
    T = _sample(SE3, (), seed=2)
    target = _sample(SE3, (), seed=3)

    def loss(pose, scale):
        return scale * jnp.sum(pose.rminus(target) ** 2)

    (value, aux), gradient = lie.manifold.value_and_grad(lambda p, s: (loss(p, s), s), has_aux=True)(T, 2.0)
    g_only, aux_again = lie.manifold.grad(lambda p, s: (loss(p, s), s), has_aux=True)(T, 2.0)
    assert float(aux) == 2.0 and float(aux_again) == 2.0 and gradient.shape == (6,)
    np.testing.assert_allclose(np.asarray(g_only), np.asarray(gradient))
    h = 1e-6
    fd = [(loss(T.rplus(h * e), 2.0) - loss(T.rplus(-h * e), 2.0)) / (2 * h) for e in np.eye(6)]
    np.testing.assert_allclose(np.asarray(gradient), np.asarray(fd), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(float(value), float(loss(T, 2.0)))
    tree = {"pose": SO3(jnp.array([2.0, 0.0, 0.0, 0.0])), "x": jnp.ones(2)}
    normalized = lie.manifold.normalize_all(tree)
    np.testing.assert_allclose(np.asarray(normalized["pose"].wxyz), [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(np.asarray(normalized["x"]), np.ones(2))


def test_rpy_and_xyzw_against_matrices():
    rng = np.random.default_rng(0)
    roll, pitch, yaw = rng.uniform(-3.0, 3.0), rng.uniform(-1.5, 1.5), rng.uniform(-3.0, 3.0)
    R = rotation(np.array([0, 0, yaw])) @ rotation(np.array([0, pitch, 0])) @ rotation(np.array([roll, 0, 0]))
    q = SO3.from_rpy_radians(roll, pitch, yaw)
    np.testing.assert_allclose(np.asarray(q.as_matrix()), R, atol=1e-12)
    np.testing.assert_allclose(np.asarray(q.as_rpy_radians()), [roll, pitch, yaw], atol=1e-12)
    np.testing.assert_allclose(
        [q.compute_roll_radians(), q.compute_pitch_radians(), q.compute_yaw_radians()], [roll, pitch, yaw], atol=1e-12
    )
    xyzw = np.asarray(q.as_quaternion_xyzw())
    np.testing.assert_array_equal(xyzw, np.asarray(q.wxyz)[[1, 2, 3, 0]])
    np.testing.assert_array_equal(np.asarray(SO3.from_quaternion_xyzw(xyzw).wxyz), np.asarray(q.wxyz))
