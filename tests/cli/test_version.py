"""`jaxgraph --version` and `splat --version` print the installed distribution's version,
which is the one pyproject.toml declares and `jaxgraph.__version__` states."""

import re
import tomllib
from pathlib import Path

import pytest

import jaxgraph
from jaxgraph.cli import main as jaxgraph_main
from splat.cli import main as splat_main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("main, prog", [(jaxgraph_main, "jaxgraph"), (splat_main, "splat")])
def test_version_flag(main, prog, capsys):
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out.strip()
    assert re.fullmatch(rf"{prog} \S+", out), out
    assert out == f"{prog} {declared}" and jaxgraph.__version__ == declared


def test_typed_markers_and_licence_files_present():
    for marker in (ROOT / "jaxgraph" / "py.typed", ROOT / "splat" / "py.typed"):
        assert marker.is_file()
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()
    notice = (ROOT / "NOTICE").read_text()
    for name in ("intel.g2o", "LGPL", "demo_scene.npz", "gsplat"):
        assert name in notice
    assert (ROOT / "jaxgraph" / "data" / "licenses" / "LGPL-3.0.txt").is_file()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["jaxgraph"] and "py.typed" in package_data["splat"]
    assert "data/licenses/*.txt" in package_data["jaxgraph"]
