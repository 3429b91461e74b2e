"""jaxgraph: differentiable optimization on manifolds in JAX."""

from . import factors, io, lie, linear, noise, robust
from .factors import FactorGroup
from .graph import Problem, VariableGroup
from .compile_cache import enable_compilation_cache
from .marginals import MarginalsInfo, marginals, marginals_with_info
from . import initialize
from .gnc import GNCInfo, gnc
from .solver import BackwardConfig, DampingConfig, SolveInfo, SolverConfig, TerminationConfig, solve

__all__ = [
    "lie",
    "linear",
    "io",
    "factors",
    "noise",
    "robust",
    "Problem",
    "VariableGroup",
    "FactorGroup",
    "SolveInfo",
    "SolverConfig",
    "DampingConfig",
    "TerminationConfig",
    "BackwardConfig",
    "solve",
    "marginals",
    "marginals_with_info",
    "MarginalsInfo",
    "enable_compilation_cache",
    "initialize",
    "gnc",
    "GNCInfo",
]
__version__ = "0.1.0"
