"""The API reference (docs/api, Sphinx autodoc + napoleon) builds without a warning and
documents every public name: each name of the public modules' ``__all__`` (and the public
functions and classes of ``jaxgraph.lie``, which has none) is in the built inventory.
Needs Sphinx (``pip install sphinx``; .ci/min_versions.sh installs it); skipped without."""

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# module whose names are documented -> the module whose __all__ lists them
PUBLIC = ["jaxgraph", "jaxgraph.factors", "jaxgraph.noise", "jaxgraph.robust", "jaxgraph.io",
          "jaxgraph.linear", "jaxgraph.data", "splat", "splat.datasets", "splat.io", "splat.train",
          "splat.data"]


def _public_names():
    import importlib

    names = set()
    for mod_name in PUBLIC:
        mod = importlib.import_module(mod_name)
        for k in mod.__all__:
            if not inspect.ismodule(getattr(mod, k)):
                names.add(k)
    import jaxgraph.lie as lie

    for k, v in vars(lie).items():
        if not k.startswith("_") and (inspect.isfunction(v) or inspect.isclass(v)):
            names.add(k)
    return names


def test_api_reference_builds_without_warnings_and_covers_every_public_name(tmp_path):
    pytest.importorskip("sphinx")
    from sphinx.util.inventory import InventoryFile

    out = tmp_path / "html"
    r = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                        str(ROOT / "docs" / "api"), str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"sphinx -W failed:\n{r.stderr[-6000:]}"
    with open(out / "objects.inv", "rb") as f:
        inv = InventoryFile.load(f, "", lambda base, uri: uri)
    documented = {name.rsplit(".", 1)[-1] for kind, entries in inv.items() if kind.startswith("py:")
                  for name in entries}
    missing = sorted(_public_names() - documented)
    assert not missing, f"public names missing from the API reference: {missing}"
