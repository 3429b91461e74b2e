"""2-D SLAM with landmarks: Victoria Park (a car observing trees in Sydney's Victoria Park).

The g2o file holds 1000 SE(2) poses joined by odometry (``EDGE_SE2``) and 606 observations of
48 tree landmarks (``LANDMARK2 pose landmark x y ...``). ``jaxgraph.io.read_g2o`` reads the
observations as GTSAM reads them, as bearing-range factors (``factors.bearing_range``), and
adds GTSAM's gauge prior on pose 0; the solve then reaches GTSAM 4.3.0's optimum
(``graph.error`` 9.134522204 with Levenberg-Marquardt, data README).

    python examples/landmark_slam.py [--data victoriaPark_reduced_1k.g2o] [--out DIR]

The file is GTSAM's ``examples/Data/victoriaPark_reduced_1k.g2o``; from a checkout of this
project the default finds it in ``../shared/data/landmarks/``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import jaxgraph

GTSAM_COST = 9.134522204  # GTSAM 4.3.0 LM, ../shared/data/README.md
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "landmarks" / "victoriaPark_reduced_1k.g2o"


def solve_landmarks(path):
    """Read and solve a landmark g2o file: ``(problem, initial, solved, info)``."""
    problem, initial = jaxgraph.io.read_g2o(path)
    solved, info = jaxgraph.solve(problem, initial)  # LM, GTSAM's default settings
    return problem, initial, solved, info


def plot(initial, solved, path) -> bool:
    """Poses and landmarks before and after the solve, side by side; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharex=True, sharey=True)
    for ax, values, title in ((axes[0], initial, "initial (odometry)"), (axes[1], solved, "solved")):
        poses, landmarks = np.asarray(values["poses"]), np.asarray(values["landmarks"])  # SE2 rows (x, y, theta)
        ax.plot(poses[:, 0], poses[:, 1], lw=0.8, label="poses")
        ax.scatter(landmarks[:, 0], landmarks[:, 1], s=12, c="tab:green", marker="^", label="landmarks")
        ax.set_title(title)
        ax.set_aspect("equal")
        ax.set_xlabel("x (m)")
    axes[0].set_ylabel("y (m)")
    axes[1].legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="the g2o file with poses and landmarks (default: victoriaPark_reduced_1k.g2o "
                             "in ../shared/data/landmarks/ beside this checkout)")
    parser.add_argument("--out", type=Path, default=Path("example_output"),
                        help="folder for landmark_slam.png, created if missing (default: ./example_output)")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        parser.error(f"{args.data} not found: pass --data PATH to victoriaPark_reduced_1k.g2o "
                     "(GTSAM's examples/Data/ folder has it)")

    t0 = time.perf_counter()
    problem, initial, solved, info = solve_landmarks(args.data)
    seconds = time.perf_counter() - t0
    print(problem)
    print(f"initial cost   {float(info.initial_cost):.9g}")
    print(f"final cost     {float(info.cost):.10g} after {int(info.iterations)} iterations "
          f"({'converged' if bool(info.converged) else 'NOT converged'}; {seconds:.1f} s with compilation)")
    print(f"GTSAM 4.3.0    {GTSAM_COST:.10g} (relative difference {abs(float(info.cost) / GTSAM_COST - 1):.1e})")

    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "landmark_slam.png"
    if plot(initial, solved, png):
        print(f"wrote {png}")
    else:
        print("matplotlib not installed: skipping the plot (pip install matplotlib)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
