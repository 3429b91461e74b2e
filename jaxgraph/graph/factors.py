"""Factor groups: stacked factors of one type, with residuals in tangent space.

A :class:`FactorGroup` holds ``M`` factors of the same type. Its static part (which
variables each factor touches, the residual function) lives in the pytree's auxiliary
data; its float parts (measurements, noise parameters, robust thresholds, user data) are
the pytree's leaves, so ``jax.grad`` / ``jax.vmap`` see exactly the numbers a user may
want to differentiate or batch.

Built-in factors (analytic Jacobians, right perturbations ``X <- X Exp(d)``):

* :func:`between` ``r = Log(Z^-1 X_i^-1 X_j)`` (GTSAM's ``BetweenFactor``):
  ``dr/dd_j = Jr^-1(r)``, ``dr/dd_i = -Jr^-1(r) Ad(X_j^-1 X_i)``.
* :func:`prior` ``r = Log(Z^-1 X)``: ``dr/dd = Jr^-1(r)``.

User factors (:func:`custom`) give a residual in JAX for one factor; Jacobians come
from forward-mode autodiff through the retraction.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .noise import NoiseModel
from ..smallmat import matmul
from .robust import RobustLoss

if TYPE_CHECKING:  # the graph package imports this module
    from .kinds import Kind

__all__ = ["FactorGroup", "between", "prior", "custom"]


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


@jax.tree_util.register_pytree_node_class
class FactorGroup:
    """``M`` stacked factors of one type.

    Attributes:
      name: label used in error messages and inspection helpers.
      kind: ``"between"``, ``"prior"`` or ``"custom"``.
      variables: names of the variable group of each slot (``k`` slots).
      indices: ``int64[M, k]`` (numpy, static): index of the variable in its group, per slot.
      measurement: leaf pytree: ``[M, param_dim]`` for built-ins, any pytree with leading
        axis ``M`` for custom factors (passed to the residual per factor).
      noise: a :mod:`jaxgraph.noise` model (leaves ``[]``/``[M, ...]``).
      robust: a :mod:`jaxgraph.robust` loss or ``None``.
      residual_fn: custom factors only: ``residual(params, data) -> r[residual_dim]`` for
        one factor, where ``params`` is a tuple with one parameter vector per slot.
      residual_dim: residual dimension (built-ins: the tangent dimension).
    """

    def __init__(
        self,
        name: str,
        kind: str,
        variables: Sequence[str],
        indices,
        measurement: Any,
        noise: NoiseModel | None,
        robust: RobustLoss | None = None,
        residual_fn: Callable | None = None,
        residual_dim: int | None = None,
    ):
        self.name = str(name)
        self.kind = kind
        self.variables = tuple(variables)
        self.indices = indices if isinstance(indices, StaticIndices) else StaticIndices(indices)
        self.measurement = measurement
        self.noise = noise
        self.robust = robust
        self.residual_fn = residual_fn
        self.residual_dim = residual_dim

    @property
    def count(self) -> int:
        return int(self.indices.array.shape[0])

    def tree_flatten(self):
        aux = (
            self.name,
            self.kind,
            self.variables,
            self.indices,
            self.residual_fn,
            self.residual_dim,
        )
        return (self.measurement, self.noise, self.robust), aux

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        (obj.name, obj.kind, obj.variables, obj.indices, obj.residual_fn, obj.residual_dim) = aux
        obj.measurement, obj.noise, obj.robust = children
        return obj

    def replace(self, **changes) -> "FactorGroup":
        """A copy with some leaves replaced (``measurement``, ``noise``, ``robust``)."""
        children = {"measurement": self.measurement, "noise": self.noise, "robust": self.robust}
        for k, v in changes.items():
            if k not in children:
                raise TypeError(f"FactorGroup.replace: cannot replace {k!r}")
            children[k] = v
        leaves, aux = self.tree_flatten()
        return FactorGroup.tree_unflatten(
            aux, (children["measurement"], children["noise"], children["robust"])
        )

    def __repr__(self):
        return (
            f"FactorGroup(name={self.name!r}, kind={self.kind!r}, count={self.count}, "
            f"variables={self.variables}, noise={self.noise!r}, robust={self.robust!r})"
        )

    # ------------------------------------------------------------------------------
    # Evaluation (called with the group's parameters already gathered per factor).
    # ------------------------------------------------------------------------------
    def residual_and_jacobians(self, kinds: Sequence[Kind], params: Sequence[jax.Array], with_jacobians=True):
        """Unwhitened residuals ``r[M, rdim]`` and per-slot Jacobians ``[M, rdim, tdim_a]``.

        ``params[a]`` is ``[M, param_dim_a]``, the value of slot ``a`` of every factor (built-in
        factors also accept the matrices ``[M, k, k]`` of Lie-group values).
        """
        if self.kind in ("between", "prior"):
            return _builtin(self, kinds[0], params, with_jacobians)
        return _custom(self.residual_fn, kinds, params, self.measurement, with_jacobians)


def _matrix(kind: Kind, x):
    # Parameters are [M, param_dim]; callers may pass matrices [M, k, k] already converted.
    return x if x.ndim == 3 else kind.to_matrix(x)


def _measurement_inverse(kind: Kind, z, dtype):
    # A prepared problem stores Z^-1 as a matrix (see Problem.prepared); raw params otherwise.
    z = jnp.asarray(z, dtype)
    return z if z.ndim == 3 else kind.inverse_matrix(kind.to_matrix(z))


def builtin_error(g: "FactorGroup", kind: Kind, params):
    """Built-in groups in two phases: ``(E, context)``, the error matrices ``E [M, k, k]``
    (``r = log E``) of a ``between`` or ``prior`` group; see :func:`builtin_jacobians`.
    The solver takes ``log`` and the right-Jacobian inverse of all groups of one kind
    together, so their (large) code is compiled once."""
    if g.kind == "between":
        Xi, Xj = _matrix(kind, params[0]), _matrix(kind, params[1])
        XiXj = matmul(kind.inverse_matrix(Xi), Xj)
        return matmul(_measurement_inverse(kind, g.measurement, Xi.dtype), XiXj), XiXj
    X = _matrix(kind, params[0])
    return matmul(_measurement_inverse(kind, g.measurement, X.dtype), X), None


def builtin_jacobians(g: "FactorGroup", kind: Kind, context, Jinv):
    """Per-slot Jacobians of a built-in group from its ``context`` and ``Jinv = Jr(r)^-1``."""
    if g.kind == "between":
        # Xi Exp(d) moves the error by Exp(-Ad(E^-1 Z^-1) d) on the left of E = Z^-1 Xi^-1 Xj,
        # and E^-1 Z^-1 = Xj^-1 Xi.
        Ad = kind.adjoint(kind.inverse_matrix(context))
        return (-matmul(Jinv, Ad), Jinv)
    return (Jinv,)


def _builtin(g: "FactorGroup", kind: Kind, params, with_jacobians):
    E, context = builtin_error(g, kind, params)
    r = kind.log(E)
    if not with_jacobians:
        return r, None
    return r, builtin_jacobians(g, kind, context, kind.right_jacobian_inverse(r))


def _custom(fn, kinds, params, data, with_jacobians):
    def one(ps, d):
        return fn(tuple(ps), d)

    r = jax.vmap(one)(tuple(params), data)
    if not with_jacobians:
        return r, None

    def one_jac(ps, d):
        def perturbed(deltas):
            moved = tuple(k.retract(p, dl) for k, p, dl in zip(kinds, ps, deltas))
            return fn(moved, d)

        zeros = tuple(jnp.zeros((k.tangent_dim,), p.dtype) for k, p in zip(kinds, ps))
        return jax.jacfwd(perturbed)(zeros)

    J = jax.vmap(one_jac)(tuple(params), data)
    return r, tuple(J)


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
    """Between factors ``r = Log(Z^-1 X_i^-1 X_j)`` on a Lie-group variable group.

    Args:
      variable: name of the variable group (kind SE2, SE3 or SO3).
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
    return FactorGroup(name, "between", (variable, variable), np.stack([i, j], 1), measurement, noise, robust)


