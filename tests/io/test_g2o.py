"""g2o reader/writer: every malformed-input message, PD repair, FIX, no-vertex files, round trip."""

import re
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jaxgraph.io import G2OFormatError, read_g2o, write_g2o

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "posegraph"

E_INFO = "500 0 0 500 0 5000"


def _write(tmp_path, text, name="g.g2o"):
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD2D = f"""VERTEX_SE2 0 0 0 0
VERTEX_SE2 1 1 0 0
VERTEX_SE2 2 2 0 0.1
EDGE_SE2 0 1 1 0 0 {E_INFO}
EDGE_SE2 1 2 1 0 0.1 {E_INFO}
"""


@pytest.mark.parametrize(
    "text, line, pattern",
    [
        ("VERTEX_SE2 0 0 0\n", 1, r"VERTEX_SE2 needs 4 fields after the tag, got 3"),
        (GOOD2D + "EDGE_SE2 0 2 1 0 0 500 0 0 500 0\n", 6, r"EDGE_SE2 needs 11 fields after the tag, got 10"),
        (GOOD2D.replace("VERTEX_SE2 2 2 0 0.1", "VERTEX_SE2 2 2 abc 0.1"), 3, r"token 4 'abc' is not a number"),
        (GOOD2D.replace("VERTEX_SE2 1 1 0 0", "VERTEX_SE2 1.5 1 0 0"), 2, r"'1.5' is not an integer id"),
        (GOOD2D + f"EDGE_SE2 0 7 1 0 0 {E_INFO}\n", 6, r"edge refers to unknown vertex 7"),
        (GOOD2D + "VERTEX_SE2 1 5 5 5\n", 6, r"duplicate vertex id 1 \(first defined on line 2\)"),
        (GOOD2D.replace("EDGE_SE2 0 1 1 0 0", "EDGE_SE2 0 1 nan 0 0"), 4, r"token 4 is non-finite \('nan'\)"),
        (GOOD2D.replace("VERTEX_SE2 2 2 0 0.1", "VERTEX_SE2 2 2 inf 0.1"), 3, r"non-finite \('inf'\)"),
        (GOOD2D + "VERTEX_FOO 9 1 2\n", 6, r"unsupported line type 'VERTEX_FOO'"),
        (GOOD2D + "VERTEX_SE3:QUAT 5 0 0 0 0 0 0 1\n", 6, r"is 3D but line 1 was 2D"),
        (GOOD2D + "FIX 42\n", 6, r"FIX refers to unknown vertex 42"),
        (GOOD2D + "FIX\n", 6, r"FIX needs at least one vertex id"),
        (GOOD2D + f"EDGE_SE2 2 2 1 0 0 {E_INFO}\n", 6, r"edge connects vertex 2 to itself"),
        # Python's int() and float() read digit groups: 3_0 would be vertex 30, 1_0 the number 10
        (GOOD2D.replace("VERTEX_SE2 2 2 0 0.1", "VERTEX_SE2 3_0 2 0 0.1"), 3, r"'3_0' is not an integer id"),
        (GOOD2D.replace("EDGE_SE2 1 2", "EDGE_SE2 1 2_0"), 5, r"edge vertex id \(token 3\) '2_0' is not an integer id"),
        (GOOD2D.replace("VERTEX_SE2 2 2 0 0.1", "VERTEX_SE2 2 1_0 0 0.1"), 3, r"token 3 '1_0' is not a number"),
        (GOOD2D + "FIX 0x1\n", 6, r"FIX vertex id \(token 2\) '0x1' is not an integer id"),
        (GOOD2D.replace("VERTEX_SE2 2 2 0 0.1", "VERTEX_SE2 99999999999999999999 2 0 0.1"), 3,
         r"'99999999999999999999' is outside the int64 range of ids"),
    ],
)
def test_malformed_input_names_file_line_and_problem(tmp_path, text, line, pattern):
    expect_format_error(_write(tmp_path, text), line, pattern)


def expect_format_error(p, line, pattern):
    """``read_g2o(p)`` raises a G2OFormatError starting ``p:line:`` and matching ``pattern``."""
    with pytest.raises(G2OFormatError) as exc:
        read_g2o(p)
    msg = str(exc.value)
    assert msg.startswith(f"{p}:{line}: "), msg
    assert re.search(pattern, msg), msg


