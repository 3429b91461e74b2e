"""Factor groups: stacked factors of one type, with residuals in tangent space.

A :class:`FactorGroup` holds ``M`` factors of one :class:`FactorType`. Its static part (the
type, which variables each factor touches) lives in the pytree's auxiliary data; its float
parts (measurements, noise parameters, robust thresholds, user data) are the pytree's leaves,
so ``jax.grad`` / ``jax.vmap`` see exactly the numbers a user may want to differentiate or
batch.

Factor types are objects; each one carries its residual, its Jacobians, how its measurement
is checked and prepared, and whether it fixes absolute values (the gauge). No code compares
type names. Built-in types (analytic Jacobians, right perturbations ``X <- X Exp(d)``),
defined for every kind with a matrix form (Lie groups, Euclidean vectors, products of them):

* :class:`Between` ``r = Log(Z^-1 X_i^-1 X_j)`` (GTSAM's ``BetweenFactor``; for vectors
  ``x_j - x_i - z``): ``dr/dd_j = Jr^-1(r)``, ``dr/dd_i = -Jr^-1(r) Ad(X_j^-1 X_i)``.
* :class:`Prior` ``r = Log(Z^-1 X)`` (for vectors ``x - z``): ``dr/dd = Jr^-1(r)``.
* :class:`Custom`: a user residual in JAX for one factor; Jacobians come from forward-mode
  autodiff through the kinds' retractions.

:func:`between`, :func:`prior` and :func:`custom` build groups of these types.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..smallmat import matmul
from .kinds import Kind
from .noise import NoiseModel
from .robust import RobustLoss

__all__ = ["FactorGroup", "FactorType", "MatrixFactor", "Between", "Prior", "Custom", "between", "prior", "custom"]


class StaticIndices:
    """A read-only integer array usable as static (hashable) pytree auxiliary data."""

    __slots__ = ("array", "_key")

    def __init__(self, array):
        a = np.array(array, dtype=np.int64, copy=True)
        a.setflags(write=False)
        self.array = a
        self._key = (a.shape, hashlib.sha1(a.tobytes()).hexdigest())

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, StaticIndices) and self._key == other._key

    def __repr__(self):
        return f"StaticIndices(shape={self.array.shape})"

    def _cache_key(self):
        """What :meth:`__eq__` compares (``jaxgraph.runtime.executable_cache``)."""
        return self._key


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


class FactorType:
    """What a factor computes. Subclasses implement :meth:`residual_and_jacobians`,
    :meth:`residual_dim` and may refine :meth:`check`, :meth:`prepare` and :meth:`absolute`.
    Instances are static data (hashable, compared by value)."""

    def residual_dim(self, kinds: Sequence[Kind]) -> int:
        """Length of one factor's residual, given the kinds of its slots."""
        raise NotImplementedError

    def absolute(self, slots: int) -> bool:
        """True when a factor with ``slots`` variables fixes absolute values (a gauge), as a
        prior does; the gauge decision of :class:`jaxgraph.Problem` asks this."""
        return False

    def check(self, group: "FactorGroup", kinds: Sequence[Kind]) -> None:
        """Raise a ValueError/TypeError naming ``group`` (and the factor) when its measurement
        does not fit the type and the slots' kinds."""

    def prepare(self, measurement, kinds: Sequence[Kind], dtype):
        """The measurement in the form :meth:`residual_and_jacobians` reads in a solve (done
        once per solve); float leaves cast to ``dtype`` here."""
        return jax.tree_util.tree_map(
            lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else jnp.asarray(x),
            measurement)

    def residual_and_jacobians(self, group: "FactorGroup", kinds: Sequence[Kind], params, with_jacobians=True):
        """Unwhitened residuals ``r[M, rdim]`` and per-slot Jacobians ``[M, rdim, tangent_dim_a]``
        (``None`` without ``with_jacobians``); ``params[a]`` is ``[M, param_dim_a]``."""
        raise NotImplementedError