def prior(
    variable: str,
    index,
    measurement,
    noise: NoiseModel,
    robust: RobustLoss | None = None,
    *,
    name: str = "prior",
) -> FactorGroup:
    """Prior factors ``r = Log(Z^-1 X)``; ``index int[M]``, ``measurement [M, param_dim]``."""
    index = _as_index(index, name)
    return FactorGroup(name, "prior", (variable,), index[:, None], measurement, noise, robust)


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
        :mod:`jaxgraph.graph.manifolds` for parametrisations), ``data`` the factor's slice of
        ``data``. Keep the same function object between calls to avoid recompilation.
      variables: one ``(group_name, int[M] indices)`` per slot.
      data: pytree of arrays with leading axis ``M`` (measurements, learned parameters).
      noise: noise model or ``None`` (unit information).
      residual_dim: length of the residual.
    """
    if not variables:
        raise ValueError(f"factor group {name!r}: a custom factor needs at least one variable")
    idx = [_as_index(ix, name) for _, ix in variables]
    if len({a.shape for a in idx}) != 1:
        raise ValueError(
            f"factor group {name!r}: index arrays of different lengths {[a.shape[0] for a in idx]}"
        )
    return FactorGroup(
        name,
        "custom",
        tuple(v for v, _ in variables),
        np.stack(idx, 1),
        data,
        noise,
        robust,
        residual_fn=residual,
        residual_dim=int(residual_dim),
    )
