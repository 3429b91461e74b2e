"""Factor-graph problems (see :mod:`jaxgraph.graph.problem`)."""

from .kinds import Kind, kind_of
from .problem import Linearization, Problem, VariableGroup

__all__ = ["Problem", "VariableGroup", "Linearization", "Kind", "kind_of"]
