"""``jaxgraph.solve``: validation, configuration and the call of the compiled solver."""

from __future__ import annotations

import jax.numpy as jnp

from .. import linear
from ..graph.problem import Problem, _dtype_of, size_class
from .backward import solve_compiled
from .config import SolverConfig
from .status import SolveInfo

__all__ = ["solve"]


def solve(problem: Problem, initial_values: dict, config: SolverConfig | None = None, **settings) -> tuple[dict, SolveInfo]:
    """Minimise the problem's cost from ``initial_values``.

    Args:
      problem: a :class:`jaxgraph.Problem` (e.g. from :func:`jaxgraph.io.read_g2o`).
      initial_values: dict ``group name -> [count, param_dim]`` float array; its dtype
        (float32 or float64) is the dtype of the whole solve.
      config: a :class:`jaxgraph.SolverConfig` (default: ``SolverConfig()``, GTSAM's LM
        defaults).
      **settings: flat overrides of ``config`` by setting name, a convenience for
        ``config.replace(**settings)``: ``method``, ``linear_solver``, ``callback``;
        ``initial_damping``, ``damping_factor``, ``max_damping``, ``min_damping``,
        ``min_model_fidelity``, ``diagonal_damping`` (:class:`DampingConfig`);
        ``max_iterations``, ``tolerance``, ``absolute_tolerance``, ``gradient_tolerance``,
        ``step_tolerance`` (:class:`TerminationConfig`); ``backward``,
        ``backward_iterations``, ``implicit_max_iterations`` (:class:`BackwardConfig`).

    Returns:
      ``(values, info)``: optimised values (same structure and dtype as
      ``initial_values``) and a :class:`SolveInfo`.

    ``jax.jit``, ``jax.vmap`` (over problems sharing a structure; each problem stops
    changing once it has converged) and repeated calls without retracing are supported;
    only the configuration's static fields and the problem structure recompile.
    """
    if config is None:
        config = SolverConfig()
    elif not isinstance(config, SolverConfig):
        raise TypeError(f"config must be a jaxgraph.SolverConfig, got {type(config).__name__}")
    if settings:
        config = config.replace(**settings)
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a jaxgraph.Problem, got {type(problem).__name__}")
    problem.check_values(initial_values)
    dtype = _dtype_of(initial_values)
    values = {k: jnp.asarray(v, dtype) for k, v in initial_values.items()}
    if problem.is_sized or not _in_size_class(problem, config):
        return solve_compiled(problem, values, config.astype(dtype))
    sized = problem.sized()
    out, info = solve_compiled(sized, sized.pad_values(values), config.astype(dtype))
    return sized.unpad_values(out, problem), info


def _in_size_class(problem: Problem, config: SolverConfig) -> bool:
    """True when the linear solver takes the pattern as data (host / dense / pcg): the solve
    then runs on the problem padded to its size class, so graphs of one class share code."""
    n = sum(size_class(v.count) for v in problem.variables) * problem.structure.block_dim
    return linear.resolve_method(config.linear_solver, n) in linear.DYNAMIC_METHODS
