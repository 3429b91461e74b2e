"""Status codes and the solver report :class:`SolveInfo`."""

from __future__ import annotations

from typing import NamedTuple

import jax

__all__ = ["STATUS", "SolveInfo"]

# ``info.status`` -> meaning. ``info.converged`` is True exactly for 1-4.
STATUS = {
    0: "running (max_iterations reached: the trial budget, accepted and rejected steps)",
    1: "converged: relative or absolute cost decrease below tolerance",
    2: "converged: gradient norm below gradient_tolerance",
    3: "converged: step norm below step_tolerance",
    4: "converged: no decrease possible even at maximum damping (local minimum to working precision)",
    5: "stopped: Gauss-Newton step increased the cost (values of that step returned, like GTSAM)",
    6: "stopped: non-finite cost or step (e.g. a NaN initial value, a zero quaternion, sigma 0)",
    7: "stopped: Gauss-Newton system singular or indefinite (a pivot block had to be clamped; "
    "the step was not taken): add a prior or use LM",
    8: "running (max_accepted_iterations reached: the cap on accepted steps, GTSAM's iterations)",
}
CONVERGED = (1, 2, 3, 4)


class SolveInfo(NamedTuple):
    """Solver report (a pytree of arrays; under ``vmap`` every field gains the batch axis).

    Attributes:
      cost: final cost ``sum rho(|W r|)`` (``0.5 |W r|^2`` per factor without robust loss).
      initial_cost: cost at the initial values.
      iterations: loop trips = linear solves (accepted and rejected LM trials), the count
        ``max_iterations`` bounds.
      accepted_steps: number of accepted steps, the count ``max_accepted_iterations`` bounds
        (GTSAM's iteration count: each GTSAM iteration ends with one accepted step).
      converged: True for status 1-4 with a finite cost and finite values.
      status: int code, see ``jaxgraph.solver.STATUS``.
      linear_clamped: number of trials whose linear system was not numerically positive
        definite, so the factorisation clamped a pivot block (see :mod:`jaxgraph.linear`);
        Gauss-Newton stops at the first one (status 7).
      damping: final LM damping ``lambda``.
      gradient_norm: max-abs gradient ``J^T W e`` at the returned values.
      history_cost / history_damping / history_step_norm / history_accepted: ``[max_iterations]``,
        the cost after trial k (the current cost, i.e. unchanged if rejected), the damping
        used by trial k, the step norm ``|dx|_2`` of trial k and whether it was accepted.
      history_mask: ``[max_iterations]`` True for trials that ran.
      anchored: True when :class:`jaxgraph.Problem` fixed a variable to fix the gauge (no
        factor fixes absolute values; ``problem.anchored`` says which): the solution is
        that of the problem with that variable held at its initial value.
    """

    cost: jax.Array
    initial_cost: jax.Array
    iterations: jax.Array
    accepted_steps: jax.Array
    converged: jax.Array
    status: jax.Array
    linear_clamped: jax.Array
    damping: jax.Array
    gradient_norm: jax.Array
    history_cost: jax.Array
    history_damping: jax.Array
    history_step_norm: jax.Array
    history_accepted: jax.Array
    history_mask: jax.Array
    anchored: jax.Array