def test_non_utf8_bytes_named_by_line_and_column_latin1_comment_skipped(tmp_path):
    p = tmp_path / "latin1.g2o"
    p.write_bytes(b"# caf\xe9 (latin-1 comment)\n" + GOOD2D.replace("VERTEX_SE2 2 2 0 0.1", "VERTEX_SE2 2 2 0 0.1 \xe9")
                  .encode("latin-1"))
    expect_format_error(p, 4, r"not UTF-8 text: byte 0xe9 at column 22")
    p.write_bytes(b"# caf\xe9 (latin-1 comment)\n" + GOOD2D.encode())
    problem, values = read_g2o(p)
    assert values["poses"].shape == (3, 3)


def test_non_float_dtype_refused(tmp_path):
    with pytest.raises(TypeError, match="read_g2o: dtype must be a floating dtype .*got int32"):
        read_g2o(_write(tmp_path, GOOD2D), dtype=np.int32)


def test_empty_file_and_missing_odometry(tmp_path):
    p = _write(tmp_path, "\n\n")
    with pytest.raises(G2OFormatError, match=re.escape(str(p)) + ".*no VERTEX"):
        read_g2o(p)
    p = _write(tmp_path, f"EDGE_SE2 0 1 1 0 0 {E_INFO}\nEDGE_SE2 2 3 1 0 0 {E_INFO}\n", "gap.g2o")
    with pytest.raises(G2OFormatError, match="no odometry edge between vertex 1 and vertex 2"):
        read_g2o(p)


def test_non_pd_information_repaired_with_one_warning(tmp_path):
    text = GOOD2D.replace(f"EDGE_SE2 0 1 1 0 0 {E_INFO}", "EDGE_SE2 0 1 1 0 0 1 2 0 1 0 1")
    text = text.replace(f"EDGE_SE2 1 2 1 0 0.1 {E_INFO}", "EDGE_SE2 1 2 1 0 0.1 -1 0 0 1 0 1")
    p = _write(tmp_path, text)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        problem, _ = read_g2o(p)
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == 1, msgs
    assert "2 information matrices are not positive definite (first on line 4)" in msgs[0]
    info = np.asarray(problem.group("edges").noise.matrix)
    # [[1,2,0],[2,1,0],[0,0,1]] has eigenvalues -1, 1, 3: -1 is raised to 1e-6 * 3.
    w = np.linalg.eigvalsh(info[0])
    np.testing.assert_allclose(w, [3e-6, 1, 3], rtol=1e-9)
    np.testing.assert_allclose(np.linalg.eigvalsh(info[1]), [1e-6, 1, 1], rtol=1e-9)
    with pytest.raises(G2OFormatError, match=re.escape(f"{p}:4: information matrix is not positive definite")):
        read_g2o(p, strict=True)


def test_fix_lines_hold_vertices_and_replace_anchor(tmp_path):
    p = _write(tmp_path, "\n" + GOOD2D + "\nFIX 1\n# comment\n")
    problem, values = read_g2o(p)
    assert problem.variables[0].fixed == (1,)
    assert [g.name for g in problem.factors] == ["edges"]
    import jaxgraph

    out, info = jaxgraph.solve(problem, values)
    assert bool(info.converged)
    np.testing.assert_array_equal(np.asarray(out["poses"][1]), np.asarray(values["poses"][1]))
    # Edges are consistent with a chain through the fixed pose: residual ~0 at the optimum.
    assert float(info.cost) < 1e-12


def test_no_vertex_file_composes_odometry(tmp_path):
    # Poses of a square path; odometry given partly as k -> k+1 and partly reversed.
    th = np.pi / 2
    text = (
        f"EDGE_SE2 0 1 1 0 {th} {E_INFO}\n"
        f"EDGE_SE2 2 1 0 1 {-th} {E_INFO}\n"  # inverse of (1, 0, th): 1 -> 2 given reversed
        f"EDGE_SE2 2 3 1 0 {th} {E_INFO}\n"
        f"EDGE_SE2 3 0 1 0 {th} {E_INFO}\n"
    )
    problem, values = read_g2o(_write(tmp_path, text))
    expected = np.array([[0, 0, 0], [1, 0, th], [1, 1, np.pi], [0, 1, -th]])
    v = np.asarray(values["poses"])
    np.testing.assert_allclose(v[:, :2], expected[:, :2], atol=1e-12)
    np.testing.assert_allclose(np.cos(v[:, 2] - expected[:, 2]), 1, atol=1e-12)
    assert problem.variables[0].count == 4


