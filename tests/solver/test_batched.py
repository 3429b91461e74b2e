"""Batched solving: vmap over problems sharing a structure, pmap and sharding over devices.

The reference for every batched result is the unbatched solve of the same copy; the
published GTSAM cost for intel (../shared/data/README.md) anchors the unperturbed case.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxgraph
from jaxgraph.io.synthetic import perturbed_copies

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "posegraph"
pytestmark = pytest.mark.skipif(not DATA.exists(), reason="shared pose-graph data not present")


# Slow: vmap = the unbatched solve member by member is test_solve.py's
# test_vmap_over_problems_matches_unbatched (iterations equal, rtol 1e-9); perturbed copies
# reaching GTSAM's optimum is test_pmap_of_vmap_on_four_devices below, intel's optimum
# test_solve.py's test_intel_lm_matches_gtsam.
@pytest.mark.slow
def test_vmap_over_64_perturbed_intel_copies_matches_unbatched():
    problem, values = jaxgraph.io.read_g2o(DATA / "intel.g2o")
    batch = perturbed_copies(problem, values, 64, 0.05, seed=0)

    def run(v):
        return jaxgraph.solve(problem, v)

    out_b, info_b = jax.jit(jax.vmap(run))(batch)
    single = jax.jit(run)
    iterations = []
    for k in range(64):
        vk = jax.tree_util.tree_map(lambda x: x[k], batch)
        _, info_k = single(vk)
        np.testing.assert_allclose(float(info_b.cost[k]), float(info_k.cost), rtol=1e-6)
        assert int(info_b.iterations[k]) == int(info_k.iterations), k
        iterations.append(int(info_k.iterations))
    assert bool(jnp.all(info_b.converged))
    assert np.all(np.isfinite(np.asarray(out_b["poses"])))
    # Every copy reaches GTSAM's optimum (22.5021165, ../shared/data/README.md) or lower.
    assert float(jnp.max(info_b.cost)) <= 22.5021165 * (1 + 1e-3)


def test_vmap_over_measurements_and_weights():
    """Different measurements and noise scales per problem, one structure."""
    problem, values = jaxgraph.io.read_g2o(DATA / "tinyGrid3D.g2o")
    edges = problem.group("edges")
    scales = jnp.asarray([1.0, 2.0, 0.5], jnp.float64)

    def problem_for(scale):
        noise = jax.tree_util.tree_map(lambda leaf: leaf * scale, edges.noise)
        return problem.replace_group("edges", edges.replace(noise=noise))

    def run(scale):
        return jaxgraph.solve(problem_for(scale), values)

    _, info_b = jax.jit(jax.vmap(run))(scales)
    for k, s in enumerate(np.asarray(scales)):
        _, info_k = run(jnp.asarray(s))
        np.testing.assert_allclose(float(info_b.cost[k]), float(info_k.cost), rtol=1e-6)
    # g2o problems carry information matrices; scaling them by s scales every edge cost by s
    # (the anchor costs ~0), so the optimum does not move and the cost scales exactly.
    assert type(edges.noise).__name__ == "Information"
    np.testing.assert_allclose(np.asarray(info_b.cost) / float(info_b.cost[0]), np.asarray(scales), rtol=1e-6)


def test_pmap_of_vmap_on_four_devices():
    assert jax.device_count() >= 4, "tests/conftest.py forces 4 host devices"
    problem, values = jaxgraph.io.read_g2o(DATA / "tinyGrid3D.g2o")
    batch = perturbed_copies(problem, values, 8, 0.1, seed=1)
    per_device = jax.tree_util.tree_map(lambda x: x.reshape((4, 2) + x.shape[1:]), batch)
    out, info = jax.pmap(jax.vmap(lambda v: jaxgraph.solve(problem, v)))(per_device)
    costs = np.asarray(info.cost).reshape(-1)
    for k in range(8):
        _, info_k = jaxgraph.solve(problem, jax.tree_util.tree_map(lambda x: x[k], batch))
        np.testing.assert_allclose(costs[k], float(info_k.cost), rtol=1e-6)
    # tinyGrid3D's GTSAM LM optimum is 9.31390953 (../shared/data/README.md).
    np.testing.assert_allclose(costs, 9.31390953, rtol=1e-3)


def test_sharded_batch_axis():
    problem, values = jaxgraph.io.read_g2o(DATA / "tinyGrid3D.g2o")
    batch = perturbed_copies(problem, values, 8, 0.1, seed=2)
    mesh = Mesh(np.asarray(jax.devices()[:4]), ("batch",))
    sharded = jax.device_put(batch, NamedSharding(mesh, PartitionSpec("batch")))
    out, info = jax.jit(jax.vmap(lambda v: jaxgraph.solve(problem, v)))(sharded)
    assert len(info.cost.sharding.device_set) == 4
    # the reference: each copy solved alone (the program test_pmap_of_vmap_on_four_devices
    # compiled already; a separate unsharded vmap compiled a second batched program)
    for k in range(8):
        _, info_k = jaxgraph.solve(problem, {name: x[k] for name, x in batch.items()})
        np.testing.assert_allclose(float(info.cost[k]), float(info_k.cost), rtol=1e-9)
        assert int(info.iterations[k]) == int(info_k.iterations)
    np.testing.assert_allclose(np.asarray(info.cost), 9.31390953, rtol=1e-3)
