"""jaxgraph: differentiable optimization on manifolds in JAX.

The layers (docs/architecture.md) are imported on first use: ``from jaxgraph import lie``
loads the Lie groups alone (that is all :mod:`splat` needs), ``jaxgraph.solve`` the solver.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.1.0"

# public name -> (module, attribute or None for the module itself)
_PUBLIC = {
    "lie": ("jaxgraph.lie", None),
    "linear": ("jaxgraph.linear", None),
    "io": ("jaxgraph.io", None),
    "data": ("jaxgraph.data", None),
    "factors": ("jaxgraph.graph.catalog", None),
    "noise": ("jaxgraph.graph.noise", None),
    "robust": ("jaxgraph.graph.robust", None),
    "initialize": ("jaxgraph.algorithms.initialize", None),
    "distributed": ("jaxgraph.runtime.distributed", None),
    "Problem": ("jaxgraph.graph", "Problem"),
    "VariableGroup": ("jaxgraph.graph", "VariableGroup"),
    "FactorGroup": ("jaxgraph.graph", "FactorGroup"),
    "SolveInfo": ("jaxgraph.solver", "SolveInfo"),
    "SolverConfig": ("jaxgraph.solver", "SolverConfig"),
    "DampingConfig": ("jaxgraph.solver", "DampingConfig"),
    "TerminationConfig": ("jaxgraph.solver", "TerminationConfig"),
    "BackwardConfig": ("jaxgraph.solver", "BackwardConfig"),
    "solve": ("jaxgraph.solver", "solve"),
    "marginals": ("jaxgraph.algorithms.marginals", "marginals"),
    "marginals_with_info": ("jaxgraph.algorithms.marginals", "marginals_with_info"),
    "MarginalsInfo": ("jaxgraph.algorithms.marginals", "MarginalsInfo"),
    "enable_compilation_cache": ("jaxgraph.runtime.compile_cache", "enable_compilation_cache"),
    "jit": ("jaxgraph.runtime.compile_cache", "jit"),
    "set_tiered_compilation": ("jaxgraph.runtime.compile_cache", "set_tiered_compilation"),
    "gnc": ("jaxgraph.algorithms.gnc", "gnc"),
    "GNCInfo": ("jaxgraph.algorithms.gnc", "GNCInfo"),
}

__all__ = [
    "lie", "linear", "io", "factors", "noise", "robust", "Problem", "VariableGroup", "FactorGroup",
    "SolveInfo", "SolverConfig", "DampingConfig", "TerminationConfig", "BackwardConfig", "solve",
    "marginals", "marginals_with_info", "MarginalsInfo", "enable_compilation_cache", "jit", "initialize",
    "gnc", "GNCInfo", "set_tiered_compilation",
]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'jaxgraph' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = importlib.import_module(module)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value  # later look-ups are plain attribute reads
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))


# Module paths of earlier releases, importable for one more release with a DeprecationWarning
# that names the new place. The public modules of _PUBLIC (``jaxgraph.factors``, ``.noise``,
# ``.robust``, ``.initialize``, ``.distributed``) import at their public path without one.
_MOVED = {f"jaxgraph.{old}": f"jaxgraph.{new}" for old, new in (
    ("marginals", "algorithms.marginals"), ("gnc", "algorithms.gnc"), ("compile_cache", "runtime.compile_cache"),
    ("executable_cache", "runtime.executable_cache"), ("host_call", "runtime.host_call"),
    ("graph.manifolds", "graph.kinds"))}
_MODULE_ALIASES = {**{path: (new, True) for path, new in _MOVED.items()},
                   **{f"jaxgraph.{name}": (module, False) for name, (module, attribute) in _PUBLIC.items()
                      if attribute is None and module != f"jaxgraph.{name}"}}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str, deprecated: bool):
        self.target, self.deprecated = target, deprecated

    def create_module(self, spec):
        if self.deprecated:
            warnings.warn(f"{spec.name} moved to {self.target}; the old path goes away in the next release",
                          DeprecationWarning, stacklevel=3)
        module = importlib.import_module(self.target)
        self._spec = module.__spec__  # the import system overwrites it with the alias's spec
        return module

    def exec_module(self, module):
        module.__spec__ = self._spec  # the target module is already executed


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _MODULE_ALIASES:
            return None
        new, deprecated = _MODULE_ALIASES[fullname]
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new, deprecated))


if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
    sys.meta_path.append(_AliasFinder())
