"""Lie groups SO(2), SE(2), SO(3), SE(3) with derivatives that are finite and exact everywhere.

Pure functions on arrays (batch dimensions lead, float32 and float64 preserved) and
jaxlie-compatible group classes built on them. One module per group, as jaxlie lays them out:
``so2.py``, ``se2.py``, ``so3.py``, ``se3.py`` each hold the group's maps and its class.
See docs/lie.md.
"""

# ``name as name``: explicit re-exports (jaxlie's __init__ style), which linters and type
# checkers take as this package's public names.
from .so2 import (
    SO2 as SO2,
    so2_exp as so2_exp,
    so2_log as so2_log,
)
from .se2 import (
    SE2 as SE2,
    se2_adjoint as se2_adjoint,
    se2_exp as se2_exp,
    se2_inverse as se2_inverse,
    se2_left_jacobian as se2_left_jacobian,
    se2_left_jacobian_inverse as se2_left_jacobian_inverse,
    se2_log as se2_log,
    se2_right_jacobian as se2_right_jacobian,
    se2_right_jacobian_inverse as se2_right_jacobian_inverse,
)
from .so3 import (
    SO3 as SO3,
    matrix_from_quaternion as matrix_from_quaternion,
    quaternion_exp as quaternion_exp,
    quaternion_from_matrix as quaternion_from_matrix,
    quaternion_log as quaternion_log,
    so3_exp as so3_exp,
    so3_left_jacobian as so3_left_jacobian,
    so3_left_jacobian_inverse as so3_left_jacobian_inverse,
    so3_log as so3_log,
    so3_right_jacobian as so3_right_jacobian,
    so3_right_jacobian_inverse as so3_right_jacobian_inverse,
)
from .se3 import (
    SE3 as SE3,
    se3_adjoint as se3_adjoint,
    se3_exp as se3_exp,
    se3_hat as se3_hat,
    se3_inverse as se3_inverse,
    se3_left_jacobian as se3_left_jacobian,
    se3_left_jacobian_inverse as se3_left_jacobian_inverse,
    se3_log as se3_log,
    se3_right_jacobian as se3_right_jacobian,
    se3_right_jacobian_inverse as se3_right_jacobian_inverse,
    se3_vee as se3_vee,
)
from ._ops import (
    quaternion_conjugate as quaternion_conjugate,
    quaternion_multiply as quaternion_multiply,
)
from ._base import (
    MatrixLieGroup as MatrixLieGroup,
    SEBase as SEBase,
    SOBase as SOBase,
)
from .manifold import (
    rminus as rminus,
    rplus as rplus,
)
from . import (
    hints as hints,
    manifold as manifold,
    se2 as se2,
    se3 as se3,
    so2 as so2,
    so3 as so3,
    utils as utils,
)
