"""Validation of problems and values: every error names the variable group or factor group,
the factor or variable index, and what was expected. Kind-specific rules (a unit quaternion, a
measurement's shape) are asked of the kind and the factor type, so they hold for every kind."""

from __future__ import annotations

import weakref
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from .factors import FactorGroup
from .kinds import kind_of
from .variables import VariableGroup

__all__ = ["validate_variables", "validate_group", "check_values", "check_value_rows"]


def validate_variables(variables):
    seen = set()
    for k, v in enumerate(variables):
        if not isinstance(v, VariableGroup):
            raise TypeError(f"variables[{k}] is a {type(v).__name__}, expected a VariableGroup")
        if v.name in seen:
            raise ValueError(f"two variable groups are named {v.name!r}; names must be unique")
        seen.add(v.name)
        kind_of(v.kind)
        if int(v.count) != v.count or v.count <= 0:
            raise ValueError(f"variable group {v.name!r}: count must be a positive integer, got {v.count}")
        bad = [i for i in v.fixed if not 0 <= i < v.count]
        if bad:
            raise ValueError(f"variable group {v.name!r}: fixed index {bad[0]} out of range (count {v.count})")


def _concrete(x):
    return not isinstance(x, jax.core.Tracer)


def validate_group(g: FactorGroup, kinds: dict, counts: dict):
    name = g.name
    M = g.count
    idx = g.indices.array
    for a, v in enumerate(g.variables):
        if v not in kinds:
            raise ValueError(
                f"factor group {name!r} refers to unknown variable group {v!r}; known groups: {sorted(kinds)}"
            )
        col = idx[:, a]
        bad = np.nonzero((col < 0) | (col >= counts[v]))[0]
        if bad.size:
            f = int(bad[0])
            raise ValueError(
                f"factor group {name!r}, factor {f}: index {int(col[f])} out of range for variable group "
                f"{v!r} ({counts[v]} variables)"
            )
    for a in range(idx.shape[1]):
        for b in range(a + 1, idx.shape[1]):
            same = np.nonzero((idx[:, a] == idx[:, b]) & (g.variables[a] == g.variables[b]))[0]
            if same.size:
                f = int(same[0])
                raise ValueError(
                    f"factor group {name!r}, factor {f} connects variable {g.variables[a]!r}[{int(idx[f, a])}] "
                    "to itself"
                )
    slot_kinds = [kinds[v] for v in g.variables]
    g.type.check(g, slot_kinds)
    rdim = g.type.residual_dim(slot_kinds)
    if g.noise is not None:
        msg = g.noise.check(rdim, M)
        if msg:
            raise ValueError(f"factor group {name!r}: {msg}")
    if g.robust is not None:
        msg = g.robust.check(M)
        if msg:
            raise ValueError(f"factor group {name!r}: {msg}")
    for leaf in jax.tree_util.tree_leaves((g.measurement, g.noise, g.robust)):
        if _concrete(leaf) and jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            a = np.asarray(leaf)
            if not np.all(np.isfinite(a)):
                bad = np.argwhere(~np.isfinite(a))[0]
                where = f"factor {int(bad[0])}" if a.ndim and a.shape[0] == M else "shared parameter"
                raise ValueError(f"factor group {name!r}, {where}: non-finite number in measurement/noise/robust parameters")


def check_values(problem, values) -> None:
    """Raise a clear error unless ``values`` matches the problem's variable groups (keys,
    shapes ``[count, param_dim]``, one float dtype)."""
    if not isinstance(values, Mapping):
        raise TypeError(f"values must be a dict of arrays keyed by variable group, got {type(values).__name__}")
    expected = {v.name for v in problem.variables}
    if set(values) != expected:
        missing, extra = expected - set(values), set(values) - expected
        raise ValueError(f"values keys do not match the problem: missing {sorted(missing)}, unexpected {sorted(extra)}")
    dtypes = set()
    for v in problem.variables:
        x = values[v.name]
        k = problem.structure.kinds[v.name]
        shape = tuple(jnp.shape(x))
        if shape != (v.count, k.param_dim):
            raise ValueError(
                f"values[{v.name!r}] must have shape ({v.count}, {k.param_dim}) "
                f"({v.count} {k.name} variables), got {shape}"
            )
        # an array's own dtype (jnp.result_type gives the same for arrays, 25x slower)
        dt = x.dtype if isinstance(x, (jax.Array, np.ndarray)) else jnp.result_type(x)
        if not jnp.issubdtype(dt, jnp.floating):
            raise TypeError(f"values[{v.name!r}] must be floating point, got {dt}")
        dtypes.add(dt)
    if len(dtypes) > 1:
        raise TypeError(f"all values must share one float dtype, got {sorted(map(str, dtypes))}")


def check_value_rows(problem, values) -> None:
    """Reject non-finite rows and rows that are not points of their kind (a zero quaternion),
    for every kind (concrete values only: under ``jit`` or ``vmap`` such input gives status 6
    instead)."""
    for v in problem.variables:
        x = values[v.name]
        if not _concrete(x):
            continue
        kind = problem.structure.kinds[v.name]
        if isinstance(x, jax.Array) and _passed(x, kind):
            continue
        a = np.asarray(x)
        if not np.isfinite(a).all():  # one whole-array test; rows are searched only to name one
            bad = np.nonzero(~np.all(np.isfinite(a), axis=1))[0]
            raise ValueError(
                f"initial values[{v.name!r}][{int(bad[0])}] ({kind.name} variable {int(bad[0])}) is not finite: "
                f"{a[bad[0]].tolist()} ({bad.size} such variable(s))"
            )
        bad, what = kind.invalid_rows(a)
        if bad.size:
            raise ValueError(
                f"initial values[{v.name!r}][{int(bad[0])}] ({kind.name} variable {int(bad[0])}) has a {what} "
                f"({bad.size} such variable(s))"
            )
        if isinstance(x, jax.Array):
            _remember_passed(x, kind)


# Arrays whose rows passed check_value_rows, per kind: a jax.Array cannot change, so the same
# initial values solved again (a loop over problems or measurements from one start) are not
# read back and searched again, about 50 of a small solve's 700 us once its program has run.
# An entry leaves with its array (numpy arrays can change in place and are always checked).
_PASSED: dict = {}  # (id(array), kind) -> weak reference to the array


def _passed(x, kind) -> bool:
    ref = _PASSED.get((id(x), kind))
    return ref is not None and ref() is x


def _remember_passed(x, kind) -> None:
    key = (id(x), kind)
    try:
        _PASSED[key] = weakref.ref(x, lambda _, key=key: _PASSED.pop(key, None))
    except TypeError:  # an array type without weak references: checked every time
        pass
