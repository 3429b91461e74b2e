"""``jaxgraph.solve``: validation, configuration and the call of the compiled solver."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import linear
from ..graph.problem import Problem, size_class, values_dtype
from .backward import solve_compiled
from .config import SolverConfig
from .status import SolveInfo

__all__ = ["solve", "lower", "compile_solve"]


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
        ``max_iterations`` (trials), ``max_accepted_iterations`` (accepted steps, GTSAM's
        iterations), ``tolerance``, ``absolute_tolerance``, ``gradient_tolerance``,
        ``step_tolerance`` (:class:`TerminationConfig`); ``backward``,
        ``backward_iterations``, ``implicit_max_iterations`` (:class:`BackwardConfig`).

    Returns:
      ``(values, info)``: optimised values (same structure and dtype as
      ``initial_values``) and a :class:`SolveInfo`.

    ``jax.jit``, ``jax.vmap`` (over problems sharing a structure; each problem stops
    changing once it has converged) and repeated calls without retracing are supported;
    only the configuration's static fields and the problem structure recompile.
    """
    args = _sized(_arguments(problem, initial_values, config, settings))
    out, info = solve_compiled(*args)
    return args[0].unpad_values(out, problem), info


def lower(problem: Problem, initial_values: dict, config: SolverConfig | None = None, **settings):
    """Ahead-of-time form of :func:`solve`: ``(lowered, args)``.

    ``compiled = lowered.compile()`` builds the program (time it to measure compilation alone)
    and ``values, info = compiled(*args)`` runs it; the arguments are those :func:`solve`
    would use (validated, cast to the values' dtype, padded to the size class: then
    ``args[0]`` is the padded problem and ``args[0].unpad_values(values, problem)`` cuts
    the returned values back).
    """
    args = _sized(_arguments(problem, initial_values, config, settings))
    return solve_compiled.lower(*args), args


def compile_solve(problem: Problem, initial_values: dict, config: SolverConfig | None = None, **settings):
    """Compiled form of :func:`solve`: ``(compiled, args)``, then ``values, info = compiled(*args)``.

    As :func:`lower` followed by ``.compile()``, but while the persistent cache is on
    (:func:`jaxgraph.enable_compilation_cache`) the program comes from
    :mod:`jaxgraph.runtime.executable_cache` when a process has compiled it before, without tracing
    or lowering the solve again. ``args`` are as in :func:`lower`.
    """
    args = _sized(_arguments(problem, initial_values, config, settings))
    return solve_compiled.compile(*args), args


def _arguments(problem, initial_values, config, settings):
    """Validated ``(problem, values, config)`` for the compiled solver."""
    if config is None:
        config = _DEFAULT
    elif not isinstance(config, SolverConfig):
        raise TypeError(f"config must be a jaxgraph.SolverConfig, got {type(config).__name__}")
    if settings:
        config = _replaced(config, settings)
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a jaxgraph.Problem, got {type(problem).__name__}")
    problem.check_values(initial_values)
    problem.check_value_rows(initial_values)
    dtype = _dtype(initial_values)
    # an array already of the dtype is used as it is (jnp.asarray returns it too, in 7 us;
    # a weakly typed one it makes strong, as before)
    values = {k: v if isinstance(v, jax.Array) and v.dtype == dtype and not v.weak_type else jnp.asarray(v, dtype)
              for k, v in initial_values.items()}
    return problem, values, config.astype(dtype)


_DEFAULT = SolverConfig()  # frozen: one instance serves every call without a config

# A small solve's Python work is a fifth of its time (known_landmark_localization_20: about
# 0.15 of 0.75 ms), so what each call would recompute from the same objects is kept.
_REPLACED: dict = {}  # (config, settings) -> config.replace(**settings)


def _replaced(config: SolverConfig, settings: dict) -> SolverConfig:
    """``config.replace(**settings)``, remembered for hashable settings (frozen objects)."""
    try:
        key = (config, tuple(settings.items()))
        out = _REPLACED.get(key)
    except TypeError:  # an unhashable setting (an array): no memo
        return config.replace(**settings)
    if out is None:
        out = config.replace(**settings)
        if len(_REPLACED) >= 64:
            _REPLACED.clear()
        _REPLACED[key] = out
    return out


def _dtype(values: dict):
    """The solve's dtype: :func:`values_dtype`, read off the arrays' own dtypes where every value
    is a strongly typed array (``check_values`` has seen them share one); 10 us less a call."""
    dtypes = {x.dtype for x in values.values() if isinstance(x, (jax.Array, np.ndarray))
              and not getattr(x, "weak_type", False)}
    if len(dtypes) == 1 and len(values) and all(isinstance(x, (jax.Array, np.ndarray)) for x in values.values()):
        return jax.dtypes.canonicalize_dtype(dtypes.pop())
    return values_dtype(values)


def _sized(args):
    """``args`` on the problem padded to its size class when the linear solver takes the
    pattern as data (host / dense / PCG): graphs of one size class then share code."""
    problem, values, config = args
    if problem.is_sized or not _in_size_class(problem, config.linear_solver, config.schur):
        return args
    sized = problem.sized()
    return sized, sized.pad_values(values), config


def _in_size_class(problem: Problem, linear_solver: str, schur: bool = False) -> bool:
    memo = problem.__dict__.setdefault("_in_size_class", {})  # the structure decides: once per problem
    key = (linear_solver, schur)
    if key not in memo:
        memo[key] = _decide_size_class(problem, linear_solver, schur)
    return memo[key]


def _decide_size_class(problem: Problem, linear_solver: str, schur: bool) -> bool:
    if schur and problem.structure.schur_groups():
        return False  # points eliminated first: a fixed plan (jaxgraph.linear.analyze_schur)
    kinds = problem.structure.kinds
    n = sum(size_class(v.count) * kinds[v.name].tangent_dim for v in problem.variables)
    return linear.resolve_method(linear_solver, n) in linear.DYNAMIC_METHODS
