"""Type aliases of the group API (the names of ``jaxlie.hints``)."""

from __future__ import annotations

from typing import NamedTuple, Union

import jax
import numpy as np

Array = Union[np.ndarray, jax.Array]
"""An array argument: a NumPy or a JAX array."""

Scalar = Union[float, Array]
"""A Python float or an array."""


class RollPitchYaw(NamedTuple):
    """Euler angles in radians, ZYX convention: roll about x applied first, then pitch about y,
    then yaw about z (``R = Rz(yaw) Ry(pitch) Rx(roll)``)."""

    roll: Scalar
    pitch: Scalar
    yaw: Scalar


__all__ = ["Array", "Scalar", "RollPitchYaw"]