class MatrixFactor(FactorType):
    """Factors whose residual is the logarithm of an error matrix ``E``, on one kind with a
    matrix form. The solver takes ``log`` and ``Jr^-1`` of all such groups of one kind
    together (:meth:`error`, then :meth:`jacobians`), so their (large) code compiles once."""

    def residual_dim(self, kinds):
        return kinds[0].tangent_dim

    def check(self, group, kinds):
        kind = kinds[0]
        if any(k != kind for k in kinds):
            raise TypeError(f"factor group {group.name!r} ({self}) connects variables of different kinds "
                            f"{[k.name for k in kinds]}")
        if not kind.has_matrix_form:
            raise TypeError(f"factor group {group.name!r} ({self}) needs a kind with a matrix form (a Lie group, "
                            f"a vector, or a product of them), but variable group {group.variables[0]!r} is {kind.name}")
        shape = tuple(jnp.shape(group.measurement))
        if shape != (group.count, kind.param_dim):
            raise ValueError(
                f"factor group {group.name!r} ({self} on {kind.name} variable group {group.variables[0]!r}): "
                f"measurement must have shape ({group.count}, {kind.param_dim}), one {kind.name} parameter vector "
                f"per factor, got {shape}")
        if _concrete(group.measurement):
            rows = np.asarray(group.measurement)
            if np.isfinite(rows).all():  # non-finite numbers are reported by the generic check
                bad, what = kind.invalid_rows(rows)
                if bad.size:
                    raise ValueError(f"factor group {group.name!r}, factor {int(bad[0])}: {what} in the measurement "
                                     f"({bad.size} such factor(s)); a measurement must be a {kind.name} element")

    def prepare(self, measurement, kinds, dtype):
        """``Z^-1`` as matrices ``[M, k, k]``: once per solve instead of once per linearisation."""
        kind = kinds[0]
        return kind.inverse_matrix(kind.to_matrix(jnp.asarray(measurement, dtype)))

    def error(self, group, kind: Kind, params):
        """``(E, context)``: error matrices ``E[M, k, k]`` (``r = log E``) and what
        :meth:`jacobians` needs. ``params[a]`` are rows ``[M, param_dim]`` or matrices."""
        raise NotImplementedError

    def jacobians(self, group, kind: Kind, context, Jinv) -> tuple:
        """Per-slot Jacobians from ``context`` and ``Jinv = Jr(r)^-1 [M, t, t]``."""
        raise NotImplementedError

    def residual_and_jacobians(self, group, kinds, params, with_jacobians=True):
        E, context = self.error(group, kinds[0], params)
        r = kinds[0].log(E)
        if not with_jacobians:
            return r, None
        return r, self.jacobians(group, kinds[0], context, kinds[0].right_jacobian_inverse(r))


def _matrix(kind: Kind, x):
    # Parameters are [M, param_dim]; callers may pass matrices [M, k, k] already converted.
    return x if x.ndim == 3 else kind.to_matrix(x)


def _measurement_inverse(kind: Kind, z, dtype):
    # A prepared problem stores Z^-1 as a matrix (see MatrixFactor.prepare); raw rows otherwise.
    z = jnp.asarray(z, dtype)
    return z if z.ndim == 3 else kind.inverse_matrix(kind.to_matrix(z))


@dataclass(frozen=True)
class Between(MatrixFactor):
    """``r = Log(Z^-1 X_i^-1 X_j)``, two slots of one kind."""

    def __str__(self):
        return "between"

    def error(self, group, kind, params):
        Xi, Xj = _matrix(kind, params[0]), _matrix(kind, params[1])
        XiXj = matmul(kind.inverse_matrix(Xi), Xj)
        return matmul(_measurement_inverse(kind, group.measurement, Xi.dtype), XiXj), XiXj

    def jacobians(self, group, kind, context, Jinv):
        # Xi Exp(d) moves the error by Exp(-Ad(E^-1 Z^-1) d) on the left of E = Z^-1 Xi^-1 Xj,
        # and E^-1 Z^-1 = Xj^-1 Xi.
        Ad = kind.adjoint(kind.inverse_matrix(context))
        return (-matmul(Jinv, Ad), Jinv)


@dataclass(frozen=True)
class Prior(MatrixFactor):
    """``r = Log(Z^-1 X)``, one slot: fixes absolute values."""

    def __str__(self):
        return "prior"

    def absolute(self, slots):
        return True

    def error(self, group, kind, params):
        X = _matrix(kind, params[0])
        return matmul(_measurement_inverse(kind, group.measurement, X.dtype), X), None

    def jacobians(self, group, kind, context, Jinv):
        return (Jinv,)


