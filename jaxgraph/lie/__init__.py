"""Lie groups SO(2), SE(2), SO(3), SE(3) with derivatives that are finite and exact everywhere.

Pure functions on arrays (batch dimensions lead, float32 and float64 preserved) and
jaxlie-compatible group classes built on them. See docs/lie.md.
"""

from .so2 import so2_exp, so2_log
from .se2 import (
    se2_adjoint,
    se2_exp,
    se2_inverse,
    se2_left_jacobian,
    se2_left_jacobian_inverse,
    se2_log,
    se2_right_jacobian,
    se2_right_jacobian_inverse,
)
from .so3 import (
    matrix_from_quaternion,
    quaternion_exp,
    quaternion_from_matrix,
    quaternion_log,
    so3_exp,
    so3_left_jacobian,
    so3_left_jacobian_inverse,
    so3_log,
    so3_right_jacobian,
    so3_right_jacobian_inverse,
)
from .se3 import (
    se3_adjoint,
    se3_exp,
    se3_hat,
    se3_inverse,
    se3_left_jacobian,
    se3_left_jacobian_inverse,
    se3_log,
    se3_right_jacobian,
    se3_right_jacobian_inverse,
    se3_vee,
)
from ._ops import quaternion_conjugate, quaternion_multiply
from ._base import MatrixLieGroup, SEBase, SOBase
from .groups import SE2, SE3, SO2, SO3
from .manifold import rminus, rplus
from . import hints, manifold, utils
