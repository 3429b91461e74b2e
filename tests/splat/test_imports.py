"""splat depends on jaxgraph's Lie groups only: importing it must not load the solver."""

import os
import subprocess
import sys

import pytest

SOLVER_MODULES = ("jaxgraph.solver", "jaxgraph.graph", "jaxgraph.linear", "jaxgraph.runtime",
                  "jaxgraph.algorithms")


def loaded_after_import(module: str) -> list:
    """Names in sys.modules after ``import module`` in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", f"import {module}, sys; print('\\n'.join(sys.modules))"],
        capture_output=True, text=True, check=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu")).stdout
    return out.split()


@pytest.mark.parametrize("module", ["splat", "splat.train"])
def test_import_splat_loads_no_solver_module(module):
    loaded = loaded_after_import(module)
    assert "jaxgraph.lie" in loaded
    solver = [m for m in loaded if any(m == s or m.startswith(s + ".") for s in SOLVER_MODULES)]
    assert solver == [], f"import {module} loaded {solver}"


def test_splat_localize_is_resolved_lazily():
    """``splat.localize`` is an attribute resolved on first access: importing splat (or
    reading that attribute) loads the tracking layer but no solver until a solve runs."""
    out = subprocess.run(
        [sys.executable, "-c", "import splat, sys; assert 'splat.tracking' not in sys.modules; "
         "f = splat.localize; from splat.tracking import localize as g; assert f is g; "
         "print('\\n'.join(sys.modules))"],
        capture_output=True, text=True, check=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    loaded = out.stdout.split()
    assert "splat.tracking" in loaded
    assert not [m for m in loaded if any(m == s or m.startswith(s + ".") for s in SOLVER_MODULES)]


# splat's layers, lowest first; a module may import from its own layer and those below.
LAYERS = (("constants", "checks"), ("projection", "sh", "tiling"), ("raster",),
          ("rendering", "grad2d"), ("metrics", "io", "figures"), ("datasets",), ("train",),
          ("tracking",), ("cli",))


def test_splat_layers_import_only_downward():
    import ast
    from pathlib import Path

    import splat

    root = Path(splat.__file__).parent
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    up = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[0] not in rank:  # splat/__init__.py, splat/data/ (a build script)
            continue
        package = parts[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.level):
                continue
            target = package[:len(package) - node.level + 1] + tuple(
                (node.module or "").split(".")[:1] if node.module else ())
            assert target, f"{path}: imports from the splat package root"
            if rank.get(target[0], -1) > rank[parts[0]]:
                up.append(f"{'.'.join(parts)} imports {'.'.join(target)}")
    assert up == []
