"""``--plot``: a top view of the poses before and after optimisation (needs matplotlib)."""

from __future__ import annotations

import sys


MISSING = "matplotlib is not installed (pip install 'jaxgraph[plot]')"


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported (checked without importing it)."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def plot_trajectories(path, before, after, title: str = "") -> bool:
    """Write a PNG with two panels, the (x, y) trajectory of ``before`` and of ``after``, on
    the same axes (one range and scale for both, so the change is what differs).

    ``before``/``after``: pose arrays, SE2 rows ``(x, y, theta)`` or SE3 rows
    ``(qw, qx, qy, qz, x, y, z)``; ``title`` prefixes both panel titles. Returns False (and
    says so on stderr) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display is needed or wanted
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"{MISSING}: skipping the plot", file=sys.stderr)
        return False
    import numpy as np

    def xy(v):
        v = np.asarray(v)
        return (v[:, 0], v[:, 1]) if v.shape[1] == 3 else (v[:, 4], v[:, 5])

    # one square-scaled window holding both trajectories, shared by the two panels
    pts = np.concatenate([np.stack(xy(before), 1), np.stack(xy(after), 1)])
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    lo, hi = (pts.min(0), pts.max(0)) if len(pts) else (np.zeros(2), np.ones(2))
    centre, half = (lo + hi) / 2, max(float(np.max(hi - lo)) / 2 * 1.05, 1e-9)
    fig, axes = plt.subplots(1, 2, figsize=(12, 6))
    for ax, vals, name, color in ((axes[0], before, "initial", "tab:gray"), (axes[1], after, "optimised", "tab:blue")):
        x, y = xy(vals)
        ax.plot(x, y, "-", lw=0.6, color=color)
        ax.set_title(f"{title} {name}".strip())
        ax.set_xlim(centre[0] - half, centre[0] + half)
        ax.set_ylim(centre[1] - half, centre[1] + half)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
