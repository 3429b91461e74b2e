"""Variable kinds declared by group class, by dimension and by the string aliases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgraph
from jaxgraph import factors, lie, noise
from jaxgraph.graph import Problem, VariableGroup
from jaxgraph.graph.kinds import kind_of
from jaxgraph.io import read_g2o, write_g2o


def _xy_theta(poses: lie.SE2):
    return jnp.concatenate([poses.translation(), poses.rotation().as_radians()[..., None]], -1)


def _loop(kind, rows_of):
    """A 6-pose loop with noisy odometry and one closure, declared with ``kind``."""
    rng = np.random.default_rng(0)
    angle = np.linspace(0.0, 2.0, 6)
    truth = lie.SE2.from_xy_theta(np.cos(angle), np.sin(angle), angle + 1.0)
    i, j = np.array([0, 1, 2, 3, 4, 0]), np.array([1, 2, 3, 4, 5, 5])
    Z = lie.SE2(truth.parameters()[i]).inverse() @ lie.SE2(truth.parameters()[j])
    Z = Z @ lie.SE2.exp(rng.normal(0.0, 0.02, (6, 3)))
    problem = Problem(
        [VariableGroup("poses", kind, 6)],
        [factors.between("poses", i, j, rows_of(Z), noise.isotropic(0.1))],
    )
    start = truth @ lie.SE2.exp(rng.normal(0.0, 0.1, (6, 3)))
    return problem, {"poses": rows_of(start)}


def test_class_kind_solves_like_the_alias():
    by_alias, x_alias = _loop("SE2", _xy_theta)
    by_class, x_class = _loop(lie.SE2, lambda g: g.parameters())
    out_alias, info_alias = jaxgraph.solve(by_alias, x_alias)
    out_class, info_class = jaxgraph.solve(by_class, x_class)
    assert bool(info_alias.converged) and bool(info_class.converged)
    np.testing.assert_allclose(float(info_class.cost), float(info_alias.cost), rtol=1e-9)
    np.testing.assert_allclose(
        np.asarray(_xy_theta(lie.SE2(out_class["poses"]))), np.asarray(out_alias["poses"]), atol=1e-8
    )


@pytest.mark.parametrize("spec, group", [("SE2", lie.SE2), (lie.SE2, lie.SE2), ("SE3", lie.SE3), (lie.SE3, lie.SE3), ("SO3", lie.SO3), (lie.SO2, lie.SO2)])
def test_kind_operations_are_the_group_class(spec, group):
    kind = kind_of(spec)
    assert kind.group is group and kind.tangent_dim == group.tangent_dim
    g = group.sample_uniform(jax.random.PRNGKey(0), (3,))
    d = 0.3 * jax.random.normal(jax.random.PRNGKey(1), (3, group.tangent_dim))
    rows = kind.from_group(g)
    assert rows.shape == (3, kind.param_dim)
    np.testing.assert_allclose(np.asarray(kind.to_matrix(rows)), np.asarray(g.as_matrix()), atol=1e-12)
    moved = kind.to_group(kind.retract(rows, d))
    np.testing.assert_allclose(np.asarray(moved.as_matrix()), np.asarray((g @ group.exp(d)).as_matrix()), atol=1e-12)
    np.testing.assert_array_equal(np.asarray(kind.retract(rows, jnp.zeros_like(d))), np.asarray(kind.from_group(g.normalize())) if spec != "SE2" else np.asarray(rows))
    T = g.as_matrix()
    np.testing.assert_allclose(np.asarray(kind.log(T)), np.asarray(g.log()), atol=1e-12)
    np.testing.assert_allclose(np.asarray(kind.adjoint(T)), np.asarray(g.adjoint()), atol=1e-12)
    np.testing.assert_allclose(np.asarray(kind.inverse_matrix(T)), np.asarray(g.inverse().as_matrix()), atol=1e-12)


def test_dimension_and_errors():
    assert kind_of(3) == kind_of("R3") and not kind_of(3).is_group
    with pytest.raises(ValueError, match="lie.SE2"):
        kind_of("SE4")
    with pytest.raises(ValueError, match="unknown variable kind"):
        kind_of(0)


def test_g2o_layout_kept_and_class_kinds_written(tmp_path):
    problem, values = read_g2o("jaxgraph/data/intel.g2o")
    assert problem.variables[0].kind == "SE2" and values["poses"].shape[1] == 3
    by_class, x_class = _loop(lie.SE2, lambda g: g.parameters())
    path = tmp_path / "loop.g2o"
    write_g2o(path, by_class, x_class)
    back, x_back = read_g2o(path)
    np.testing.assert_allclose(np.asarray(x_back["poses"]), np.asarray(_xy_theta(lie.SE2(x_class["poses"]))), atol=1e-12)
    np.testing.assert_allclose(
        np.asarray(back.factors[0].measurement),
        np.asarray(_xy_theta(lie.SE2(by_class.factors[0].measurement))),
        atol=1e-12,
    )


@pytest.mark.parametrize("spec", ["SE2", "SE3", "SO3", "R3", lie.SE2, lie.SO2, lie.SE3, lie.SO3, 2])
def test_identity_rows_are_the_groups_identity(spec):
    """``identity_row`` (numpy, used to pad a new problem without compiling) equals the row of
    the group's identity element, and retracting by zero keeps it (a group axiom)."""
    kind = kind_of(spec)
    for dtype in (np.float32, np.float64):
        row = kind.identity_row(dtype)
        assert row.dtype == dtype and row.shape == (kind.param_dim,)
        if kind.is_group:
            expected = np.asarray(kind.from_group(kind.group.identity((), dtype)))
            np.testing.assert_array_equal(row, expected)
            np.testing.assert_array_equal(np.asarray(kind.to_matrix(row)), np.eye(kind.group.matrix_dim))
        else:
            np.testing.assert_array_equal(row, np.zeros(kind.param_dim))
        np.testing.assert_array_equal(np.asarray(kind.identity(3, dtype)), np.tile(row, (3, 1)))


