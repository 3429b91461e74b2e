"""Data files bundled with the package (see README.md in this folder for the source and
licence of each): ``splat.data.path("demo_scene.npz")`` is the scene ``splat demo`` trains on."""

from __future__ import annotations

from pathlib import Path

__all__ = ["path", "names", "BUNDLED_PREFIX", "resolve"]

_FOLDER = Path(__file__).resolve().parent

#: How a checkpoint names a bundled scene (``"bundled:demo_scene.npz"``): resolved again by
#: :func:`resolve` wherever the package is installed, so that a reinstall does not break it.
BUNDLED_PREFIX = "bundled:"


def names() -> list[str]:
    """File names of the bundled data sets (e.g. ``["demo_scene.npz"]``)."""
    return sorted(p.name for p in _FOLDER.iterdir() if p.suffix not in (".py", ".md") and p.is_file())


def path(name: str) -> Path:
    """Absolute path of the bundled file ``name`` (e.g. ``splat.data.path("demo_scene.npz")``),
    valid from a checkout and from an installed wheel.

    Raises:
      FileNotFoundError: naming the bundled files when ``name`` is not one of them.
    """
    if name not in names():
        raise FileNotFoundError(f"no bundled data file {name!r}; bundled: {names()}")
    return _FOLDER / name


def resolve(data: str) -> str:
    """``data`` as a path: ``"bundled:NAME"`` is :func:`path` of NAME, anything else is
    returned as it is."""
    if data.startswith(BUNDLED_PREFIX):
        return str(path(data[len(BUNDLED_PREFIX):]))
    return data
