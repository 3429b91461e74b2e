"""Factor-graph problems: variable groups plus factor groups, as one pytree.

A :class:`Problem` is a pytree. Its leaves are the float parameters of its factor
groups (measurements, noise, robust thresholds, user data); everything structural
(variable groups, which factor touches which variable, the block-sparsity pattern of
the normal equations and the cached symbolic analysis of the linear solver) is static
auxiliary data (:mod:`jaxgraph.graph.structure`), computed once in numpy when the problem is
built. Two problems with the same structure therefore share compiled code, can be stacked
for ``jax.vmap``, and ``jax.grad`` with respect to a problem reaches every measurement and
noise parameter.

Values are a ``dict`` mapping each variable-group name to a ``[count, param_dim]``
array (parametrisations in :mod:`jaxgraph.graph.kinds`).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..runtime.compile_cache import entry_point
from . import normal_equations as ne
from . import validation
from .factors import FactorGroup
from .normal_equations import Linearization, values_dtype
from .structure import IndexData, Layout, Structure, pad_group, size_class
from .variables import VariableGroup

__all__ = ["VariableGroup", "Problem", "Linearization", "size_class", "values_dtype"]


@jax.tree_util.register_pytree_node_class
class Problem:
    """A factor graph: variable groups plus stacked factor groups.

    Args:
      variables: sequence of :class:`VariableGroup`.
      factors: sequence of :class:`jaxgraph.factors.FactorGroup` (unique names).
      anchor: fix the gauge. If ``True`` (default) and no factor fixes absolute values (a
        prior of any kind, a custom factor of one variable, or any factor type whose
        ``absolute`` says so) and no variable is fixed, the first variable of the first
        Lie-group variable group is held fixed at its initial value, and
        :attr:`anchored` says which (``jaxgraph solve`` prints it). (``read_g2o`` instead
        adds GTSAM's convention, a prior on pose 0 at its initial value with isotropic
        sigma 1e-6.)
      metadata: static extra information (used by the g2o writer).

    Raises:
      ValueError / TypeError naming the factor group, factor index and variable on any
      inconsistency (unknown variable group, index out of range, measurement or noise of
      the wrong shape, a factor connecting a variable to itself, non-finite numbers).
    """

    def __init__(
        self,
        variables: Sequence[VariableGroup],
        factors: Sequence[FactorGroup],
        *,
        anchor: bool = True,
        metadata: Mapping[str, Any] | None = None,
    ):
        variables = list(variables)
        factors = list(factors)
        validation.validate_variables(variables)
        kinds = {v.name: v.manifold for v in variables}
        counts = {v.name: v.count for v in variables}
        names = set()
        for gi, g in enumerate(factors):
            if not isinstance(g, FactorGroup):
                raise TypeError(
                    f"factors[{gi}] is a {type(g).__name__}, expected a FactorGroup "
                    "(build it with jaxgraph.factors.between/prior/custom)"
                )
            if g.name in names:
                raise ValueError(f"two factor groups are named {g.name!r}; names must be unique")
            names.add(g.name)
            validation.validate_group(g, kinds, counts)
        absolute = any(g.type.absolute(len(g.variables)) for g in factors) or any(v.fixed for v in variables)
        anchored = None
        if anchor and not absolute:
            for k, v in enumerate(variables):
                if kinds[v.name].is_group:
                    variables[k] = VariableGroup(v.name, v.kind, v.count, (0,))
                    anchored = (v.name, 0)
                    break
        self.factors = tuple(factors)
        self.structure = Structure(variables, self.factors, metadata, anchored)
        self.index = None

    # -- pytree ----------------------------------------------------------------------
    def tree_flatten(self):
        return (self.factors, self.index), self.structure

    @classmethod
    def tree_unflatten(cls, structure, children):
        obj = object.__new__(cls)
        obj.factors = tuple(children[0])
        obj.index = children[1]
        obj.structure = structure
        return obj

    # -- size classes ----------------------------------------------------------------
    @property
    def is_sized(self) -> bool:
        """True for a problem from :meth:`sized` (its pattern is data, not structure)."""
        return self.index is not None

    def sized(self, min_sizes: Mapping[str, int] | None = None) -> "Problem":
        """The same problem padded to its size class, with the pattern as data.

        Every variable group and factor group is padded to :func:`size_class` of its
        count (or to ``min_sizes[name]`` when larger): padded variables are fixed at the
        identity, padded factors are masked out (zero residual, zero cost).  Which
        factor touches which variable becomes pytree leaves (:class:`IndexData`)
        instead of static structure, so two graphs of one size class run the *same*
        compiled solve, and such problems stack under ``jax.vmap`` even when their
        sparsity patterns differ.  Use :meth:`pad_values` / :meth:`unpad_values` for
        the values.  The fixed-pattern linear solver ``"cholesky"`` (JAX multifrontal)
        cannot run on a sized problem; ``"host"``, ``"dense"`` and ``"pcg"`` can.
        """
        if self.is_sized:
            return self
        cached = getattr(self, "_sized", None)
        if cached is not None and min_sizes is None:
            return cached
        layout = Layout(self.structure, self.factors, min_sizes)
        fs = tuple(pad_group(g, Mp) for g, Mp in zip(self.factors, layout.group_counts))
        obj = Problem.tree_unflatten(layout, (fs, None))
        obj.index = self.structure.index_data(layout)
        if min_sizes is None and not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(fs)):
            # concrete leaves: reuse the padded copy on the next solve, its numpy leaves (a padded
            # group) already on the device, where a solve would copy them on every call
            # (eagerly also while a transformation is tracing: a traced copy must not be kept)
            with jax.ensure_compile_time_eval():
                obj.factors = jax.device_put(obj.factors)
            self._sized = obj
        return obj

    def pad_values(self, values) -> dict:
        """Call on a :meth:`sized` problem: the original problem's values with identity rows appended."""
        st = self.structure
        out = {}
        for v in self.variables:
            x = values[v.name]
            extra = v.count - x.shape[0]
            if extra == 0:
                out[v.name] = x
            elif isinstance(x, jax.core.Tracer):
                out[v.name] = jnp.concatenate([x, st.kinds[v.name].identity(extra, x.dtype)], 0)
            else:  # numpy: no eager XLA op per new shape
                ident = st.kinds[v.name].identity_row(x.dtype)
                out[v.name] = np.concatenate([np.asarray(x), np.broadcast_to(ident, (extra, ident.size))], 0)
        return out

    def unpad_values(self, values, original: "Problem") -> dict:
        """Values of a :meth:`sized` problem cut back to the variable counts of ``original``
        (unchanged when this problem is not sized)."""
        if not self.is_sized:
            return values
        # an unpadded group is returned as is: a slice is one more dispatched op per solve
        return {v.name: values[v.name] if values[v.name].shape[-2] == v.count else values[v.name][..., : v.count, :]
                for v in original.variables}

    def index_data(self) -> IndexData:
        """Which factor touches which block, as arrays: numpy constants of the structure, or
        the leaves of a :meth:`sized` problem."""
        return self.index if self.index is not None else self.structure.index_data()

    def free_mask(self, dtype) -> jax.Array:
        """``[N, 1]`` 1 for optimised blocks, 0 for fixed (and padded) ones."""
        return jnp.asarray(self.index_data().free_blocks).astype(dtype)[:, None]

    def linear_pattern(self):
        """``(rows, cols)`` of the normal equations' off-diagonal blocks (padding: rows == cols)."""
        idx = self.index_data()
        return idx.off_rows, idx.off_cols

    # -- accessors -------------------------------------------------------------------
    @property
    def variables(self) -> tuple[VariableGroup, ...]:
        return self.structure.variables

    @property
    def metadata(self) -> dict:
        return self.structure.metadata

    @property
    def anchored(self) -> tuple | None:
        """``(group name, index)`` of the variable the constructor held fixed to fix the gauge
        (``anchor=True`` and no factor fixing absolute values), else ``None``."""
        return self.structure.anchored

    def group(self, key) -> FactorGroup:
        """Factor group by name or position."""
        if isinstance(key, int):
            return self.factors[key]
        for g in self.factors:
            if g.name == key:
                return g
        raise KeyError(f"no factor group named {key!r}; groups: {[g.name for g in self.factors]}")

    def _group_index(self, key) -> int:
        if isinstance(key, int):
            return key
        for k, g in enumerate(self.factors):
            if g.name == key:
                return k
        raise KeyError(f"no factor group named {key!r}; groups: {[g.name for g in self.factors]}")

    def replace_group(self, key, group: FactorGroup) -> "Problem":
        """A problem with one factor group's leaves replaced (same structure)."""
        k = self._group_index(key)
        old = self.factors[k]
        if jax.tree_util.tree_structure(old) != jax.tree_util.tree_structure(group):
            raise ValueError(f"replace_group: group {old.name!r} must keep its structure")
        fs = list(self.factors)
        fs[k] = group
        return Problem.tree_unflatten(self.structure, (tuple(fs), self.index))

    def __repr__(self):
        vs = ", ".join(f"{v.name}: {v.count} x {self.structure.kinds[v.name].name}" for v in self.variables)
        fs = ", ".join(f"{g.name}: {g.count} x {g.type}" for g in self.factors)
        return f"Problem(variables=[{vs}], factors=[{fs}])"

    # -- values ----------------------------------------------------------------------
    def check_values(self, values) -> None:
        """Raise a clear error unless ``values`` matches the problem's variable groups."""
        validation.check_values(self, values)

    def check_value_rows(self, values) -> None:
        """Raise a clear error naming the first non-finite row, or the first row that is not a
        point of its kind (a zero quaternion), of concrete ``values``."""
        validation.check_value_rows(self, values)

    def identity_values(self, dtype=jnp.float32) -> dict:
        """Values at the identity (zeros for Euclidean variables)."""
        return {v.name: self.structure.kinds[v.name].identity(v.count, dtype) for v in self.variables}

    def retract(self, values, dx):
        """``X Exp(dx)`` for every variable; ``dx[num_blocks, block_dim]`` holds each variable's
        tangent step in its consecutive blocks (fixed variables unchanged)."""
        st = self.structure
        out = {}
        for v in self.variables:
            k = st.kinds[v.name]
            o, b = st.offsets[v.name], st.blocks_per[v.name]
            p = values[v.name]
            step = dx[o : o + v.count * b].reshape(v.count, k.tangent_dim)
            moved = k.retract(p, step.astype(p.dtype))
            free = self.index_data().free_blocks[o : o + v.count * b : b]
            out[v.name] = moved if isinstance(free, np.ndarray) and free.all() else jnp.where(free[:, None], moved, p)
        return out

    # -- evaluation ------------------------------------------------------------------
    def prepared(self, dtype) -> "Problem":
        """Leaves cast to ``dtype``, measurements and noise models in solver form (done once per
        solve)."""
        st = self.structure
        fs = []
        for g in self.factors:
            meas = g.type.prepare(g.measurement, [st.kinds[v] for v in g.variables], dtype)
            noise = None if g.noise is None else g.noise.astype(dtype).prepare()
            robust = None if g.robust is None else jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), g.robust)
            fs.append(g.replace(measurement=meas, noise=noise, robust=robust))
        return Problem.tree_unflatten(self.structure, (tuple(fs), self.index))

    def terms(self, k: int, values, with_jacobians: bool):
        """``(r, e, J, costs)`` of factor group ``k`` (:func:`jaxgraph.graph.normal_equations.group_terms`);
        call on a :meth:`prepared` problem."""
        return ne.group_terms(self, k, values, with_jacobians)

    def cost(self, values) -> jax.Array:
        """Total cost ``sum_f rho_f`` (``0.5 |e|^2`` without robust loss); jit-compiled."""
        self.check_values(values)
        return _cost_jit(self, values)

    def linearize(self, values, accumulate=None) -> Linearization:
        """Gauss-Newton normal equations at ``values`` (call on a :meth:`prepared` problem); see
        :func:`jaxgraph.graph.normal_equations.linearize`."""
        return ne.linearize(self, values, accumulate)

    def zero_linearization(self, dtype) -> Linearization:
        """A :class:`Linearization` of zeros with the shapes :meth:`linearize` returns."""
        return ne.zero_linearization(self, dtype)

    # -- inspection --------------------------------------------------------------------
    def residuals(self, values, group, index=None) -> jax.Array:
        """Unwhitened tangent-space residuals ``[M, r]`` of a group (or ``[r]`` for one index)."""
        r = _terms_jit(self, values, self._group_index(group), False)[0]
        return r if index is None else r[index]

    def whitened_errors(self, values, group, index=None) -> jax.Array:
        """Whitened, robust-reweighted residuals ``sqrt(w) W r`` (``[M, r]`` or ``[r]``)."""
        e = _terms_jit(self, values, self._group_index(group), False)[1]
        return e if index is None else e[index]

    def factor_costs(self, values, group) -> jax.Array:
        """Cost of every factor of a group, ``[M]``."""
        return _terms_jit(self, values, self._group_index(group), False)[3]

    def jacobians(self, values, group, index=None) -> tuple:
        """Whitened Jacobians per slot, each ``[M, r, tangent_dim]`` (or ``[r, t]`` for one index).

        Derivatives are with respect to right perturbations ``X <- X Exp(d)``.
        """
        J = _terms_jit(self, values, self._group_index(group), True)[2]
        return J if index is None else tuple(Ja[index] for Ja in J)


@partial(entry_point, static_argnames=("k", "with_jacobians"))
def _terms_jit(problem, values, k, with_jacobians):
    return problem.prepared(values_dtype(values)).terms(k, values, with_jacobians)


@entry_point
def _cost_jit(problem, values):
    return ne.total_cost(problem.prepared(values_dtype(values)), values)

