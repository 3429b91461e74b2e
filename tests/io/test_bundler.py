"""Bundler v0.3 files: the problem read (BAL's layout), malformed input named by file and
line, write -> read, the same problem as the BAL file of the same scene, GTSAM's initial cost
and reading of our file, and the Balbianello solve against GTSAM's reference."""

import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import jaxgraph
from jaxgraph.io import FormatError, read_bal, read_bundler, write_bal, write_bundler

from .test_bal import (
    CAMERAS,
    OBS,
    POINTS,
    _rotation,
    float32_copy,
    gtsam_sfm_error,
    small_bal,
    snavely,
    with_sfm_example_priors,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "bundle_adjustment"
BALBIANELLO = DATA / "Balbianello.out"


def small_bundler(tmp_path, name="small.out"):
    """The scene of test_bal.small_bal as a Bundler file (keys 10 + k, colors)."""
    lines = ["# Bundle file v0.3", f"{len(CAMERAS)} {len(POINTS)}"]
    for c in CAMERAS:
        lines.append(" ".join(map(repr, c[6:].tolist())))
        lines += [" ".join(map(repr, row)) for row in _rotation(c[:3]).tolist()]
        lines.append(" ".join(map(repr, c[3:6].tolist())))
    for j, X in enumerate(POINTS):
        lines.append(" ".join(map(repr, X.tolist())))
        lines.append(f"{10 * j} 20 255")
        views = [(k, c) for k, (c, p) in enumerate(OBS) if p == j]
        lines.append(" ".join([str(len(views))] + [f"{c} {10 + k} " + " ".join(map(repr, snavely(CAMERAS[c], X).tolist()))
                                                   for k, c in views]))
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_small_file_equals_the_bal_problem(tmp_path):
    problem, values = read_bundler(small_bundler(tmp_path))
    bal, bal_values = read_bal(small_bal(tmp_path))
    assert [(v.name, v.count, v.manifold) for v in problem.variables] == [
        (v.name, v.count, v.manifold) for v in bal.variables]
    assert problem.anchored is None
    np.testing.assert_allclose(np.asarray(values["cameras"]), np.asarray(bal_values["cameras"]), atol=1e-15)
    np.testing.assert_array_equal(np.asarray(values["points"]), POINTS)
    g, h = problem.group("observations"), bal.group("observations")
    np.testing.assert_array_equal(g.indices.array, h.indices.array)
    np.testing.assert_array_equal(np.asarray(g.measurement), np.asarray(h.measurement))
    np.testing.assert_array_equal(problem.metadata["keys"], [10, 11, 12, 13])
    np.testing.assert_array_equal(problem.metadata["colors"], [[0, 20, 255], [10, 20, 255], [20, 20, 255]])


def _cases(tmp_path):
    good = small_bundler(tmp_path).read_text().splitlines()
    n = len(good)

    def edit(k, *texts):
        lines = list(good)
        lines[k : k + len(texts)] = texts
        return "\n".join(lines) + "\n"

    return [
        (edit(0, "2 3"), 1, r"expected the header '# Bundle file v0.3', found '2 3'"),
        (edit(0, "# Bundle file v0.2"), 1, r"only v0.3 is supported"),
        (edit(1, "2"), 2, r"expected 'num_cameras num_points' \(2 tokens\), found 1"),
        (edit(2, "500 0.1"), 3, r"camera 0 of 2: 'f k1 k2' \(3 tokens\), found 2"),
        (edit(4, "0 1 q"), 5, r"camera 0: rotation row 2: expected a number, found 'q'"),
        (edit(3, "0 0 0", "0 0 0", "0 0 0"), 4, r"camera 0: the rotation matrix is all zero"),
        (edit(3, "2 0 0"), 4, r"camera 0: the matrix on this line and the next two is not a rotation"),
        (edit(14, "1 5 0 1.0 2.0"), 15, r"point 0, view 0: camera index: expected an integer in \[0, 2\), found 5"),
        (edit(14, "2 0 10 1.0"), 15, r"point 0: a view list of 2 entries needs 9 numbers"),
        (edit(14, "1 0 -1 1.0 2.0"), 15, r"point 0, view 0: key index: expected an integer in >= 0, found -1"),
        ("\n".join(good[:-1]) + "\n", n, r"expected point 2: view list 'n camera key x y ...', found the end"),
        ("\n".join(good + ["1 2 3"]) + "\n", n + 1, r"expected the end of the file after the 3 points"),
    ]


def test_malformed_input_names_file_line_and_problem(tmp_path):
    for text, line, pattern in _cases(tmp_path):
        p = tmp_path / "bad.out"
        p.write_text(text)
        with pytest.raises(FormatError) as exc:
            read_bundler(p)
        msg = str(exc.value)
        assert msg.startswith(f"{p}:{line}: "), (text, msg)
        assert re.search(pattern, msg), (pattern, msg)


def test_write_read_round_trip_and_across_formats(tmp_path):
    src = BALBIANELLO if BALBIANELLO.exists() else small_bundler(tmp_path)
    p1, v1 = read_bundler(src, dtype=jnp.float64)
    out = tmp_path / "rt.out"
    write_bundler(out, p1, v1)
    p2, v2 = read_bundler(out, dtype=jnp.float64)
    np.testing.assert_allclose(np.asarray(v2["cameras"]), np.asarray(v1["cameras"]), rtol=1e-15, atol=1e-15)
    np.testing.assert_array_equal(np.asarray(v2["points"]), np.asarray(v1["points"]))
    for key in ("keys", "colors"):
        np.testing.assert_array_equal(p2.metadata[key], p1.metadata[key])
    g1, g2 = p1.group("observations"), p2.group("observations")
    np.testing.assert_array_equal(g1.indices.array, g2.indices.array)
    np.testing.assert_array_equal(np.asarray(g1.measurement), np.asarray(g2.measurement))
    # A Bundler problem written as BAL reads back as the same problem.
    write_bal(tmp_path / "as.bal", p1, v1)
    p3, v3 = read_bal(tmp_path / "as.bal", dtype=jnp.float64)
    np.testing.assert_allclose(np.asarray(v3["cameras"]), np.asarray(v1["cameras"]), rtol=1e-15, atol=1e-15)
    np.testing.assert_array_equal(p3.group("observations").indices.array, g1.indices.array)


def test_gtsam_reads_our_file_and_agrees_on_the_initial_cost(tmp_path):
    gtsam = pytest.importorskip("gtsam")
    if not BALBIANELLO.exists():
        pytest.skip("shared data not available")
    problem, values = read_bundler(BALBIANELLO, dtype=jnp.float64)
    out = tmp_path / "ours.out"
    write_bundler(out, problem, values)
    a, b = gtsam.SfmData.FromBundlerFile(str(BALBIANELLO)), gtsam.SfmData.FromBundlerFile(str(out))
    assert (b.numberCameras(), b.numberTracks()) == (a.numberCameras(), a.numberTracks()) == (5, 544)
    for i in range(5):  # GTSAM reads floats
        np.testing.assert_allclose(b.camera(i).pose().matrix(), a.camera(i).pose().matrix(), rtol=1e-6, atol=1e-6)
    for j in range(0, 544, 37):
        np.testing.assert_allclose(b.track(j).point3(), a.track(j).point3(), rtol=1e-6)
        assert [m[0] for m in map(b.track(j).measurement, range(b.track(j).numberMeasurements()))] == \
            [m[0] for m in map(a.track(j).measurement, range(a.track(j).numberMeasurements()))]
    np.testing.assert_allclose(float(problem.cost(values)), gtsam_sfm_error(gtsam, a), rtol=1e-6)  # 126.9283232
    copy = float32_copy(BALBIANELLO, tmp_path / "f32.out")
    p32, v32 = read_bundler(copy, dtype=jnp.float64)
    # GTSAM keeps the float32 matrix as it is, we the nearest rotation: equal to ~1e-7
    np.testing.assert_allclose(float(p32.cost(v32)),
                               gtsam_sfm_error(gtsam, gtsam.SfmData.FromBundlerFile(str(copy))), rtol=1e-7)


def test_balbianello_solve_reaches_gtsams_cost():
    """GTSAM's reference 125.4001589 (../shared/data/README.md) is LM on SFMExample_bal.py's graph:
    the reprojections plus priors on camera 0 and point 0 (sigma 0.1); without them both reach
    125.169594054."""
    if not BALBIANELLO.exists():
        pytest.skip("shared data not available")
    problem, values = read_bundler(BALBIANELLO, dtype=jnp.float64)
    _, info = jaxgraph.solve(with_sfm_example_priors(problem, values), values, diagonal_damping=True)
    assert bool(info.converged)
    assert abs(float(info.cost) - 125.4001589) <= 1e-6 * 125.4001589