def test_identity_values_of_a_euclidean_group_are_zeros():
    problem = Problem([VariableGroup("poses", "SE2", 2), VariableGroup("bias", 3, 21)],
                      [factors.between("poses", [0], [1], jnp.zeros((1, 3)), noise.isotropic(1.0))])
    values = problem.identity_values(jnp.float64)
    np.testing.assert_array_equal(np.asarray(values["bias"]), np.zeros((21, 3)))
    padded = problem.sized().pad_values({"poses": np.zeros((2, 3)), "bias": np.ones((21, 3))})
    assert padded["bias"].shape == (22, 3)  # the size class of 21
    np.testing.assert_array_equal(padded["bias"][21], np.zeros(3))


def test_matrix_forms_of_vector_and_product_kinds():
    """A vector kind's matrix is [[I, p], [0, 1]] and its inverse negates p; a product
    kind's is the block diagonal of its parts' (numpy references, batched rows)."""
    from jaxgraph.graph.kinds import ProductKind

    rng = np.random.default_rng(0)
    p = rng.normal(size=(4, 3))
    vec = kind_of(3)
    T = np.asarray(vec.to_matrix(jnp.asarray(p)))
    for k in range(4):
        ref = np.eye(4)
        ref[:3, 3] = p[k]
        np.testing.assert_array_equal(T[k], ref)
        np.testing.assert_allclose(np.asarray(vec.inverse_matrix(jnp.asarray(T[k]))), np.linalg.inv(ref), atol=1e-15)
    np.testing.assert_array_equal(np.asarray(vec.from_matrix(jnp.asarray(T))), p)

    prod = ProductKind(lie.SE2, 2)
    g = lie.SE2.sample_uniform(jax.random.PRNGKey(2), (4,))
    rows = jnp.concatenate([kind_of(lie.SE2).from_group(g), jnp.asarray(p[:, :2])], -1)
    M = np.asarray(prod.to_matrix(rows))
    assert M.shape == (4, 6, 6)
    for k in range(4):
        ref = np.zeros((6, 6))
        ref[:3, :3] = np.asarray(g.as_matrix())[k]
        ref[3:, 3:] = np.eye(3)
        ref[3:5, 5] = p[k, :2]
        np.testing.assert_allclose(M[k], ref, atol=1e-12)
