"""Stereo visual odometry: GTSAM's StereoVOExample_large (26 camera poses, 2634 landmarks).

Every observation is a stereo pixel triple ``(uL, uR, v)`` of a 3-D landmark seen by a
calibrated stereo camera (``fx fy skew cx cy baseline``): ``factors.stereo``, GTSAM's
``GenericStereoFactor3D`` with unit noise. ``jaxgraph.io.read_stereo_vo`` reads the three
files (calibration, camera-to-world poses, observations), starts each landmark at its first
observation moved to the world and holds the first pose fixed (the gauge, as the GTSAM
example's ``NonlinearEquality``). The solve reaches GTSAM 4.3.0's optimum, 1577.02549.

    python examples/stereo_vo.py [--factors VO_stereo_factors_large.txt] [--out DIR]

The files are GTSAM's ``examples/Data/VO_*``; from a checkout of this project the default
finds them in ``../shared/data/bundle_adjustment/``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import jaxgraph

GTSAM_COST = 1577.02549  # GTSAM 4.3.0 LM, ../shared/data/README.md
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bundle_adjustment" / "VO_stereo_factors_large.txt"


def solve_stereo_vo(factors_path, calibration_path=None, poses_path=None):
    """Read and solve a stereo VO problem: ``(problem, initial, solved, info)``."""
    problem, initial = jaxgraph.io.read_stereo_vo(factors_path, calibration_path, poses_path)
    solved, info = jaxgraph.solve(problem, initial)
    return problem, initial, solved, info


def plot(initial, solved, path) -> bool:
    """Top view (camera x to the right, z forward) of the trajectory and landmarks before and
    after the solve; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(9, 5), sharex=True, sharey=True)
    for ax, values, title in ((axes[0], initial, "initial"), (axes[1], solved, "solved")):
        poses = np.asarray(values["poses"])  # SE3 rows (qw, qx, qy, qz, x, y, z), camera-to-world
        points = np.asarray(values["landmarks"])
        ax.scatter(points[:, 0], points[:, 2], s=1, c="0.5", alpha=0.5, label="landmarks")
        ax.plot(poses[:, 4], poses[:, 6], "o-", ms=3, c="tab:red", label="cameras")
        ax.set_title(title)
        ax.set_xlabel("x (m)")
    lo, hi = np.percentile(np.asarray(solved["landmarks"])[:, [0, 2]], [2, 98], axis=0)
    axes[0].set_xlim(lo[0], hi[0])
    axes[0].set_ylim(min(lo[1], -1.0), hi[1])
    axes[0].set_ylabel("z (m, forward)")
    axes[1].legend(loc="upper right", markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factors", type=Path, default=DEFAULT_DATA,
                        help="the stereo observations file 'camera landmark uL uR v X Y Z' (default: "
                             "VO_stereo_factors_large.txt in ../shared/data/bundle_adjustment/ beside this checkout)")
    parser.add_argument("--calibration", type=Path, default=None,
                        help="the calibration file 'fx fy skew cx cy baseline' (default: VO_calibration.txt "
                             "beside the factors file)")
    parser.add_argument("--poses", type=Path, default=None,
                        help="the camera poses file 'id' + 4x4 matrix (default: VO_camera_poses_large.txt "
                             "beside the factors file)")
    parser.add_argument("--out", type=Path, default=Path("example_output"),
                        help="folder for stereo_vo.png, created if missing (default: ./example_output)")
    args = parser.parse_args(argv)
    if not args.factors.is_file():
        parser.error(f"{args.factors} not found: pass --factors PATH to VO_stereo_factors_large.txt "
                     "(GTSAM's examples/Data/ folder has it, with VO_calibration.txt and VO_camera_poses_large.txt)")

    t0 = time.perf_counter()
    problem, initial, solved, info = solve_stereo_vo(args.factors, args.calibration, args.poses)
    seconds = time.perf_counter() - t0
    print(problem)
    print(f"initial cost   {float(info.initial_cost):.9g}")
    print(f"final cost     {float(info.cost):.9g} after {int(info.iterations)} iterations "
          f"({'converged' if bool(info.converged) else 'NOT converged'}; {seconds:.1f} s with compilation)")
    print(f"GTSAM 4.3.0    {GTSAM_COST:.9g} (relative difference {abs(float(info.cost) / GTSAM_COST - 1):.1e})")

    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "stereo_vo.png"
    if plot(initial, solved, png):
        print(f"wrote {png}")
    else:
        print("matplotlib not installed: skipping the plot (pip install matplotlib)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
