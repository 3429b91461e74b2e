"""Data files bundled with the package (see README.md in this folder for sources and licences)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["path", "names"]

_FOLDER = Path(__file__).resolve().parent


def names() -> list[str]:
    """File names of the bundled data sets (e.g. ``["intel.g2o"]``)."""
    return sorted(p.name for p in _FOLDER.iterdir() if p.suffix not in (".py", ".md") and p.is_file())


def path(name: str) -> Path:
    """Absolute path of the bundled file ``name`` (e.g. ``jaxgraph.data.path("intel.g2o")``),
    valid from a checkout and from an installed wheel.

    Raises:
      FileNotFoundError: naming the bundled files when ``name`` is not one of them.
    """
    p = _FOLDER / name
    if name not in names():
        raise FileNotFoundError(f"no bundled data file {name!r}; bundled: {names()}")
    return p
