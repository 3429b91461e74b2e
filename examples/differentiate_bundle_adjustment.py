"""Differentiate through a bundle-adjustment solve (implicit function theorem), checked by
finite differences.

A small synthetic scene (``jaxgraph.io.synthetic.synthetic_bal``: a few cameras on a ring
around a box of points, noisy observations, a perturbed start) is solved for every camera
and point. Its cameras have a wide-angle lens (focal length 500 px for a 640 x 480 image):
with synthetic_bal's default telephoto lens (4000 px) depth and focal length are nearly
interchangeable, the optimum is determined only to about 1e-8 relative, and finite
differences of re-solves are too noisy to check a gradient at 1e-4. Suppose the observed pixels carry an unknown constant offset ``delta`` (e.g. a
misplaced principal point); how does the accuracy of the reconstruction depend on it? With

    loss(delta) = mean_j |X_j(delta) - X_j^true|^2,   X(delta) = points of solve(pixels + delta)

``jax.grad(loss)`` flows through ``jaxgraph.solve(..., backward="implicit")``: at the optimum
the gradient of the cost is zero, so the derivative of the solution is ``-H^-1 dG/d(delta)``
(docs/solver.md), one linear solve instead of differentiating the iterations. The check:
central differences of tightly converged float64 re-solves.

The gauge: without anything fixing them, rotation, translation and scale of the whole scene
are free, the optimum is a 7-dimensional family and the derivative of "the" solution does not
exist (H is singular). As with a calibrated stereo rig, cameras 0 and 1 are held fixed at
their true values (``VariableGroup(..., fixed=(0, 1))``), which fixes all seven.

    python examples/differentiate_bundle_adjustment.py [--cameras 6 --points 40 --step 1e-2]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import jaxgraph
from jaxgraph import Problem, VariableGroup, factors, lie
from jaxgraph.io.synthetic import synthetic_bal


def bal_camera_rows(cameras):
    """``BAL_CAMERA`` rows ``[C, 10]`` of BAL-layout cameras ``[C, 9]`` (angle-axis to quaternion)."""
    cameras = np.asarray(cameras, np.float64)
    return np.concatenate([np.asarray(lie.SO3.exp(jnp.asarray(cameras[:, :3])).parameters()), cameras[:, 3:]], 1)


def make_scene(num_cameras=6, num_points=40, seed=2, focal=500.0):
    """``(problem, initial, true_points)``: cameras 0 and 1 fixed at the truth, the others and
    every point at the perturbed start of ``synthetic_bal``."""
    scene = synthetic_bal(num_cameras, num_points, focal=focal, seed=seed)
    problem = Problem(
        [VariableGroup("cameras", factors.BAL_CAMERA, num_cameras, fixed=(0, 1)), VariableGroup("points", 3, num_points)],
        [factors.snavely_reprojection("cameras", scene["camera_index"], "points", scene["point_index"],
                                      jnp.asarray(scene["observations"]), name="observations")],
        anchor=False,
    )
    cameras = bal_camera_rows(scene["cameras_init"])
    cameras[:2] = bal_camera_rows(scene["cameras"][:2])
    initial = {"cameras": jnp.asarray(cameras), "points": jnp.asarray(scene["points_init"])}
    return problem, initial, jnp.asarray(scene["points"])


def make_loss(problem, initial, true_points):
    """``loss(delta)``: mean squared distance of the solved points to the truth when every
    observation is shifted by ``delta[2]`` pixels."""
    observations = problem.group("observations")

    def loss(delta):
        shifted = observations.replace(measurement=observations.measurement + delta)
        solved, _ = jaxgraph.solve(problem.replace_group("observations", shifted), initial,
                                   backward="implicit", tolerance=1e-14, max_iterations=100)
        return jnp.mean(jnp.sum((solved["points"] - true_points) ** 2, -1))

    return loss


def gradient_check(num_cameras=6, num_points=40, step=1e-2, seed=2):
    """``(loss at 0, implicit gradient [2], central differences [2])`` at ``delta = 0``."""
    problem, initial, true_points = make_scene(num_cameras, num_points, seed)
    loss = make_loss(problem, initial, true_points)
    value, grad = jax.jit(jax.value_and_grad(loss))(jnp.zeros(2))
    f = jax.jit(loss)  # one compiled forward solve serves all four re-solves
    e = np.eye(2)
    fd = np.array([(f(jnp.asarray(step * e[k])) - f(jnp.asarray(-step * e[k]))) / (2 * step) for k in range(2)])
    return float(value), np.asarray(grad), fd


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=6, help="number of cameras, at least 3 (default: 6)")
    parser.add_argument("--points", type=int, default=40, help="number of points (default: 40)")
    parser.add_argument("--step", type=float, default=1e-2,
                        help="finite-difference step of the pixel offset, in pixels (default: 1e-2; at 1e-3 "
                        "the re-solves' own precision shows, about 1e-4 relative)")
    parser.add_argument("--seed", type=int, default=2, help="random seed of the synthetic scene (default: 2)")
    args = parser.parse_args(argv)
    if args.cameras < 3:
        parser.error("--cameras must be at least 3 (cameras 0 and 1 are held fixed)")

    t0 = time.perf_counter()
    value, grad, fd = gradient_check(args.cameras, args.points, args.step, args.seed)
    seconds = time.perf_counter() - t0
    rel = np.abs(grad - fd) / np.abs(fd)
    print(f"loss at delta = 0          {value:.6g} (scene units^2)")
    print(f"d loss / d delta, implicit {grad}")
    print(f"central differences        {fd} (step {args.step:g} px)")
    print(f"relative difference        {rel} ({seconds:.1f} s with compilation)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
