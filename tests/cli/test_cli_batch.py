"""`jaxgraph solve INPUT --batch B --noise SIGMA --seed S` end to end on a small graph."""

import json
from pathlib import Path

import numpy as np
import pytest

from jaxgraph.cli import main

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "posegraph"


@pytest.mark.skipif(not DATA.exists(), reason="shared pose-graph data not present")
def test_cli_batch_reports_cost_spread_and_throughput(tmp_path, capsys):
    report = tmp_path / "report.json"
    out = tmp_path / "best.g2o"
    code = main(["solve", str(DATA / "tinyGrid3D.g2o"), "--batch", "6", "--noise", "0.05", "--seed", "3",
                 "--report", str(report), "--output", str(out)])
    assert code == 0
    rep = json.loads(report.read_text())
    assert rep["batch"] == 6 and rep["seed"] == 3 and rep["noise_sigma"] == 0.05
    costs = np.asarray(rep["final_cost"]["per_problem"])
    assert costs.shape == (6,) and np.all(np.isfinite(costs))
    # Perturbed copies still reach GTSAM's optimum for tinyGrid3D (9.31390953, ../shared/data/README.md).
    np.testing.assert_allclose(costs, 9.31390953, rtol=1e-3)
    assert rep["final_cost"]["min"] <= rep["final_cost"]["median"] <= rep["final_cost"]["max"]
    assert rep["problems_per_second"] > 0 and rep["converged"] == 6
    assert out.exists() and "VERTEX_SE3:QUAT" in out.read_text()
    assert "problems/s" in capsys.readouterr().out
    # The same seed gives the same perturbations and so the same per-problem costs.
    code = main(["solve", str(DATA / "tinyGrid3D.g2o"), "--batch", "6", "--noise", "0.05", "--seed", "3", "--report", str(report)])
    assert code == 0
    np.testing.assert_array_equal(np.asarray(json.loads(report.read_text())["final_cost"]["per_problem"]), costs)


def test_cli_batch_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exc:  # refused by the parser, as every count flag is
        main(["solve", str(DATA / "tinyGrid3D.g2o"), "--batch", "0"])
    assert exc.value.code == 2
    assert "argument --batch: expected a positive integer, got 0" in capsys.readouterr().err