def test_no_vertex_3d_file(tmp_path):
    q = np.array([np.cos(0.25), 0, 0, np.sin(0.25)])  # 0.5 rad about z, (w, x, y, z)
    info = " ".join(["1"] + ["0"] * 5 + ["1"] + ["0"] * 4 + ["1", "0", "0", "0", "1", "0", "0", "1", "0", "1"])
    line = f"1 0 0 {q[1]} {q[2]} {q[3]} {q[0]} {info}"
    problem, values = read_g2o(_write(tmp_path, f"EDGE_SE3:QUAT 0 1 {line}\nEDGE_SE3:QUAT 1 2 {line}\n"))
    v = np.asarray(values["poses"])
    np.testing.assert_allclose(v[2, 4:], [1 + np.cos(0.5), np.sin(0.5), 0], atol=1e-12)
    np.testing.assert_allclose(np.abs(v[2, :4]), [np.cos(0.5), 0, 0, np.sin(0.5)], atol=1e-12)


def _assert_same(p1, v1, p2, v2):
    assert np.array_equal(np.asarray(v1["poses"]), np.asarray(v2["poses"]))
    g1, g2 = p1.group("edges"), p2.group("edges")
    assert np.array_equal(g1.indices.array, g2.indices.array)
    assert np.array_equal(np.asarray(g1.measurement), np.asarray(g2.measurement))
    assert np.array_equal(np.asarray(g1.noise.matrix), np.asarray(g2.noise.matrix))


@pytest.mark.parametrize("name", ["intel.g2o", "smallGrid3D.g2o"])
def test_write_read_round_trip_is_bit_exact(tmp_path, name):
    src = DATA / name
    if not src.exists():
        pytest.skip("shared data not available")
    p1, v1 = read_g2o(src, dtype=jnp.float64)
    out = tmp_path / "rt.g2o"
    write_g2o(out, p1, v1)
    p2, v2 = read_g2o(out, dtype=jnp.float64)
    _assert_same(p1, v1, p2, v2)
    # Arbitrary float64 values (as produced by a solve) also survive exactly.
    rng = np.random.default_rng(0)
    noisy = {"poses": v1["poses"] * (1 + 1e-3 * jnp.asarray(rng.normal(size=v1["poses"].shape)))}
    write_g2o(out, p1, noisy)
    _, v3 = read_g2o(out, dtype=jnp.float64)
    assert np.array_equal(np.asarray(v3["poses"]), np.asarray(noisy["poses"]))


def test_edge_direction_and_vertex_ids_preserved(tmp_path):
    text = (
        "VERTEX_SE2 10 0 0 0\nVERTEX_SE2 30 2 0 0\nVERTEX_SE2 20 1 0 0\n"
        f"EDGE_SE2 30 20 -1 0 0 {E_INFO}\nEDGE_SE2 10 20 1 0 0 {E_INFO}\n"
    )
    problem, values = read_g2o(_write(tmp_path, text))
    np.testing.assert_array_equal(problem.metadata["vertex_ids"], [10, 20, 30])
    np.testing.assert_array_equal(problem.group("edges").indices.array, [[2, 1], [0, 1]])
    out = tmp_path / "o.g2o"
    write_g2o(out, problem, values)
    lines = out.read_text().splitlines()
    assert lines[0].startswith("VERTEX_SE2 10 ") and lines[2].startswith("VERTEX_SE2 30 ")
    assert lines[3].startswith("EDGE_SE2 30 20 -1.0 0.0 0.0 500.0 0.0 0.0 500.0 0.0 5000.0")


def test_vertices_without_edges_read_exactly(tmp_path):
    # a single vertex, or vertices and no edge, used to fail with "cannot reshape array of size 0"
    for text in ("VERTEX_SE2 0 1 2 0.3\n", "VERTEX_SE2 0 1 2 0.3\nVERTEX_SE2 4 5 6 0.7\n"):
        problem, values = read_g2o(_write(tmp_path, text), dtype=np.float64)
        rows = [[float(x) for x in line.split()[2:]] for line in text.splitlines()]
        np.testing.assert_array_equal(np.asarray(values["poses"]), rows)
        assert [g.name for g in problem.factors] == ["anchor"]
        assert float(problem.cost(values)) < 1e-20  # the anchor holds pose 0 where it is
