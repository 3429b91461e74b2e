"""`jaxgraph solve` flags that used to be accepted and ignored, or to fail with a traceback
(issue 23): each is refused with a one-line error naming the flag, before any work; and the
"wrote" line names exactly the files written."""

import json
import re
from pathlib import Path

import pytest

from jaxgraph.cli import main
from jaxgraph.cli.plot import have_matplotlib

GRAPH = """VERTEX_SE2 0 0 0 0
VERTEX_SE2 1 1 0 0
VERTEX_SE2 2 2 0.1 0
EDGE_SE2 0 1 1 0 0 500 0 0 500 0 5000
EDGE_SE2 1 2 1 0 0.1 500 0 0 500 0 5000
EDGE_SE2 0 2 2.1 0 0 500 0 0 500 0 5000
"""


@pytest.fixture
def graph(tmp_path) -> Path:
    p = tmp_path / "g.g2o"
    p.write_text(GRAPH)
    return p


@pytest.mark.parametrize("flags, message", [
    # argparse refuses the value itself (exit 2, "argument --flag: ...")
    (["--noise", "-1"], r"argument --noise: expected a finite number >= 0, got -1"),
    (["--batch", "2", "--noise", "inf"], r"argument --noise: expected a finite number >= 0, got inf"),
    (["--batch", "0"], r"argument --batch: expected a positive integer, got 0"),
    (["--max-iterations", "10000000000"], r"argument --max-iterations: expected a positive integer at most 2147483647"),
    (["--max-iterations", "1e10"], r"argument --max-iterations: expected a positive integer, got '1e10'"),
    (["--tolerance=-1e-3"], r"argument --tolerance: expected a finite number >= 0, got -1e-3"),
])
def test_bad_flag_values_refused_by_the_parser(graph, capsys, flags, message):
    with pytest.raises(SystemExit) as exc:
        main(["solve", str(graph), *flags])
    assert exc.value.code == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize("flags, message", [
    # --noise and --seed perturb the copies of a batch; a single solve used to ignore them
    (["--noise", "0.5"], r"^jaxgraph: error: --noise applies to --batch"),
    (["--seed", "3"], r"^jaxgraph: error: --seed applies to --batch"),
    # outside a cluster JAX said only "coordinator_address should be defined."
    (["--batch", "2", "--distributed", "auto"], r"^jaxgraph: error: --distributed auto found no multi-process cluster"),
])
def test_flags_that_do_not_apply_are_refused(graph, capsys, flags, message):
    out = graph.parent / "out.g2o"
    assert main(["solve", str(graph), "-o", str(out), *flags]) == 2
    assert re.search(message, capsys.readouterr().err, re.M)
    assert not out.exists()


@pytest.mark.skipif(have_matplotlib(), reason="checks the refusal without matplotlib")
def test_plot_without_matplotlib_refused_up_front(graph, capsys):
    png, out = graph.parent / "g.png", graph.parent / "out.g2o"
    assert main(["solve", str(graph), "--plot", str(png), "-o", str(out)]) == 2
    assert f"--plot {png}: matplotlib is not installed" in capsys.readouterr().err
    assert not png.exists() and not out.exists()


def test_wrote_line_names_the_files_written_and_tolerance_is_used(graph, capsys):
    out, rep = graph.parent / "out.g2o", graph.parent / "rep.json"
    assert main(["solve", str(graph), "-o", str(out), "--report", str(rep)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[-1] == f"wrote {out}, {rep}"
    default = json.loads(rep.read_text())
    # a tolerance of 0.5 stops after the first accepted step that lowers the cost by less than half
    assert main(["solve", str(graph), "--report", str(rep), "--tolerance", "0.5"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {rep}"
    loose = json.loads(rep.read_text())
    assert loose["converged"] and loose["iterations"] < default["iterations"]
    assert loose["final_cost"] > default["final_cost"]


@pytest.mark.skipif(not have_matplotlib(), reason="needs matplotlib")
def test_plot_panels_share_one_window(tmp_path):
    import matplotlib.pyplot as plt
    import numpy as np

    from jaxgraph.cli import plot

    figures = []
    real_close = plt.close
    plt.close = lambda fig=None: figures.append(fig)  # keep the figure to inspect it
    try:
        before = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [10.0, 3.0, 0.0]])
        after = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
        assert plot.plot_trajectories(tmp_path / "p.png", before, after, "g")
    finally:
        plt.close = real_close
    # matplotlib 3.7 also calls plt.close("all") when pyplot's first figure resolves the backend
    (fig,) = [f for f in figures if not isinstance(f, str)]
    first, second = fig.axes
    assert first.get_xlim() == second.get_xlim() and first.get_ylim() == second.get_ylim()
    assert first.get_xlim()[0] <= 0 and first.get_xlim()[1] >= 10  # both trajectories inside
    assert (tmp_path / "p.png").stat().st_size > 0
    real_close(fig)
