"""Variable kinds and their parametrisations (internal helpers of the factor-graph code).

Parametrisations (``param`` is what a values array stores, one row per variable):

======  =========================  =======  ==================================================
kind    param                      tangent  why
======  =========================  =======  ==================================================
SE2     ``(x, y, theta)``          3        g2o stores exactly these numbers: the file round
                                            trip is bit-exact, and 3 floats is minimal.
SE3     ``(qw, qx, qy, qz, x, y, z)`` 6     jaxlie's ``wxyz_xyz`` layout; the g2o quaternion
                                            and translation are kept as read (bit-exact
                                            round trip), 7 floats instead of 16.
SO3     ``(qw, qx, qy, qz)``       4/3      as SE3's rotation part.
Rn      ``(x_1 .. x_n)``           n        plain vectors (``"R3"`` etc.).
======  =========================  =======  ==================================================

Tangent vectors use right perturbations ``X <- X Exp(d)`` with the ``jaxgraph.lie``
ordering: SE2 ``(x, y, theta)``, SE3 ``(v, w)`` (translation first, which is also g2o's
information-matrix order). Group operations go through homogeneous matrices built from
the params, and all exponentials, logarithms, Jacobians and adjoints come from
:mod:`jaxgraph.lie`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import jax.numpy as jnp

from .. import lie

__all__ = ["Kind", "kind_of"]


@dataclass(frozen=True)
class Kind:
    """Static description of a variable kind."""

    name: str
    param_dim: int
    tangent_dim: int
    is_group: bool  # a Lie group with matrix form (between/prior factors apply)

    # -- conversions ---------------------------------------------------------------
    def to_matrix(self, p):
        """Params ``[..., param_dim]`` -> homogeneous/rotation matrix."""
        if self.name == "SE2":
            c, s = jnp.cos(p[..., 2]), jnp.sin(p[..., 2])
            z, o = jnp.zeros_like(c), jnp.ones_like(c)
            rows = [
                jnp.stack([c, -s, p[..., 0]], -1),
                jnp.stack([s, c, p[..., 1]], -1),
                jnp.stack([z, z, o], -1),
            ]
            return jnp.stack(rows, -2)
        if self.name == "SE3":
            R = lie.matrix_from_quaternion(p[..., :4])
            top = jnp.concatenate([R, p[..., 4:, None]], -1)
            bottom = jnp.broadcast_to(
                jnp.asarray([0, 0, 0, 1], p.dtype), p.shape[:-1] + (1, 4)
            )
            return jnp.concatenate([top, bottom], -2)
        if self.name == "SO3":
            return lie.matrix_from_quaternion(p)
        raise TypeError(f"variable kind {self.name} has no matrix form")

    def from_matrix(self, T):
        if self.name == "SE2":
            return jnp.stack([T[..., 0, 2], T[..., 1, 2], jnp.arctan2(T[..., 1, 0], T[..., 0, 0])], -1)
        if self.name == "SE3":
            return jnp.concatenate([lie.quaternion_from_matrix(T[..., :3, :3]), T[..., :3, 3]], -1)
        if self.name == "SO3":
            return lie.quaternion_from_matrix(T)
        raise TypeError(f"variable kind {self.name} has no matrix form")

    def identity(self, n: int, dtype):
        p = jnp.zeros((n, self.param_dim), dtype)
        if self.name in ("SE3", "SO3"):
            p = p.at[:, 0].set(1)
        return p

    # -- group operations on matrices -------------------------------------------------
    def log(self, T):
        if self.name == "SE2":
            return lie.se2_log(T)
        if self.name == "SE3":
            return lie.se3_log(T)
        return lie.so3_log(T)

    def exp(self, xi):
        if self.name == "SE2":
            return lie.se2_exp(xi)
        if self.name == "SE3":
            return lie.se3_exp(xi)
        return lie.so3_exp(xi)

    def right_jacobian_inverse(self, xi):
        if self.name == "SE2":
            return lie.se2_right_jacobian_inverse(xi)
        if self.name == "SE3":
            return lie.se3_right_jacobian_inverse(xi)
        return lie.so3_right_jacobian_inverse(xi)

    def adjoint(self, T):
        if self.name == "SE2":
            return lie.se2_adjoint(T)
        if self.name == "SE3":
            return lie.se3_adjoint(T)
        return T

    def inverse_matrix(self, T):
        if self.name == "SO3":
            return jnp.swapaxes(T, -1, -2)
        k = T.shape[-1] - 1
        Rt = jnp.swapaxes(T[..., :k, :k], -1, -2)
        t = -jnp.einsum("...ij,...j->...i", Rt, T[..., :k, k])
        top = jnp.concatenate([Rt, t[..., None]], -1)
        return jnp.concatenate([top, T[..., k:, :]], -2)

    # -- retraction ----------------------------------------------------------------
    def retract(self, p, d):
        """``X Exp(d)`` in params; ``p[..., param_dim]``, ``d[..., tangent_dim]``."""
        if not self.is_group:
            return p + d
        if self.name == "SE2":
            c, s = jnp.cos(p[..., 2]), jnp.sin(p[..., 2])
            E = lie.se2_exp(d)
            ux, uy = E[..., 0, 2], E[..., 1, 2]
            theta = p[..., 2] + d[..., 2]
            # Keep theta in (-pi, pi] without touching values already inside it, so
            # that a zero step leaves the parameters bit-identical.
            two_pi = jnp.asarray(2 * jnp.pi, p.dtype)
            theta = jnp.where(
                jnp.abs(theta) > jnp.pi, theta - two_pi * jnp.round(theta / two_pi), theta
            )
            return jnp.stack([p[..., 0] + c * ux - s * uy, p[..., 1] + s * ux + c * uy, theta], -1)
        if self.name == "SE3":
            E = lie.se3_exp(d)
            q = p[..., :4]
            R = lie.matrix_from_quaternion(q)
            t = p[..., 4:] + jnp.einsum("...ij,...j->...i", R, E[..., :3, 3])
            qn = _qnormalize(lie.quaternion_multiply(q, lie.quaternion_from_matrix(E[..., :3, :3])))
            return jnp.concatenate([qn, t], -1)
        # SO3
        qd = lie.quaternion_from_matrix(lie.so3_exp(d))
        return _qnormalize(lie.quaternion_multiply(p, qd))


def _qnormalize(q):
    return q / jnp.linalg.norm(q, axis=-1, keepdims=True)


_KINDS = {
    "SE2": Kind("SE2", 3, 3, True),
    "SE3": Kind("SE3", 7, 6, True),
    "SO3": Kind("SO3", 4, 3, True),
}


def kind_of(name: str) -> Kind:
    """Kind from its name: ``"SE2"``, ``"SE3"``, ``"SO3"`` or ``"R<n>"`` (e.g. ``"R3"``)."""
    if isinstance(name, Kind):
        return name
    if name in _KINDS:
        return _KINDS[name]
    m = re.fullmatch(r"R([1-9][0-9]*)", str(name))
    if m:
        n = int(m.group(1))
        return Kind(name, n, n, False)
    raise ValueError(f"unknown variable kind {name!r}; expected 'SE2', 'SE3', 'SO3' or 'R<n>'")
