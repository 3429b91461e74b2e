"""CLI end to end on a small real file: progress lines, output g2o, JSON report."""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import jaxgraph
from jaxgraph.cli import main

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "posegraph"


def test_cli_solve_end_to_end(tmp_path, capsys):
    src = DATA / "tinyGrid3D.g2o"
    if not src.exists():
        pytest.skip("shared data not available")
    out, rep = tmp_path / "out.g2o", tmp_path / "rep.json"
    rc = main(["solve", str(src), "--output", str(out), "--report", str(rep), "--max-iterations", "20"])
    assert rc == 0
    text = capsys.readouterr().out
    assert text.count(" iter ") == 5  # one progress line per iteration (GTSAM also takes 5)
    report = json.loads(rep.read_text())
    for key in ("initial_cost", "final_cost", "iterations", "converged", "compile_seconds", "solve_seconds", "poses", "edges", "device"):
        assert key in report
    assert report["poses"] == 9 and report["edges"] == 11 and report["converged"]
    # Published GTSAM LM cost for tinyGrid3D (../shared/data/README.md): 9.31390953.
    assert abs(report["final_cost"] - 9.31390953) <= 1e-7 * 9.31390953
    # The written graph, evaluated on the original edges, has the reported cost.
    problem, _ = jaxgraph.io.read_g2o(src, dtype=jnp.float64)
    _, solved = jaxgraph.io.read_g2o(out, dtype=jnp.float64)
    np.testing.assert_allclose(float(problem.cost(solved)), report["final_cost"], rtol=1e-9)


def test_cli_reports_bad_input(tmp_path, capsys):
    bad = tmp_path / "bad.g2o"
    bad.write_text("VERTEX_SE2 0 0 0\n")
    assert main(["solve", str(bad)]) == 2
    assert f"{bad}:1: VERTEX_SE2 needs 4 fields" in capsys.readouterr().err
