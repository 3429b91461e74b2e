"""The layers of docs/architecture.md hold: no module imports from a layer above its own, splat
imports only jaxgraph.lie, no library file is over 500 lines, and no library module compares a
kind or factor type by its name."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# jaxgraph's sub-packages (and top-level modules) by layer: a module may import from its own
# sub-package and from lower layers only (docs/architecture.md).
LAYERS = {"smallmat": 0, "data": 0, "lie": 1, "runtime": 1, "linear": 2, "graph": 3, "solver": 4,
          "io": 5, "algorithms": 5, "cli": 6}
LIBRARY = sorted(p for pkg in ("jaxgraph", "splat") for p in (ROOT / pkg).rglob("*.py"))


def _absolute_imports(path: Path):
    """Dotted names of every module ``path`` imports (relative imports resolved)."""
    package = path.relative_to(ROOT).with_suffix("").parts
    package = package[:-1] if package[-1] != "__init__" else package[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if node.module is None:  # from . import x: x is a module of the package
                for alias in node.names:
                    yield f"{module}.{alias.name}"
            else:
                yield module


def _layer(parts):
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


@pytest.mark.parametrize("path", [p for p in LIBRARY if p.parts[-2:] != ("jaxgraph", "__init__.py")],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_imports_go_down_the_layers(path):
    own = path.relative_to(ROOT).with_suffix("").parts
    for name in _absolute_imports(path):
        parts = name.split(".")
        if parts[0] != "jaxgraph":
            continue
        if own[0] == "splat":
            # splat/tracking (camera tracking) may reach the solver's public API, inside its
            # functions only (tests/splat/test_imports.py: import splat loads no solver)
            solver_api = own[:2] == ("splat", "tracking") and parts[:2] in (
                ["jaxgraph", "graph"], ["jaxgraph"])
            assert parts[:2] == ["jaxgraph", "lie"] or name == "jaxgraph" or solver_api, \
                f"{path}: splat imports {name}"
            continue
        mine, theirs = _layer(own), _layer(parts)
        assert theirs is not None or len(parts) == 1, f"{path}: {name} is in no layer of LAYERS"
        if len(parts) > 1 and parts[1] != own[1]:
            assert theirs < mine, f"{path} (layer {mine}) imports {name} (layer {theirs})"


def test_library_files_are_at_most_500_lines():
    long = {p.relative_to(ROOT).as_posix(): n for p in LIBRARY if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long


# a kind or factor type compared with its name: ``kind.name == "SE3"``, ``g.kind == "between"``,
# ``in ("SE3", "SO3")`` and the like
NAME_TESTS = re.compile(r"""(\.kind|\.name|kind_name|fkind)\s*(==|!=|\bin\b|\bnot in\b)\s*[(\[{]?\s*["'](SE2|SE3|SO2|SO3|between|prior|custom)""")


def test_no_library_code_compares_kind_or_factor_type_names():
    found = [f"{p.relative_to(ROOT)}:{k + 1}: {line.strip()}" for p in LIBRARY
             for k, line in enumerate(p.read_text().splitlines()) if NAME_TESTS.search(line)]
    assert not found, found