@dataclass(frozen=True)
class Custom(FactorType):
    """A user residual ``fn(params, data) -> r[dim]`` for one factor; a factor of one slot
    fixes absolute values (it is a prior in all but name).

    Compiled solves of problems with custom factors are kept on disk like any other
    (:mod:`jaxgraph.runtime.executable_cache`), keyed by :meth:`_cache_key`: the function's
    code (bytecode, constants, names, nested functions), module, qualified name, default
    arguments, closure cells and the globals it names, when all of these are plain data
    (numbers, strings, tuples, numpy/JAX arrays by their bytes), functions keyed the same way,
    or modules and objects of the standard library, jax, numpy and jaxgraph. A closure or
    global holding anything else (an instance of a user class, a user module, a ``jax.jit``
    or ``custom_jvp`` wrapper) makes the function unkeyable: such solves are not stored and
    compile in every new process (JAX's own caches still serve them).
    """

    fn: Callable
    dim: int

    def __str__(self):
        return "custom"

    def _cache_key(self):
        """The function's key and ``dim`` (:func:`jaxgraph.runtime.executable_cache.function_key`;
        raises ``Uncacheable`` for a function it cannot key). Equal keys trace equal programs;
        ``__eq__`` stays stricter (the same function object)."""
        from ..runtime.executable_cache import function_key

        return (function_key(self.fn), self.dim)

    def residual_dim(self, kinds):
        return self.dim

    def absolute(self, slots):
        return slots == 1

    def check(self, group, kinds):
        M, name = group.count, group.name
        for leaf in jax.tree_util.tree_leaves(group.measurement):
            if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != M:
                raise ValueError(
                    f"factor group {name!r} (custom): every data leaf needs leading axis {M} (one row per "
                    f"factor), got a leaf of shape {jnp.shape(leaf)}")
        if self.dim <= 0:
            raise ValueError(f"factor group {name!r} (custom): residual_dim must be a positive integer")
        one_params = tuple(jax.ShapeDtypeStruct((k.param_dim,), jnp.float32) for k in kinds)
        one_data = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(jnp.shape(x)[1:], jnp.result_type(x)), group.measurement)
        try:
            out = jax.eval_shape(self.fn, one_params, one_data)
        except Exception as exc:  # report which group failed, keep the original cause
            raise ValueError(f"factor group {name!r} (custom): the residual function failed on one factor: {exc}") from exc
        if tuple(out.shape) != (self.dim,):
            raise ValueError(f"factor group {name!r} (custom): residual function returns shape {tuple(out.shape)}, "
                             f"expected ({self.dim},) (residual_dim)")

    def residual_and_jacobians(self, group, kinds, params, with_jacobians=True):
        fn = self.fn
        r = jax.vmap(lambda ps, d: fn(tuple(ps), d))(tuple(params), group.measurement)
        if not with_jacobians:
            return r, None

        def one_jac(ps, d):
            def perturbed(deltas):
                return fn(tuple(k.retract(p, dl) for k, p, dl in zip(kinds, ps, deltas)), d)

            zeros = tuple(jnp.zeros((k.tangent_dim,), p.dtype) for k, p in zip(kinds, ps))
            return jax.jacfwd(perturbed)(zeros)

        return r, tuple(jax.vmap(one_jac)(tuple(params), group.measurement))


@jax.tree_util.register_pytree_node_class
class FactorGroup:
    """``M`` stacked factors of one type.

    Attributes:
      name: label used in error messages and inspection helpers.
      type: the :class:`FactorType` (``Between()``, ``Prior()``, ``Custom(fn, dim)``, ...).
      variables: names of the variable group of each slot (``k`` slots).
      indices: ``int64[M, k]`` (numpy, static): index of the variable in its group, per slot.
      measurement: leaf pytree: ``[M, param_dim]`` for between and prior factors, any pytree
        with leading axis ``M`` for custom factors (passed to the residual per factor).
      noise: a :mod:`jaxgraph.noise` model (leaves ``[]``/``[M, ...]``) or ``None`` (unit).
      robust: a :mod:`jaxgraph.robust` loss or ``None``.
    """

    def __init__(self, name: str, type: FactorType, variables: Sequence[str], indices, measurement: Any,
                 noise: NoiseModel | None, robust: RobustLoss | None = None):
        if not isinstance(type, FactorType):
            raise TypeError(f"factor group {name!r}: type must be a jaxgraph.factors.FactorType (Between(), "
                            f"Prior(), Custom(fn, dim), ...), got {type!r}")
        self.name = str(name)
        self.type = type
        self.variables = tuple(variables)
        self.indices = indices if isinstance(indices, StaticIndices) else StaticIndices(indices)
        self.measurement = measurement
        self.noise = noise
        self.robust = robust

    @property
    def count(self) -> int:
        return int(self.indices.array.shape[0])


    def tree_flatten(self):
        return (self.measurement, self.noise, self.robust), (self.name, self.type, self.variables, self.indices)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.name, obj.type, obj.variables, obj.indices = aux
        obj.measurement, obj.noise, obj.robust = children
        return obj

    def residual_and_jacobians(self, kinds: Sequence[Kind], params: Sequence[jax.Array], with_jacobians=True):
        """Unwhitened residuals ``r[M, rdim]`` and per-slot Jacobians ``[M, rdim, tangent_dim_a]``
        of this group's factors (``params[a]``: ``[M, param_dim_a]``, the value of slot ``a`` of
        every factor; ``kinds[a]`` its kind); see :meth:`FactorType.residual_and_jacobians`."""
        return self.type.residual_and_jacobians(self, kinds, params, with_jacobians)

    def replace(self, **changes) -> "FactorGroup":
        """A copy with some leaves (``measurement``, ``noise``, ``robust``) or its ``indices``
        replaced."""
        fields = {"measurement": self.measurement, "noise": self.noise, "robust": self.robust,
                  "indices": self.indices}
        for k, v in changes.items():
            if k not in fields:
                raise TypeError(f"FactorGroup.replace: cannot replace {k!r}")
            fields[k] = v
        return FactorGroup(self.name, self.type, self.variables, fields["indices"], fields["measurement"],
                           fields["noise"], fields["robust"])

    def __repr__(self):
        return (f"FactorGroup(name={self.name!r}, type={self.type}, count={self.count}, "
                f"variables={self.variables}, noise={self.noise!r}, robust={self.robust!r})")


