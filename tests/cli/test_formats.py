"""``jaxgraph solve --format``: the format from the file name or the flag, problems beyond poses
end to end (output in the input's format, report keys), diagonal damping by default for
bundle adjustment, refusals with one clear line, help text on every flag."""

import argparse
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import jaxgraph
from jaxgraph.cli import build_parser, main
from jaxgraph.cli.common import Options, input_format, solver_flags

from ..io.test_bal import small_bal
from ..io.test_stereo import small_vo

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
BALBIANELLO = SHARED / "bundle_adjustment" / "Balbianello.out"
DUBROVNIK = SHARED / "bundle_adjustment" / "dubrovnik-3-7-pre.txt"
VICTORIA = SHARED / "landmarks" / "victoriaPark_reduced_1k.g2o"
KNOWN = SHARED / "landmarks" / "known_landmark_localization_20.g2o"


def test_format_from_name_or_flag():
    assert input_format("a/intel.g2o") == "g2o"
    assert input_format("x.BAL") == "bal"
    assert input_format("bundle.out") == "bundler"
    assert input_format("whatever.txt", "stereo") == "stereo"
    with pytest.raises(ValueError, match=r"a \.txt file may be a BAL file or stereo .*pass --format bal or --format stereo"):
        input_format("dubrovnik-3-7-pre.txt")
    with pytest.raises(ValueError, match="pass --format bal or --format stereo"):
        input_format("VO_stereo_factors_large")
    with pytest.raises(ValueError, match=r"cannot tell the format .* pass --format g2o\|bal\|bundler\|stereo"):
        input_format("graph.dat")
    with pytest.raises(ValueError, match="unknown format 'ply'"):
        input_format("x.g2o", "ply")
    assert Options().resolved("x.bal").diagonal_damping is True
    assert Options().resolved("x.g2o").diagonal_damping is False
    assert Options(diagonal_damping=False).resolved("x.out").diagonal_damping is False
    assert Options(format="bundler").solver_settings()["diagonal_damping"] is True


def test_every_solve_flag_has_help():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    solve = sub.choices["solve"]
    missing = [a.dest for a in solve._actions if a.dest != "help" and not a.help]
    assert not missing, missing
    text = solve.format_help()
    assert "--format {g2o,bal,bundler,stereo}" in text and "--diagonal-damping, --no-diagonal-damping" in text


def test_txt_input_needs_format_and_refusals(tmp_path, capsys):
    txt = tmp_path / "problem.txt"
    txt.write_text("1 1 1\n")
    assert main(["solve", str(txt)]) == 2
    assert "pass --format bal or --format stereo" in capsys.readouterr().err
    bal = small_bal(tmp_path, "small.bal")
    assert main(["solve", str(bal), "--plot", str(tmp_path / "p.png")]) == 2
    assert "--plot draws poses; a bal file holds cameras and points" in capsys.readouterr().err
    assert main(["solve", str(bal), "--init", "chordal"]) == 2
    assert "--init chordal and --gnc need a g2o pose graph, not a bal file" in capsys.readouterr().err
    bad = tmp_path / "bad.bal"
    bad.write_text("1 1 1\n0 3 1.0 2.0\n")
    assert main(["solve", str(bad)]) == 2
    assert f"{bad}:2: observation 1: point index: expected an integer in [0, 1), found 3" in capsys.readouterr().err


def _report(path):
    return json.loads(Path(path).read_text())


def test_bal_end_to_end_writes_bal(tmp_path, capsys):
    src = small_bal(tmp_path, "small.bal")
    problem, values = jaxgraph.io.read_bal(src, dtype=jnp.float64)
    # perturb the start so the solve has work to do; the pixels are exact
    start = tmp_path / "start.bal"
    moved = dict(values, points=values["points"] + 0.01)
    jaxgraph.io.write_bal(start, problem, moved)
    out, rep = tmp_path / "out.bal", tmp_path / "rep.json"
    assert main(["solve", str(start), "-o", str(out), "--report", str(rep), "--max-iterations", "50"]) == 0
    text = capsys.readouterr().out
    assert "2 cameras (bal_camera), 3 points (R3); 4 observations (snavely_reprojection), method lm, diagonal damping" in text
    assert "compiling for 2 cameras, 3 points, 4 factors..." in text
    report = _report(rep)
    assert report["format"] == "bal" and report["variables"] == {"cameras": 2, "points": 3}
    assert report["diagonal_damping"] is True and report["poses"] == 2 and report["edges"] == 0
    assert report["converged"] and report["output"] == str(out)
    p2, v2 = jaxgraph.io.read_bal(out, dtype=jnp.float64)
    np.testing.assert_allclose(float(p2.cost(v2)), report["final_cost"], rtol=1e-6, atol=1e-12)
    assert report["final_cost"] < 1e-3 * report["initial_cost"]
    args = build_parser().parse_args(["solve", str(start), "--no-diagonal-damping"])
    assert Options(**solver_flags(args)).resolved(start).diagonal_damping is False


