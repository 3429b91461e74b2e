"""Helpers for defining and combining group classes (the names of ``jaxlie.utils``)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Callable, Type, TypeVar

import jax
import jax.numpy as jnp

from ._base import MatrixLieGroup, broadcast_leading_axes

try:  # flax is optional: when it is installed, group objects serialise with flax.serialization.
    from flax import serialization as _flax_serialization
except ImportError:  # pragma: no cover - exercised only without flax
    _flax_serialization = None

T = TypeVar("T", bound=MatrixLieGroup)


def get_epsilon(dtype) -> float:
    """jaxlie's "close to zero" tolerance for a float dtype: 1e-5 (float32), 1e-10 (float64).

    Our maps do not use it (they switch to series by dtype, see docs/lie.md); it is here for
    code written against jaxlie.
    """
    return 1e-5 if jnp.finfo(dtype).bits <= 32 else 1e-10


def _register_flax(cls: type, field: str) -> None:
    def to_state_dict(x):
        return {field: _flax_serialization.to_state_dict(getattr(x, field))}

    def from_state_dict(x, state):
        if set(state) != {field}:
            raise ValueError(f"{cls.__name__} state dict must have exactly the key {field!r}, got {sorted(state)}")
        return cls(_flax_serialization.from_state_dict(getattr(x, field), state[field]))

    _flax_serialization.register_serialization_state(cls, to_state_dict, from_state_dict)


# Public attributes that stay plain Python: they return Python values or convert objects.
_NOT_COMPILED = frozenset({"parameters", "get_batch_axes", "from_jaxlie", "to_jaxlie"})
# Arguments that set shapes or dtypes, so jit treats them as static.
_STATIC_ARGUMENTS = ("batch_axes", "dtype")


def _jit(f, skip_first: bool):
    parameters = list(inspect.signature(f).parameters)
    static = [k for k, a in enumerate(parameters) if a in _STATIC_ARGUMENTS or (skip_first and k == 0)]
    jitted = jax.jit(f, static_argnums=static, static_argnames=[parameters[k] for k in static if k > 0 or not skip_first])

    @functools.wraps(f)
    def call(*args, **kwargs):
        # Under a trace (jit, grad, vmap) call the function itself: a nested jit would add a
        # call to trace, cache and lower per use (the solver's linearisation makes over a
        # thousand such calls), and XLA inlines it anyway.
        if any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves((args, kwargs))):
            return f(*args, **kwargs)
        return jitted(*args, **kwargs)

    return call


def _compile_methods(cls: type) -> None:
    """jit every public method (as jaxlie does): one dispatch per call in eager code instead of
    one per array operation; inside a jitted function they inline as usual."""
    for name in dir(cls):
        if name.startswith("_") or name in _NOT_COMPILED:
            continue
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, classmethod):
            setattr(cls, name, classmethod(_jit(attr.__func__, skip_first=True)))
        elif isinstance(attr, staticmethod):
            setattr(cls, name, staticmethod(_jit(attr.__func__, skip_first=False)))
        elif inspect.isfunction(attr):
            setattr(cls, name, _jit(attr, skip_first=False))


def register_lie_group(
    *, matrix_dim: int, parameters_dim: int, tangent_dim: int, space_dim: int
) -> Callable[[Type[T]], Type[T]]:
    """Class decorator: set the dimensions and make the class a frozen dataclass pytree.

    The class declares exactly one field, its parameter array (e.g. ``wxyz: jax.Array``). The
    field is the pytree's only child (key path ``.wxyz``, so orbax and ``tree_flatten_with_path``
    see jaxlie's names), and with flax installed the class is registered with
    ``flax.serialization`` (state dict ``{"wxyz": array}``, as jaxlie's). Public methods are
    jit-compiled (``batch_axes`` and ``dtype`` arguments static).
    """

    def wrap(cls: Type[T]) -> Type[T]:
        cls.matrix_dim, cls.parameters_dim, cls.tangent_dim, cls.space_dim = (
            matrix_dim,
            parameters_dim,
            tangent_dim,
            space_dim,
        )
        cls = dataclasses.dataclass(frozen=True, repr=False)(cls)
        fields = [f.name for f in dataclasses.fields(cls)]
        if len(fields) != 1:
            raise TypeError(f"{cls.__name__} must declare exactly one parameter field, got {fields}")
        cls._parameters_field = fields[0]
        jax.tree_util.register_dataclass(cls, data_fields=fields, meta_fields=[])
        _compile_methods(cls)
        if _flax_serialization is not None:
            _register_flax(cls, fields[0])
        return cls

    return wrap


__all__ = ["get_epsilon", "register_lie_group", "broadcast_leading_axes"]