def _as_index(x, name):
    a = np.asarray(x)
    if a.ndim == 0:
        a = a[None]
    if a.ndim != 1:
        raise ValueError(f"factor group {name!r}: indices must be a 1-D integer array, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.equal(np.mod(a, 1), 0)):
            raise ValueError(f"factor group {name!r}: indices must be integers, got dtype {a.dtype}")
    return a.astype(np.int64)


def between(
    variable: str,
    i,
    j,
    measurement,
    noise: NoiseModel,
    robust: RobustLoss | None = None,
    *,
    name: str = "between",
) -> FactorGroup:
    """Between factors ``r = Log(Z^-1 X_i^-1 X_j)`` (vectors: ``x_j - x_i - z``).

    Args:
      variable: name of the variable group (any kind with a matrix form: a Lie group, a
        vector, a product of them).
      i, j: ``int[M]`` indices into that group.
      measurement: ``[M, param_dim]`` relative poses ``Z = X_i^-1 X_j`` in the group's
        parametrisation (SE2 ``(x, y, theta)``, SE3 ``(qw, qx, qy, qz, x, y, z)``).
      noise: noise model on the tangent residual (SE3 order: translation, rotation).
      robust: optional robust loss.
    """
    i = _as_index(i, name)
    j = _as_index(j, name)
    if i.shape != j.shape:
        raise ValueError(f"factor group {name!r}: i has {i.shape[0]} entries but j has {j.shape[0]}")
    return FactorGroup(name, Between(), (variable, variable), np.stack([i, j], 1), measurement, noise, robust)


def prior(
    variable: str,
    index,
    measurement,
    noise: NoiseModel,
    robust: RobustLoss | None = None,
    *,
    name: str = "prior",
) -> FactorGroup:
    """Prior factors ``r = Log(Z^-1 X)`` (vectors: ``x - z``) on any kind with a matrix form
    (a Lie group, a vector, a product of them); ``index int[M]``, ``measurement [M, param_dim]``
    in the variables' row layout. Priors fix the gauge: a problem with one gets no anchor."""
    index = _as_index(index, name)
    return FactorGroup(name, Prior(), (variable,), index[:, None], measurement, noise, robust)


def custom(
    residual: Callable,
    variables: Sequence[tuple[str, Any]],
    data: Any,
    noise: NoiseModel | None,
    residual_dim: int,
    robust: RobustLoss | None = None,
    *,
    name: str = "custom",
) -> FactorGroup:
    """User factors with autodiff Jacobians.

    Args:
      residual: ``residual(params, data) -> r[residual_dim]`` for ONE factor, written in
        JAX; ``params`` is a tuple with one parameter vector per slot (see
        :mod:`jaxgraph.graph.kinds` for parametrisations), ``data`` the factor's slice of
        ``data``. Keep the same function object between calls to avoid recompilation.
      variables: one ``(group_name, int[M] indices)`` per slot.
      data: pytree of arrays with leading axis ``M`` (measurements, learned parameters).
      noise: noise model or ``None`` (unit information).
      residual_dim: length of the residual.

    A custom factor of one variable fixes absolute values like a prior does (the gauge).
    """
    if not variables:
        raise ValueError(f"factor group {name!r}: a custom factor needs at least one variable")
    idx = [_as_index(ix, name) for _, ix in variables]
    if len({a.shape for a in idx}) != 1:
        raise ValueError(
            f"factor group {name!r}: index arrays of different lengths {[a.shape[0] for a in idx]}"
        )
    return FactorGroup(name, Custom(residual, int(residual_dim)), tuple(v for v, _ in variables), np.stack(idx, 1),
                       data, noise, robust)