def test_bundler_balbianello_without_priors(tmp_path):
    if not BALBIANELLO.exists():
        pytest.skip("shared data not available")
    out, rep = tmp_path / "out.out", tmp_path / "rep.json"
    assert main(["solve", str(BALBIANELLO), "-o", str(out), "--report", str(rep)]) == 0
    report = _report(rep)
    assert report["format"] == "bundler" and report["diagonal_damping"] is True
    # GTSAM 4.3.0's LM on the same prior-free graph (GeneralSFMFactor2, tight tolerances): 125.169594054
    assert abs(report["final_cost"] - 125.169594054) <= 1e-6 * 125.169594054
    problem, _ = jaxgraph.io.read_bundler(BALBIANELLO, dtype=jnp.float64)
    _, solved = jaxgraph.io.read_bundler(out, dtype=jnp.float64)
    np.testing.assert_allclose(float(problem.cost(solved)), report["final_cost"], rtol=1e-9)


def test_stereo_end_to_end_writes_three_files(tmp_path):
    factors_path, _, _ = small_vo(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out, rep = out_dir / "result.txt", tmp_path / "rep.json"
    assert main(["solve", str(factors_path), "--format", "stereo", "-o", str(out), "--report", str(rep)]) == 0
    report = _report(rep)
    assert report["format"] == "stereo" and report["diagonal_damping"] is False
    assert report["variables"] == {"poses": 3, "landmarks": 3} and report["converged"]
    assert sorted(p.name for p in out_dir.iterdir()) == ["result.txt", "result_calibration.txt", "result_poses.txt"]
    problem, _ = jaxgraph.io.read_stereo_vo(out)
    assert problem.metadata["pose_ids"].tolist() == [2, 5, 9]
    assert report["final_cost"] < 1e-12


def test_g2o_landmarks_end_to_end(tmp_path, capsys):
    if not VICTORIA.exists():
        pytest.skip("shared data not available")
    out, rep = tmp_path / "out.g2o", tmp_path / "rep.json"
    assert main(["solve", str(VICTORIA), "-o", str(out), "--report", str(rep)]) == 0
    text = capsys.readouterr().out
    assert "1000 poses (SE2), 48 landmarks (R2); 999 edges (between), 606 bearing_range (bearing_range)" in text
    report = _report(rep)
    assert report["poses"] == 1000 and report["edges"] == 999 and report["variables"]["landmarks"] == 48
    assert abs(report["final_cost"] - 9.134522204) <= 1e-6 * 9.134522204  # GTSAM 4.3.0, ../shared/data/README.md
    problem, solved = jaxgraph.io.read_g2o(out, dtype=jnp.float64)
    assert [g.name for g in problem.factors] == ["edges", "bearing_range", "anchor"]
    original, _ = jaxgraph.io.read_g2o(VICTORIA, dtype=jnp.float64)
    np.testing.assert_allclose(float(original.cost(solved)), report["final_cost"], rtol=1e-6)


def test_known_landmarks_as_gtsam_from_the_command_line(tmp_path, capsys):
    if not KNOWN.exists():
        pytest.skip("shared data not available")
    rep = tmp_path / "rep.json"
    assert main(["solve", str(KNOWN), "--trackxyz", "bearing_range", "--landmark-prior", "1e-6",
                 "--report", str(rep)]) == 0
    report = _report(rep)
    assert report["converged"] and report["variables"] == {"poses": 20, "landmarks": 4}
    assert abs(report["final_cost"] - 114.8644379) <= 1e-6 * 114.8644379  # GTSAM 4.3.0, ../shared/data/README.md
    capsys.readouterr()
    # the landmark flags belong to g2o files; a file without landmarks cannot take a landmark prior
    bal = small_bal(tmp_path, "small.bal")
    assert main(["solve", str(bal), "--trackxyz", "bearing_range"]) == 2
    assert f"--trackxyz applies to g2o files; {bal} is read as bal" in capsys.readouterr().err
    graph = tmp_path / "poses.g2o"
    graph.write_text("VERTEX_SE2 0 0 0 0\nVERTEX_SE2 1 1 0 0\nEDGE_SE2 0 1 1 0 0 1 0 0 1 0 1\n")
    assert main(["solve", str(graph), "--landmark-prior", "0.1"]) == 2
    assert f"{graph}: landmark_prior was given but the file has no landmarks" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["solve", str(graph), "--landmark-prior", "inf"])


def test_batch_of_bundle_adjustment_names_its_variables(tmp_path, capsys):
    src = small_bal(tmp_path, "small.bal")
    rep = tmp_path / "rep.json"
    assert main(["solve", str(src), "--batch", "2", "--noise", "0.001", "--report", str(rep)]) == 0
    # the progress line names cameras, points and observations, not "2 poses, 0 edges"
    assert "2 cameras (bal_camera), 3 points (R3); 4 observations (snavely_reprojection); 2 copies" in (
        capsys.readouterr().out)
    assert _report(rep)["format"] == "bal"


def test_cli_trial_budget_is_the_library_default():
    from jaxgraph.cli.common import LIBRARY_TRIALS
    from jaxgraph.solver.config import TerminationConfig

    assert LIBRARY_TRIALS == TerminationConfig().max_iterations
