"""The logarithm of the matrix factors' errors with its right-Jacobian inverse, and their
derivative in Lie form.

``log_and_jinv(kind, E)`` returns ``r = log(E)`` and ``Jr(r)^-1`` for an error matrix
``E[M, m, m]`` of a kind (the one place the linearisation calls them, see
``normal_equations._matrix_factor_terms``). For the rotation and rigid-motion groups its
derivative is a ``custom_jvp`` that follows from the definition of the right Jacobian,
``log(E Exp(delta)) = log(E) + Jr(r)^-1 delta + O(delta^2)``:

* ``dr = Jr(r)^-1 xi`` with ``xi = vee(E^-1 dE)``, the body-frame tangent of ``dE``: for
  ``E = [[R, t], [0, 1]]`` it is ``(R^T dt, vee(R^T dR))`` (the rotation part antisymmetrised,
  so that a ``dE`` off the group by rounding gives its nearest tangent);
* ``d(Jr^-1) = D(Jr^-1)(r)[dr]``, forward mode through the closed form of ``Jr(r)^-1``.

Reverse mode through the linearisation (the implicit backward's ``H^T p`` in every CG step,
every unrolled or truncated trip) then transposes two small matrix products and the closed
form of ``Jr^-1``, instead of the matrix-to-quaternion conversion and the quaternion
logarithm, whose branches and safe coefficients XLA compiled into dozens of kernels. The
primal (and so the forward solve's program) is unchanged. Other kinds (vectors, products of
kinds) are differentiated as before.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from .. import lie, smallmat
from .kinds import GroupKind

__all__ = ["log_and_jinv"]


def _plain(kind, E):
    r = kind.log(E)
    return r, kind.right_jacobian_inverse(r)


def _has_rule(kind) -> bool:
    if not isinstance(kind, GroupKind):
        return False
    g = kind.group
    return g.space_dim in (2, 3) and (issubclass(g, lie.SEBase) or issubclass(g, lie.SOBase))


def log_and_jinv(kind, E):
    """``(r, Jinv)``: ``r = kind.log(E)`` ``[M, t]`` and ``Jinv = Jr(r)^-1`` ``[M, t, t]`` of
    error matrices ``E[M, m, m]`` (``t``: the kind's tangent size, ``m``: its matrix size),
    in ``E``'s dtype. Rotation and rigid-motion kinds get the Lie-form derivative described
    in the module docstring; its value is the same as plain autodiff to rounding."""
    if _has_rule(kind):
        return _group_log(kind, E)
    return _plain(kind, E)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _group_log(kind, E):
    return _plain(kind, E)


def _body_tangent(kind, E, dE):
    """``vee(E^-1 dE)`` ``[M, t]`` (translation first for SE(n), as the kinds' tangents),
    written out elementwise: a batched dot per tiny matrix is a kernel of its own."""
    k = kind.group.space_dim

    def col_dot(A, B, a, b):  # sum_j A[j, a] B[j, b] = (A^T B)[a, b]
        return sum(A[..., j, a] * B[..., j, b] for j in range(k))

    R, dR = E[..., :k, :k], dE[..., :k, :k]
    # (R^T dR)[a, b] - (R^T dR)[b, a] over the rotation generators' index pairs
    pairs = [(1, 0)] if k == 2 else [(2, 1), (0, 2), (1, 0)]
    w = jnp.stack([0.5 * (col_dot(R, dR, a, b) - col_dot(R, dR, b, a)) for a, b in pairs], -1)
    if not issubclass(kind.group, lie.SEBase):
        return w
    dt = dE[..., :k, k]
    v = jnp.stack([sum(R[..., j, a] * dt[..., j] for j in range(k)) for a in range(k)], -1)  # R^T dt
    return jnp.concatenate([v, w], -1)


@_group_log.defjvp
def _group_log_jvp(kind, primals, tangents):
    (E,), (dE,) = primals, tangents
    r, Jinv = _group_log(kind, E)  # higher orders differentiate this rule again
    dr = smallmat.matvec(Jinv, _body_tangent(kind, E, dE))
    dJinv = _jinv_partials(kind, r, dr)
    return (r, Jinv), (dr, dJinv)


def _jinv_partials(kind, r, dr):
    """``D(Jr^-1)(r)[dr]`` as ``sum_k P_k dr_k`` with the partials ``P_k = d Jr^-1 / d r_k``
    computed by forward mode in the primal (``t`` directions, batched)."""
    t = r.shape[-1]
    basis = jnp.eye(t, dtype=r.dtype)
    P = jax.vmap(lambda e: jax.jvp(kind.right_jacobian_inverse, (r,), (jnp.broadcast_to(e, r.shape),))[1])(basis)
    out = P[0] * dr[..., 0, None, None]
    for k in range(1, t):
        out = out + P[k] * dr[..., k, None, None]
    return out
