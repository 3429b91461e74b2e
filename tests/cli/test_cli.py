"""CLI end to end on a small real file: progress lines, output g2o, JSON report; failures
(non-finite results, output == input, unwritable outputs) and the compilation cache."""

import json
import os
import subprocess
import sys
import time
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
    assert "compiling for 9 poses, 12 factors..." in text  # 11 edges + the gauge prior
    assert text.index("compiling for") < text.index(" iter ")
    assert text.count(" iter ") == 5  # one progress line per iteration (GTSAM also takes 5)
    report = json.loads(rep.read_text())
    for key in ("initial_cost", "final_cost", "iterations", "converged", "compile_seconds", "solve_seconds", "poses",
                "edges", "device", "status", "status_code", "linear_clamped"):
        assert key in report
    assert report["status_code"] == 1 and report["iterations"] == 5
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
    # A zero-quaternion vertex (issue 9: used to exit 0 and write nan) is named by its line.
    bad.write_text("VERTEX_SE3:QUAT 0 0 0 0 0 0 0 1\nVERTEX_SE3:QUAT 1 1 0 0 0 0 0 0\n")
    out = tmp_path / "out.g2o"
    assert main(["solve", str(bad), "--output", str(out)]) == 2
    assert f"{bad}:2: VERTEX_SE3:QUAT (vertex 1): zero quaternion" in capsys.readouterr().err
    assert not out.exists()


def _tiny_copy(tmp_path, edit=None):
    src = DATA / "tinyGrid3D.g2o"
    if not src.exists():
        pytest.skip("shared data not available")
    lines = src.read_text().splitlines()
    if edit:
        lines = edit(lines)
    path = tmp_path / "tiny.g2o"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_never_writes_a_non_finite_result(tmp_path, capsys):
    # Same structure as tinyGrid3D (same compiled program as above); vertex 3 at x = 1e308
    # makes the cost overflow, so the solve cannot succeed.
    def far(lines):
        k = next(i for i, ln in enumerate(lines) if ln.startswith("VERTEX_SE3:QUAT 3 "))
        t = lines[k].split()
        t[2] = "1e308"
        lines[k] = " ".join(t)
        return lines

    src = _tiny_copy(tmp_path, far)
    out, rep = tmp_path / "out.g2o", tmp_path / "rep.json"
    rc = main(["solve", str(src), "--output", str(out), "--report", str(rep), "--max-iterations", "20"])
    assert rc == 1
    assert not out.exists()
    assert "did not converge" in capsys.readouterr().err
    report = json.loads(rep.read_text())  # strict JSON: no NaN tokens
    assert report["converged"] is False and report["status_code"] == 6 and report["final_cost"] is None


def test_cli_refuses_output_equal_to_input_and_unwritable_paths_fast(tmp_path, capsys):
    src = _tiny_copy(tmp_path)
    before = src.read_text()
    t0 = time.perf_counter()
    assert main(["solve", str(src), "--output", str(src)]) == 2
    assert "is the input file; pass --overwrite" in capsys.readouterr().err
    assert src.read_text() == before
    for flag, path, msg in (
        ("--output", tmp_path / "missing" / "out.g2o", "does not exist"),
        ("--report", tmp_path, "is a folder"),
        ("--plot", src.parent / "missing" / "p.png", "does not exist"),
    ):
        assert main(["solve", str(src), flag, str(path)]) == 2
        assert msg in capsys.readouterr().err
    assert time.perf_counter() - t0 < 5.0  # all refused before reading or compiling anything
    assert main(["solve", str(src), "--output", str(tmp_path / "a"), "--report", str(tmp_path / "a")]) == 2
    assert "are the same file" in capsys.readouterr().err


def test_cli_fills_the_persistent_compilation_cache(tmp_path):
    path = tmp_path / "three.g2o"
    path.write_text("VERTEX_SE2 0 0 0 0\nVERTEX_SE2 1 1 0 0\nVERTEX_SE2 2 2 0.1 0\n"
                    "EDGE_SE2 0 1 1 0 0 1 0 0 1 0 1\nEDGE_SE2 1 2 1 0 0 1 0 0 1 0 1\n")
    cache, rep = tmp_path / "cache", tmp_path / "rep.json"
    env = {k: v for k, v in os.environ.items() if k != "JAXGRAPH_NO_COMPILE_CACHE"}
    env.update(JAX_COMPILATION_CACHE_DIR=str(cache), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    cmd = [sys.executable, "-c", "import sys; from jaxgraph.cli import main; sys.exit(main())",
           "solve", str(path), "--report", str(rep), "--output", str(path), "--overwrite"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads(rep.read_text())["compile_cache"] == str(cache)
    assert any(cache.iterdir())  # compiled programs were stored
    assert path.read_text().startswith("VERTEX_SE2 0 ")  # --overwrite replaced the input


def test_default_cache_dir_honours_the_environment(monkeypatch, tmp_path):
    from jaxgraph.runtime.compile_cache import default_cache_dir

    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jaxcache"))
    assert default_cache_dir() == tmp_path / "jaxcache"
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "jaxgraph" / "jax"


def _ring_g2o(path, n, closure):
    """An n-pose SE2 odometry chain (unit steps, slight turn) plus one loop closure (a, b)."""
    lines = [f"VERTEX_SE2 {i} {i * 1.0} {0.01 * i * i} 0.02" for i in range(n)]
    lines += [f"EDGE_SE2 {i} {i + 1} 1 0 0.01 1 0 0 1 0 1" for i in range(n - 1)]
    a, b = closure
    lines.append(f"EDGE_SE2 {a} {b} {b - a} 0 0 1 0 0 1 0 1")
    path.write_text("\n".join(lines) + "\n")


def test_cli_reuses_the_cached_solve_for_a_new_graph_of_the_size_class(tmp_path):
    """150 SE2 poses (450 unknowns: the host CHOLMOD path, a custom call in the program) and
    verbose progress lines (a host call too): a second process solving a different graph of
    the same size class finds the compiled solve in the executable cache (no new entry)."""
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != "JAXGRAPH_NO_COMPILE_CACHE"}
    env.update(JAX_COMPILATION_CACHE_DIR=str(cache), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    entries = []
    for k, closure in enumerate([(0, 120), (10, 140)]):
        path = tmp_path / f"g{k}.g2o"
        _ring_g2o(path, 150, closure)
        cmd = [sys.executable, "-c", "import sys; from jaxgraph.cli import main; sys.exit(main())",
               "solve", str(path), "--output", str(tmp_path / f"out{k}.g2o"), "--linear-solver", "host"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        assert "iter    1" in done.stdout  # progress lines printed from the compiled loop
        entries.append({p.name for p in (cache / "jaxgraph-executables").glob("*.pkl")})
    assert entries[0], "the solve program was not cached"
    assert entries[1] == entries[0]  # the second graph compiled nothing new for its solve
