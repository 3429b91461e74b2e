"""``--plot``: the poses before and after optimisation on the same axes (needs matplotlib): a
top view of SE(2) graphs, a 3D view of SE(3) graphs."""

from __future__ import annotations

import sys


MISSING = "matplotlib is not installed (pip install 'jaxgraph[plot]')"


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported (checked without importing it)."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def positions(values):
    """Pose positions ``[N, 2]`` (SE2 rows ``(x, y, theta)``) or ``[N, 3]`` (SE3 rows
    ``(qw, qx, qy, qz, x, y, z)``), float64, in the file's units."""
    import numpy as np

    v = np.asarray(values, np.float64)
    return v[:, :2] if v.shape[1] == 3 else v[:, 4:7]


def plot_trajectories(path, before, after, title: str = "") -> bool:
    """Write a PNG with two panels, the trajectory of ``before`` and of ``after`` (the poses in
    order, joined by lines) on the same axes: one range and scale for both, so the change is
    what differs. SE(2) graphs are drawn from above (x, y); SE(3) graphs in 3D (x, y, z) from
    the same viewpoint in both panels.

    ``before``/``after``: pose arrays ``[N, 3]`` (SE2 rows ``(x, y, theta)``) or ``[N, 7]``
    (SE3 rows ``(qw, qx, qy, qz, x, y, z)``); ``title`` prefixes both panel titles. Returns
    False (and says so on stderr) when matplotlib is not installed.
    """
    try:
        import matplotlib

        if "matplotlib.pyplot" not in sys.modules:
            # files only: no display is needed or wanted. Not once pyplot is in use: switching
            # then closes every open figure (matplotlib < 3.8), the caller's included
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"{MISSING}: skipping the plot", file=sys.stderr)
        return False
    import numpy as np

    a, b = positions(before), positions(after)
    dim = a.shape[1]
    # one cube-scaled window holding both trajectories, shared by the two panels
    pts = np.concatenate([a, b])
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    lo, hi = (pts.min(0), pts.max(0)) if len(pts) else (np.zeros(dim), np.ones(dim))
    centre, half = (lo + hi) / 2, max(float(np.max(hi - lo)) / 2 * 1.05, 1e-9)
    fig = plt.figure(figsize=(12, 6))
    names = "xyz"[:dim]
    for i, (p, name, color) in enumerate(((a, "initial", "tab:gray"), (b, "optimised", "tab:blue"))):
        ax = fig.add_subplot(1, 2, i + 1, **({"projection": "3d"} if dim == 3 else {}))
        ax.plot(*p.T, "-", lw=0.6 if dim == 2 else 0.4, color=color)
        ax.set_title(f"{title} {name}".strip())
        for k, axis in enumerate(names):
            getattr(ax, f"set_{axis}lim")(centre[k] - half, centre[k] + half)
            getattr(ax, f"set_{axis}label")(axis)
        if dim == 3:
            ax.set_box_aspect((1, 1, 1))  # equal scale on the three axes
            ax.view_init(elev=20, azim=-60)
        else:
            ax.set_aspect("equal", adjustable="box")
    if dim == 3:  # tight_layout ignores 3D titles and would cut them off
        fig.subplots_adjust(left=0.02, right=0.96, bottom=0.03, top=0.93, wspace=0.08)
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
