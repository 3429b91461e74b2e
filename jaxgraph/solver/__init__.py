"""Nonlinear least squares on factor graphs: Levenberg-Marquardt and Gauss-Newton.

``values, info = solve(problem, initial_values, config)`` runs the whole optimisation as one
jit-compiled ``lax.while_loop``. Each loop trip solves the damped normal equations
``(H + lambda D) dx = -g`` with :mod:`jaxgraph.linear`, retracts ``X <- X Exp(dx)`` and
linearises at the candidate (the cost comes with it, so a trial costs one linearisation and
one linear solve). Steps are accepted on model fidelity like GTSAM's LM; see
``docs/solver.md`` for the exact rules, the configuration objects and the status codes.

Modules: ``config`` (settings), ``loop`` (the named steps of one trial), ``backward``
(differentiation modes and the compiled entry point), ``status`` (``SolveInfo``, ``STATUS``),
``api`` (``solve``, ``lower``, ``compile_solve``).
"""

from .api import compile_solve, lower, solve
from .config import (
    BACKWARD_MODES,
    FLAT_SETTINGS,
    LINEAR_SOLVERS,
    METHODS,
    BackwardConfig,
    DampingConfig,
    SolverConfig,
    TerminationConfig,
)
from .status import STATUS, SolveInfo

__all__ = [
    "solve",
    "lower",
    "compile_solve",
    "SolveInfo",
    "STATUS",
    "SolverConfig",
    "DampingConfig",
    "TerminationConfig",
    "BackwardConfig",
    "METHODS",
    "LINEAR_SOLVERS",
    "BACKWARD_MODES",
    "FLAT_SETTINGS",
]
