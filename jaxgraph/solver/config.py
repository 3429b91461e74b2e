"""Solver settings as frozen configuration objects (one source of truth for defaults).

Every setting is a field of one of four frozen dataclasses. A field marked ``static`` is part
of the compiled program (changing it recompiles); every other field is a traced float (changing
it does not recompile). The classes are pytrees: static fields are auxiliary data, the others
leaves, so a :class:`SolverConfig` is passed to ``jax.jit`` as an ordinary argument and the
static/dynamic split needs no separate list of static argument names.

The flat keyword arguments of :func:`jaxgraph.solve` (``tolerance=...``, ``backward=...``)
are the field names (or the ``flat`` alias recorded in the field's metadata).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Callable

import jax
import numpy as np

from ..runtime.compile_cache import _top_level

__all__ = [
    "DampingConfig",
    "TerminationConfig",
    "BackwardConfig",
    "SolverConfig",
    "METHODS",
    "LINEAR_SOLVERS",
    "BACKWARD_MODES",
    "ACCUMULATIONS",
]

METHODS = ("lm", "gn")
LINEAR_SOLVERS = ("auto", "host", "cholesky", "dense", "pcg")
ACCUMULATIONS = ("widest", "values")
BACKWARD_MODES = ("implicit", "unroll", "truncated")


def _static(default, flat: str | None = None):
    return field(default=default, metadata={"static": True, "flat": flat})


def _traced(default, flat: str | None = None):
    return field(default=default, metadata={"static": False, "flat": flat})


def _config(cls):
    """Freeze ``cls`` as a dataclass and register it as a pytree (static fields as aux data)."""
    cls = dataclass(frozen=True)(cls)
    fs = dataclasses.fields(cls)
    return jax.tree_util.register_dataclass(
        cls,
        data_fields=[f.name for f in fs if not f.metadata.get("static")],
        meta_fields=[f.name for f in fs if f.metadata.get("static")],
    )


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_nonnegative(owner: str, **values):
    # Only plain Python numbers are checked: the same classes carry traced arrays under jit.
    for name, v in values.items():
        if _is_number(v) and not v >= 0:
            raise ValueError(f"{owner}.{name} must be >= 0, got {v}")


@_config
class DampingConfig:
    """Levenberg-Marquardt damping ``lambda`` (GTSAM's defaults and rules).

    The damped system is ``(H + lambda D) dx = -g`` with ``D = I`` (or ``diag(H)`` clamped to
    ``>= 1e-6`` when ``diagonal_damping``). After an accepted step ``lambda`` is divided by
    ``damping_factor`` (not below ``min_damping``), after a rejected one multiplied by it; the
    solve stops when it reaches ``max_damping``. A step is accepted when its actual cost
    decrease exceeds ``min_model_fidelity`` times the decrease the quadratic model predicted.
    Ignored by Gauss-Newton. Every field is a Python scalar; ``lambda`` and its bounds have the
    units of ``H``'s diagonal (per squared tangent unit: the cost is dimensionless),
    ``damping_factor`` and ``min_model_fidelity`` are ratios.
    """

    initial_damping: float = _traced(1e-5)
    damping_factor: float = _traced(10.0)
    max_damping: float = _traced(1e5)
    min_damping: float = _traced(0.0)
    min_model_fidelity: float = _traced(1e-3)
    diagonal_damping: bool = _static(False)

    def __post_init__(self):
        _check_nonnegative("DampingConfig", initial_damping=self.initial_damping, min_damping=self.min_damping)
        if _is_number(self.damping_factor) and not self.damping_factor > 1:
            raise ValueError(f"DampingConfig.damping_factor must be > 1, got {self.damping_factor}")
        # a step is accepted when actual/predicted decrease > min_model_fidelity; at 1 or above no
        # step can pass on a quadratic cost, and the solve stopped "converged" at its start
        if _is_number(self.min_model_fidelity) and not 0 <= self.min_model_fidelity < 1:
            raise ValueError(f"DampingConfig.min_model_fidelity must be in [0, 1), got {self.min_model_fidelity}")


@_config
class TerminationConfig:
    """When the loop stops (``info.status`` says which rule fired).

    ``max_iterations``: the most *trials*, i.e. loop trips = linear solves, accepted or
    rejected (static: the length of the ``info.history_*`` arrays). GTSAM counts iterations of
    its outer loop instead, each one ending with an accepted step, so GTSAM's
    ``maxIterations`` is ``max_accepted_iterations`` here.  The default, 2000, lets
    dubrovnik-3-7 reach GTSAM's optimum with LM's default damping (1267 trials, 633 accepted:
    GTSAM's 633 iterations); under the default damping rules ``A`` accepted steps take at most
    ``2 A + 11`` trials, so it allows about 1000 GTSAM iterations (GTSAM's default is 100).
    ``max_accepted_iterations``: stop after that many accepted steps (status 8, not
    converged); ``None`` (default): no cap but ``max_iterations``.  Traced: changing it does
    not recompile.
    ``tolerance``: stop when an accepted step has ``cost - new_cost <= tolerance * cost``.
    ``absolute_tolerance``: stop when ``cost - new_cost <= absolute_tolerance``; ``None`` uses
    ``tolerance`` (GTSAM's defaults are both 1e-5), so ``tolerance=0.0`` disables both.
    ``gradient_tolerance``: stop when ``max |J^T W e| <= gradient_tolerance``.
    ``step_tolerance``: stop when an accepted step has ``|dx|_2 <= step_tolerance``.
    Every field is a Python scalar; the cost (half the sum of squared whitened residuals) is
    dimensionless, ``dx`` is in the variables' tangent units (metres, radians, ...).
    """

    max_iterations: int = _static(2000)
    max_accepted_iterations: int | None = _traced(None)
    tolerance: float = _traced(1e-5)
    absolute_tolerance: float | None = _traced(None)
    gradient_tolerance: float = _traced(0.0)
    step_tolerance: float = _traced(0.0)

    def __post_init__(self):
        m = self.max_iterations
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
            raise ValueError(f"max_iterations must be a positive integer, got {m!r}")
        object.__setattr__(self, "max_iterations", int(m))
        a = self.max_accepted_iterations
        # Python numbers are checked; arrays (the traced form, math.inf once resolved) pass.
        if isinstance(a, bool) or isinstance(a, numbers.Number) and not (
                isinstance(a, numbers.Integral) and a >= 1 or a == math.inf):
            raise ValueError(f"max_accepted_iterations must be a positive integer or None, got {a!r}")
        _check_nonnegative(
            "TerminationConfig",
            tolerance=self.tolerance,
            gradient_tolerance=self.gradient_tolerance,
            step_tolerance=self.step_tolerance,
        )
        if self.absolute_tolerance is not None:
            _check_nonnegative("TerminationConfig", absolute_tolerance=self.absolute_tolerance)

    def resolved(self) -> "TerminationConfig":
        """``absolute_tolerance=None`` replaced by ``tolerance`` and ``max_accepted_iterations=None``
        by infinity (one compiled program for all of them)."""
        changes = {}
        if self.absolute_tolerance is None:
            changes["absolute_tolerance"] = self.tolerance
        if self.max_accepted_iterations is None:
            changes["max_accepted_iterations"] = math.inf
        return dataclasses.replace(self, **changes) if changes else self


@_config
class BackwardConfig:
    """How reverse-mode derivatives of the solved values are computed (all static).

    ``mode``: ``"implicit"`` (implicit function theorem at the returned point, memory
    independent of the iterations), ``"unroll"`` (differentiate every trial of a fixed-length
    scan) or ``"truncated"`` (run ``max_iterations - truncated_iterations`` trials without
    gradient, then differentiate ``truncated_iterations`` undamped Gauss-Newton steps).
    ``implicit_max_iterations``: preconditioned-CG iterations of the implicit backward solve.
    See ``docs/solver.md``.
    """

    mode: str = _static("implicit", flat="backward")
    truncated_iterations: int = _static(10, flat="backward_iterations")
    implicit_max_iterations: int = _static(50)

    def __post_init__(self):
        if self.mode not in BACKWARD_MODES:
            raise ValueError(f"backward must be one of {BACKWARD_MODES}, got {self.mode!r}")
        for name in ("truncated_iterations", "implicit_max_iterations"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"BackwardConfig.{name} must be a positive integer, got {v!r}")
            object.__setattr__(self, name, int(v))


@_config
class SolverConfig:
    """All settings of one solve.

    ``method``: ``"lm"`` (Levenberg-Marquardt) or ``"gn"`` (Gauss-Newton); static.
    ``linear_solver``: ``"auto" | "host" | "cholesky" | "dense" | "pcg"``, the ``method`` of
    :func:`jaxgraph.linear.analyze` (``"auto"``: dense up to 300 unknowns, else the host
    CHOLMOD on CPU and the JAX multifrontal Cholesky elsewhere); static.  With ``"host"``,
    ``"dense"`` or ``"pcg"`` the problem is solved in its size class
    (:meth:`jaxgraph.Problem.sized`): one compiled program per size class, not per graph.
    ``schur``: eliminate point-like variable groups first by a Schur complement when the
    structure finds some worth it (:meth:`jaxgraph.graph.Structure.schur_groups`: bundle
    adjustment, visual odometry), solving the reduced system with ``linear_solver``; such
    problems are not solved in a size class. ``False``: one sparse solve of the whole
    system. Static.
    ``callback``: optional ``callback(iteration, cost, damping, step_norm, accepted)`` called
    from inside the compiled loop after every trial (a host call, see
    ``jaxgraph/solver/progress.py``; not called under reverse-mode differentiation); static, so keep
    the same function object to avoid recompiling.
    ``accumulation``: the dtype of the normal equations, the gradient and the total cost
    inside the loop; static.  ``"widest"`` (default): float64 whenever JAX's x64 mode is on,
    even for float32 values (residuals, Jacobians and values stay float32; the J^T J sums
    and the factorisation are where float32 fails: on manhattan the float32 H is indefinite
    by a few ulps at every step, and the clamped steps need 292 iterations instead of 6);
    without x64 mode, the values' dtype.  ``"values"``: everything in the values' dtype.
    """

    method: str = _static("lm")
    linear_solver: str = _static("auto")
    schur: bool = _static(True)
    damping: DampingConfig = field(default_factory=DampingConfig, metadata={"static": False})
    termination: TerminationConfig = field(default_factory=TerminationConfig, metadata={"static": False})
    backward: BackwardConfig = field(default_factory=BackwardConfig, metadata={"static": False})
    callback: Callable | None = _static(None)
    accumulation: str = _static("widest")

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.linear_solver not in LINEAR_SOLVERS:
            raise ValueError(f"linear_solver must be one of {LINEAR_SOLVERS}, got {self.linear_solver!r}")
        if self.accumulation not in ACCUMULATIONS:
            raise ValueError(f"accumulation must be one of {ACCUMULATIONS}, got {self.accumulation!r}")
        for name, cls in (("damping", DampingConfig), ("termination", TerminationConfig), ("backward", BackwardConfig)):
            if not isinstance(getattr(self, name), cls):
                raise TypeError(f"SolverConfig.{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")
        if self.callback is not None and not callable(self.callback):
            raise TypeError(f"callback must be callable, got {type(self.callback).__name__}")
        k, n = self.backward.truncated_iterations, self.termination.max_iterations
        if self.backward.mode == "truncated" and not k < n:
            raise ValueError(f"backward_iterations must be in [1, max_iterations) = [1, {n}), got {k}")

    def replace(self, **flat) -> "SolverConfig":
        """A copy with settings changed, by their flat names (``tolerance=1e-8``, ``backward="unroll"``)."""
        top, parts = {}, {}
        for key, value in flat.items():
            if key not in _FLAT:
                raise TypeError(f"unknown solver setting {key!r}; known: {sorted(_FLAT)}")
            part, name = _FLAT[key]
            if part is None:
                top[name] = value
            else:
                parts.setdefault(part, {})[name] = value
        for part, changes in parts.items():
            top[part] = dataclasses.replace(getattr(self, part), **changes)
        return dataclasses.replace(self, **top)

    def astype(self, dtype) -> "SolverConfig":
        """The traced settings as ``dtype`` scalars (the solve's dtype; static fields kept)."""
        try:  # remembered per (config, dtype): 40 us a call, a twentieth of a small solve
            key = (self, np.dtype(dtype))
            cached = _ASTYPE.get(key)
        except TypeError:  # array-valued settings (unhashable): no memo
            key = cached = None
        if cached is not None:
            return cached
        resolved = dataclasses.replace(self, termination=self.termination.resolved())
        # numpy scalars, not jnp: an eager jnp.asarray per field cost more than a small solve.
        out = jax.tree_util.tree_map(
            lambda x: x.astype(dtype) if isinstance(x, jax.Array) else np.asarray(x, dtype), resolved)
        if key is not None:
            if _top_level():
                # Remembered settings go to the device once (uncommitted, so they follow the
                # other arguments): as numpy scalars, each call copied all nine to it, about
                # 50 us of tinyGrid3D's 0.75 ms solve.
                out = jax.device_put(out)
            if len(_ASTYPE) >= 64:
                _ASTYPE.clear()
            _ASTYPE[key] = out
        return out


_ASTYPE: dict = {}  # (SolverConfig, dtype) -> its astype; frozen objects, safe to share


def _flat_names() -> dict:
    """Flat setting name -> (sub-config attribute or None, field name), from the classes."""
    out = {}
    for f in dataclasses.fields(SolverConfig):
        if isinstance(f.default_factory, type) and dataclasses.is_dataclass(f.default_factory):
            for g in dataclasses.fields(f.default_factory):
                out[g.metadata.get("flat") or g.name] = (f.name, g.name)
        else:
            out[f.name] = (None, f.name)
    return out


_FLAT = _flat_names()
FLAT_SETTINGS = tuple(_FLAT)
