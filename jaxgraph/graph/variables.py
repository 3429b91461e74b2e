"""Variable groups: ``count`` variables of one kind (see :mod:`jaxgraph.graph.kinds`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kinds import Kind, KindSpec, kind_of

__all__ = ["VariableGroup"]


@dataclass(frozen=True)
class VariableGroup:
    """``count`` variables of one kind: a ``jaxgraph.lie`` group class (``lie.SE3``, ...), a
    Euclidean dimension, or an alias ``"SE2"``, ``"SE3"``, ``"SO3"``, ``"R<n>"`` (see
    :mod:`jaxgraph.graph.kinds` for the values layout of each), or a :class:`~jaxgraph.graph.kinds.Kind`.

    ``fixed`` lists indices held constant by the solver (g2o ``FIX``). ``kind`` stays as
    declared (the alias ``"SE2"`` for a g2o file, a class, a dimension); :attr:`manifold` is its
    :class:`~jaxgraph.graph.kinds.Kind` object. The group's values are one float array
    ``[count, param_dim]`` (float32 or float64, e.g. ``[N, 7]`` ``wxyz_xyz`` rows for ``"SE3"``)
    under ``name`` in the values dict; ``fixed`` is stored as a tuple of Python ints.
    """

    name: str
    kind: KindSpec
    count: int
    fixed: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "fixed", tuple(int(i) for i in np.asarray(self.fixed, dtype=np.int64).ravel()))

    @property
    def manifold(self) -> Kind:
        """The :class:`~jaxgraph.graph.kinds.Kind` object of the declared kind."""
        return kind_of(self.kind)
