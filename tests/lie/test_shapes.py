"""Every public map and group constructor of jaxgraph.lie refuses an input whose trailing axes
are wrong, naming the map, the argument and the expected shape (issue 23: a 5-vector given to
``SE3.exp`` used to broadcast into a wrong transform; others failed deep inside a map)."""

import jax.numpy as jnp
import pytest

from jaxgraph import lie

# (callable, name in the message, expected trailing shape, a right-shaped argument)
MAPS = [
    (lie.so3_exp, "so3_exp", (3,)),
    (lie.so3_log, "so3_log", (3, 3)),
    (lie.so3_right_jacobian, "so3_right_jacobian", (3,)),
    (lie.so3_left_jacobian_inverse, "so3_left_jacobian_inverse", (3,)),
    (lie.se3_exp, "se3_exp", (6,)),
    (lie.se3_log, "se3_log", (4, 4)),
    (lie.se3_adjoint, "se3_adjoint", (4, 4)),
    (lie.se3_right_jacobian_inverse, "se3_right_jacobian_inverse", (6,)),
    (lie.se2_exp, "se2_exp", (3,)),
    (lie.se2_log, "se2_log", (3, 3)),
    (lie.so2_exp, "so2_exp", (1,)),
    (lie.so2_log, "so2_log", (2, 2)),
    (lie.SE3.exp, "SE3.exp", (6,)),
    (lie.SO3.exp, "SO3.exp", (3,)),
    (lie.SE2.exp, "SE2.exp", (3,)),
    (lie.SO2.exp, "SO2.exp", (1,)),
    (lie.SE3.from_matrix, "SE3.from_matrix", (4, 4)),
    (lie.SO3.from_matrix, "SO3.from_matrix", (3, 3)),
    (lie.SE2.from_matrix, "SE2.from_matrix", (3, 3)),
    (lie.SO2.from_matrix, "SO2.from_matrix", (2, 2)),
    (lie.SE3.identity().apply, "SO3.apply", (3,)),
    (lie.SO2.identity().apply, "SO2.apply", (2,)),
]


def _wrong(shape):
    """One element too many on the last axis, and a missing axis for matrices."""
    yield shape[:-1] + (shape[-1] + 1,)
    yield shape[:-1] + (shape[-1] - 1,)
    if len(shape) == 2:
        yield shape[-1:]


@pytest.mark.parametrize("fn,name,shape", MAPS, ids=[m[1] for m in MAPS])
def test_wrong_trailing_shape_is_named(fn, name, shape):
    for bad in _wrong(shape):
        with pytest.raises(ValueError, match=rf"^{name}: \w+ must have shape \[\.\.\., {', '.join(map(str, shape))}\], "
                                             rf"got shape \({bad[0]},"):
            fn(jnp.zeros(bad))


@pytest.mark.parametrize("fn,name,shape", MAPS, ids=[m[1] for m in MAPS])
def test_right_shape_with_batch_axes_is_accepted(fn, name, shape):
    # identity-like inputs: zeros for tangents and points, identity matrices for matrices
    x = jnp.broadcast_to(jnp.eye(shape[0]) if len(shape) == 2 else jnp.zeros(shape), (2, 5) + shape)
    out = fn(x)
    leaves = out.parameters() if isinstance(out, lie.MatrixLieGroup) else out
    assert leaves.shape[:2] == (2, 5)
    assert bool(jnp.all(jnp.isfinite(leaves)))
