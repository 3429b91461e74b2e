"""Batched bundle adjustment: two different synthetic BAL problems (other scenes, other
observation patterns and counts) padded to one size class (``Problem.sized``) solve together
under ``jax.vmap``. Each batched result equals the unbatched solve of its own problem, and
each reaches the noise floor of its scene: below the cost at the true values, and an RMS
error near ``sigma sqrt((n - p + 7) / n)`` (n residuals, p unknowns, the 7-dimensional gauge
of bundle adjustment), the least-squares residual of Gaussian noise ``sigma``."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxgraph
from jaxgraph import Problem, VariableGroup, factors, lie
from jaxgraph.graph.problem import size_class
from jaxgraph.io.synthetic import synthetic_bal

CAMERAS, POINTS, SIGMA = 8, 200, 0.5
SETTINGS = {"diagonal_damping": True, "linear_solver": "host"}  # sized problems: host, dense or pcg


def _rows(cameras):
    """BAL cameras [C, 9] (angle-axis, t, f, k1, k2) -> BAL_CAMERA rows [C, 10]."""
    q = np.asarray(lie.SO3.exp(jnp.asarray(cameras[:, :3])).parameters())
    return np.concatenate([q, cameras[:, 3:]], 1)


def _scene(seed):
    s = synthetic_bal(CAMERAS, POINTS, noise_px=SIGMA, seed=seed)
    problem = Problem(
        [VariableGroup("cameras", factors.BAL_CAMERA, CAMERAS), VariableGroup("points", 3, POINTS)],
        [factors.snavely_reprojection("cameras", s["camera_index"], "points", s["point_index"],
                                      jnp.asarray(s["observations"]), name="observations")],
        anchor=False,
    )
    start = {"cameras": jnp.asarray(_rows(s["cameras_init"])), "points": jnp.asarray(s["points_init"])}
    truth = {"cameras": jnp.asarray(_rows(s["cameras"])), "points": jnp.asarray(s["points"])}
    return problem, start, truth


def _stack(a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.stack([x, y]), a, b)


def test_vmapped_bundle_adjustments_of_one_size_class_match_their_unbatched_solves():
    scenes = [_scene(1), _scene(2)]
    counts = [p.group("observations").count for p, _, _ in scenes]
    assert counts[0] != counts[1]  # different patterns and counts: only the size class is shared
    sizes = {"observations": size_class(max(counts))}
    sized = [p.sized(sizes) for p, _, _ in scenes]
    assert sized[0].structure == sized[1].structure

    problems = _stack(*sized)
    starts = _stack(*(s.pad_values(v) for s, (_, v, _) in zip(sized, scenes)))
    out, info = jax.jit(jax.vmap(lambda p, v: jaxgraph.solve(p, v, **SETTINGS)))(problems, starts)

    for k, ((problem, start, truth), s) in enumerate(zip(scenes, sized)):
        single, info_k = jaxgraph.solve(problem, start, **SETTINGS)
        assert bool(info.converged[k]) and bool(info_k.converged)
        assert int(info.iterations[k]) == int(info_k.iterations)
        np.testing.assert_allclose(float(info.cost[k]), float(info_k.cost), rtol=1e-10)
        batched = s.unpad_values({name: x[k] for name, x in out.items()}, problem)
        for name in single:
            assert batched[name].shape == single[name].shape
            np.testing.assert_allclose(np.asarray(batched[name]), np.asarray(single[name]), rtol=1e-9, atol=1e-7,
                                       err_msg=f"problem {k}, {name}")

        # the noise floor, from the scene alone
        cost, at_truth = float(info.cost[k]), float(problem.cost(truth))
        assert cost <= at_truth
        n = 2 * counts[k]
        p = CAMERAS * 9 + POINTS * 3
        floor = SIGMA * np.sqrt((n - p + 7) / n)
        rms = np.sqrt(2 * cost / n)
        assert abs(rms - floor) < 0.15 * floor, (k, rms, floor)
        assert abs(np.sqrt(2 * at_truth / n) - SIGMA) < 0.1 * SIGMA  # the noise that was added
