"""Bundle adjustment of a BAL file ("Bundle Adjustment in the Large") or a synthetic scene.

Each camera is a ``factors.BAL_CAMERA`` variable, the 10 numbers ``(qw, qx, qy, qz, tx, ty,
tz, f, k1, k2)`` (world-to-camera rotation and translation, focal length, two radial
distortion terms; the camera looks down -z, as in BAL files), each point a 3-vector, and each
observation a ``factors.snavely_reprojection`` factor whose residual is the predicted minus
the observed pixel (Ceres' ``SnavelyReprojectionError``). Nothing fixes the 7-dimensional gauge
(rotation, translation and scale of the whole scene): as Ceres does, Levenberg-Marquardt's
damping keeps the steps finite; diagonal damping, ``lambda * diag(H)``, suits the very
different scales of rotations, focal lengths and distortion terms.

    python examples/bundle_adjustment.py [--data dubrovnik-3-7-pre.txt]
    python examples/bundle_adjustment.py --synthetic [--cameras 40 --points 8000]

The RMS reprojection error is per pixel coordinate, sqrt(mean of squared u and v errors).
For the synthetic scene (observations with Gaussian noise of --noise-px per coordinate) its
expected value at the optimum is noise * sqrt((n - p + 7) / n), n residuals and p unknowns.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import jaxgraph
from jaxgraph import Problem, VariableGroup, factors, lie
from jaxgraph.io.synthetic import synthetic_bal

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bundle_adjustment" / "dubrovnik-3-7-pre.txt"


def bal_camera_rows(cameras):
    """``BAL_CAMERA`` rows ``[C, 10]`` of cameras in a BAL file's layout ``[C, 9]`` (angle-axis,
    translation, f, k1, k2): the angle-axis becomes a unit quaternion ``(w, x, y, z)``."""
    cameras = np.asarray(cameras, np.float64)
    quaternions = np.asarray(lie.SO3.exp(jnp.asarray(cameras[:, :3])).parameters())
    return np.concatenate([quaternions, cameras[:, 3:]], 1)


def synthetic_problem(num_cameras=40, num_points=8000, noise_px=0.5, seed=0):
    """A synthetic scene (``jaxgraph.io.synthetic.synthetic_bal``: cameras on a ring around a
    box of points, observations with ``noise_px`` Gaussian noise, a perturbed start):
    ``(problem, initial, truth)``, the two values dicts of ``"cameras"`` and ``"points"``."""
    scene = synthetic_bal(num_cameras, num_points, noise_px=noise_px, seed=seed)
    problem = Problem(
        [VariableGroup("cameras", factors.BAL_CAMERA, num_cameras), VariableGroup("points", 3, num_points)],
        [factors.snavely_reprojection("cameras", scene["camera_index"], "points", scene["point_index"],
                                      jnp.asarray(scene["observations"]), name="observations")],
        anchor=False,  # no gauge prior, no fixed camera: the damping handles the gauge
    )
    initial = {"cameras": jnp.asarray(bal_camera_rows(scene["cameras_init"])), "points": jnp.asarray(scene["points_init"])}
    truth = {"cameras": jnp.asarray(bal_camera_rows(scene["cameras"])), "points": jnp.asarray(scene["points"])}
    return problem, initial, truth


def rms_pixels(problem, values) -> float:
    """RMS reprojection error per pixel coordinate (the factors have unit noise, so the
    residuals are pixels)."""
    r = np.asarray(problem.residuals(values, "observations"))
    return float(np.sqrt(np.mean(r**2)))


def expected_rms(problem, noise_px) -> float:
    """The RMS error at the optimum expected for Gaussian noise ``noise_px``: ``noise_px *
    sqrt((n - p + 7) / n)`` with ``n`` residuals, ``p`` unknowns and the 7-dimensional gauge."""
    n = 2 * problem.group("observations").count
    p = sum(v.count * v.manifold.tangent_dim for v in problem.variables)
    return noise_px * float(np.sqrt((n - p + 7) / n))


def solve_bundle(problem, initial, max_iterations=2000, diagonal_damping=True):
    """Levenberg-Marquardt with diagonal damping (``DampingConfig.diagonal_damping``)."""
    config = jaxgraph.SolverConfig(
        method="lm",
        damping=jaxgraph.DampingConfig(diagonal_damping=diagonal_damping),
        termination=jaxgraph.TerminationConfig(max_iterations=max_iterations),
    )
    return jaxgraph.solve(problem, initial, config)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="a BAL file (default: dubrovnik-3-7-pre.txt in ../shared/data/bundle_adjustment/ "
                             "beside this checkout)")
    parser.add_argument("--synthetic", action="store_true",
                        help="solve a synthetic scene (jaxgraph.io.synthetic.synthetic_bal) instead of --data")
    parser.add_argument("--cameras", type=int, default=40, help="with --synthetic: number of cameras (default: 40)")
    parser.add_argument("--points", type=int, default=8000, help="with --synthetic: number of points (default: 8000)")
    parser.add_argument("--noise-px", type=float, default=0.5,
                        help="with --synthetic: std. dev. of the pixel noise per coordinate (default: 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="with --synthetic: random seed (default: 0)")
    parser.add_argument("--max-iterations", type=int, default=2000,
                        help="most LM trials (linear solves, accepted or not) (default: 2000)")
    parser.add_argument("--no-diagonal-damping", action="store_true",
                        help="damp with lambda * I instead of lambda * diag(H) (default: diagonal damping)")
    args = parser.parse_args(argv)

    if args.synthetic:
        problem, initial, truth = synthetic_problem(args.cameras, args.points, args.noise_px, args.seed)
    else:
        if not args.data.is_file():
            parser.error(f"{args.data} not found: pass --data PATH to a BAL file (e.g. GTSAM's "
                         "examples/Data/dubrovnik-3-7-pre.txt or one from grail.cs.washington.edu/projects/bal), "
                         "or use --synthetic")
        problem, initial = jaxgraph.io.read_bal(args.data)
        truth = None

    t0 = time.perf_counter()
    solved, info = solve_bundle(problem, initial, args.max_iterations, not args.no_diagonal_damping)
    seconds = time.perf_counter() - t0
    print(problem)
    print(f"reprojection cost  {float(info.initial_cost):.6g} -> {float(info.cost):.6g} "
          f"(0.5 * sum of squared pixel errors)")
    print(f"RMS error (px)     {rms_pixels(problem, initial):.4g} -> {rms_pixels(problem, solved):.4g}")
    print(f"iterations         {int(info.iterations)} trials, {int(info.accepted_steps)} accepted "
          f"({'converged' if bool(info.converged) else 'NOT converged'}; {seconds:.1f} s with compilation)")
    n = 2 * problem.group("observations").count
    p = sum(v.count * v.manifold.tangent_dim for v in problem.variables)
    if n < p + 7:
        print(f"note: {n} residuals for {p} unknowns (7 of them the gauge): exact fits exist, so the cost "
              "heads for zero and where it stops depends on the tolerances")
    if truth is not None:
        print(f"at the true values: cost {float(problem.cost(truth)):.6g}, RMS {rms_pixels(problem, truth):.4g} px; "
              f"expected RMS at the optimum {expected_rms(problem, args.noise_px):.4g} px")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
