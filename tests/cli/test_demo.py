"""``jaxgraph demo``: both bundled graphs (2D intel, 3D sphere2500) solved to GTSAM's optimum,
each written file named on a "wrote" line and present; the 3D plot draws both panels in 3D on
one shared window; without matplotlib no plot is written or named."""

import re
from pathlib import Path

import numpy as np
import pytest

from jaxgraph.cli import main

# GTSAM 4.3.0 Levenberg-Marquardt optima from the files' initial values (prior on pose 0):
# ../shared/data/README.md and jaxgraph/data/README.md
GTSAM_COST = {"intel": 22.5021165, "sphere2500": 675.700965}
FILES = {"intel": ("intel_optimized.g2o", "report.json"),
         "sphere2500": ("sphere2500_optimized.g2o", "sphere2500_report.json")}


def _wrote(stdout: str) -> list[list[str]]:
    return [line[len("wrote "):].split(", ") for line in stdout.splitlines() if line.startswith("wrote ")]


def test_demo_solves_both_graphs_and_writes_what_it_says(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    import json

    import matplotlib.image

    from jaxgraph.io import read_g2o

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--no-compile-cache"]) == 0
    wrote = _wrote(capsys.readouterr().out)
    assert len(wrote) == 2
    for line, (name, (optimised, report)) in zip(wrote, FILES.items()):
        assert sorted(Path(p).name for p in line) == sorted([optimised, report, f"{name}.png"])
        assert all(Path(p).is_file() and Path(p).stat().st_size > 0 for p in line)
        rep = json.loads((out / report).read_text())
        assert rep["converged"] and rep["final_cost"] == pytest.approx(GTSAM_COST[name], rel=1e-6)
        # the written graph is the solution: re-read, its cost is the reported one
        problem, values = read_g2o(out / optimised)
        assert float(problem.cost(values)) == pytest.approx(rep["final_cost"], rel=1e-4)
        image = matplotlib.image.imread(out / f"{name}.png")
        assert image.shape[:2] == (720, 1440)  # 12 x 6 inches at 120 dpi
        left, right = image[:, :720], image[:, 720:]
        assert not np.allclose(left, right)  # two different drawings
    assert read_g2o(out / "sphere2500_optimized.g2o")[1]["poses"].shape == (2500, 7)


def test_sphere_plot_is_3d_with_one_window_for_both_panels(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.figure

    from jaxgraph.cli.plot import plot_trajectories
    from jaxgraph.data import path
    from jaxgraph.io import read_g2o

    _, values = read_g2o(path("sphere2500.g2o"))
    before = np.asarray(values["poses"], np.float64)
    after = before.copy()
    after[:, 4:7] = 0.5 * after[:, 4:7] + [100.0, 0.0, 0.0]  # moved and shrunk: a different window
    figures = []
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *a, **k: (figures.append(fig), save(fig, *a, **k))[1])
    assert plot_trajectories(tmp_path / "p.png", before, after, "sphere")
    (fig,) = figures
    axes = fig.get_axes()
    assert [ax.name for ax in axes] == ["3d", "3d"]
    assert [ax.get_title() for ax in axes] == ["sphere initial", "sphere optimised"]
    limits = [(ax.get_xlim(), ax.get_ylim(), ax.get_zlim()) for ax in axes]
    assert np.allclose(limits[0], limits[1])
    for k, (lo, hi) in enumerate(limits[0]):  # the window holds both trajectories
        both = np.concatenate([before[:, 4 + k], after[:, 4 + k]])
        assert lo <= both.min() and both.max() <= hi
    # one scale on every axis: a cube
    assert np.allclose([hi - lo for lo, hi in limits[0]], limits[0][0][1] - limits[0][0][0])


def test_demo_without_matplotlib_writes_and_names_no_plot(tmp_path, monkeypatch, capsys):
    import jaxgraph.cli.demo as demo

    monkeypatch.setattr(demo, "have_matplotlib", lambda: False)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--no-compile-cache"]) == 0
    captured = capsys.readouterr()
    assert "matplotlib is not installed" in captured.err
    named = [Path(p).name for line in _wrote(captured.out) for p in line]
    assert sorted(named) == sorted(f for pair in FILES.values() for f in pair)
    assert sorted(p.name for p in out.iterdir()) == sorted(named)
    assert not re.search(r"\.png", captured.out)
