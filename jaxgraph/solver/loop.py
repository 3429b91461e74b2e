"""The optimisation loop: one ``lax.while_loop`` (or fixed-length ``lax.scan``) of trials.

Every trip linearises at the pending candidate (trip 0: at the initial values), accepts or
rejects it, checks termination, updates the damping and solves for the next candidate.
Linearisation and linear solve are each traced once, which halves compile time against the
obvious layout that also linearises before the loop; the candidate's cost comes with its
linearisation, so a trial costs one linearisation and one linear solve.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import linear
from ..graph.problem import Linearization, Problem, values_dtype
from . import progress
from .config import SolverConfig
from .status import CONVERGED, SolveInfo


class _State(NamedTuple):
    values: dict  # accepted values
    lin: Linearization  # linearisation at the accepted values
    cand: dict  # candidate values of the pending trial
    gdx: jax.Array  # g . dx of the pending trial
    ddx: jax.Array  # lambda * dx^T D dx of the pending trial
    step_norm: jax.Array  # |dx|_2 of the pending trial
    clamped: jax.Array  # the pending trial's linear system had to be clamped (not positive definite)
    lam_used: jax.Array  # damping the pending trial was solved with
    lam: jax.Array  # current damping
    initial_cost: jax.Array
    it: jax.Array  # trials judged so far
    accepted_steps: jax.Array
    clamped_trials: jax.Array
    status: jax.Array
    running: jax.Array
    first: jax.Array  # trip 0: the "candidate" is the initial values, accepted unjudged
    h_cost: jax.Array
    h_lam: jax.Array
    h_step: jax.Array
    h_acc: jax.Array
    h_mask: jax.Array


class _Step(NamedTuple):
    """A proposed candidate and the numbers needed to judge it."""

    cand: dict
    gdx: jax.Array
    ddx: jax.Array
    step_norm: jax.Array
    clamped: jax.Array  # the factorisation replaced a pivot block: H (+ lambda D) not positive definite


class _Verdict(NamedTuple):
    """Accept/reject decision on the pending candidate."""

    ok: jax.Array  # take the step (LM: model fidelity; GN: finite cost from an unclamped system)
    finite: jax.Array  # the candidate's cost is finite
    step_finite: jax.Array  # the step itself is finite
    actual: jax.Array  # actual cost decrease
    predicted: jax.Array  # decrease predicted by the quadratic model


def _select(pred, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


class Loop:
    """The solver loop for one problem, dtype and configuration (built at trace time).

    ``stop=False`` runs a fixed number of trials (the truncated backward mode): no
    termination rule fires.
    """

    def __init__(self, problem: Problem, values: dict, config: SolverConfig, *, stop: bool = True):
        self.dtype = values_dtype(values)
        # the dtype of the normal equations, the gradient and the costs (see SolverConfig)
        self.acc = jax.dtypes.canonicalize_dtype(jnp.float64) if config.accumulation == "widest" else self.dtype
        self.acc = jnp.promote_types(self.acc, self.dtype)
        self.problem = problem.prepared(self.dtype)
        self.st = self.problem.structure
        self.config = config
        self.stop = stop
        self.lm = config.method == "lm"
        # Symbolic analysis happens here, at trace time, once per structure and method.
        self.lstruct = self.st.linear_structure(config.linear_solver)
        # a size-class problem passes its sparsity pattern to the linear solver as data
        self.pattern = self.problem.linear_pattern() if self.lstruct.dynamic else None
        self.free = self.problem.free_mask(self.dtype)
        self.zero = jnp.zeros((), self.acc)

    # -- named steps -------------------------------------------------------------------
    def propose(self, values, lin: Linearization, lam) -> _Step:
        """Solve ``(H + lam D) dx = -g`` (GN: ``H dx = -g``) and retract to the candidate."""
        st, d, dtype = self.st, self.st.block_dim, self.acc
        eye = jnp.eye(d, dtype=dtype)
        if self.lm:
            if self.config.damping.diagonal_damping:
                dvec = jnp.maximum(jnp.diagonal(lin.diag, axis1=-2, axis2=-1), 1e-6)
            else:
                dvec = jnp.ones((st.num_blocks, d), dtype)
            A = lin.diag + (lam * dvec)[:, :, None] * eye
        else:
            dvec = jnp.zeros((st.num_blocks, d), dtype)
            A = lin.diag
        dx, lin_info = linear.solve_with_info(self.lstruct, A, lin.offdiag, -lin.gradient, pattern=self.pattern)
        dx = dx * self.free.astype(dtype)
        cand = self.problem.retract(values, dx.astype(self.dtype))
        return _Step(
            cand, jnp.sum(lin.gradient * dx), jnp.sum(dvec * dx * dx) * lam, jnp.sqrt(jnp.sum(dx * dx)), lin_info.clamped
        )

    def judge(self, s: _State, lin_c: Linearization) -> _Verdict:
        """Accept or reject the pending candidate (linearised as ``lin_c``)."""
        # Predicted decrease of the undamped quadratic model, using (H + lam D) dx = -g.
        predicted = 0.5 * (s.ddx - s.gdx)
        actual = s.lin.cost - lin_c.cost
        finite = jnp.isfinite(lin_c.cost)
        step_finite = jnp.isfinite(s.step_norm)
        if self.lm:
            ok = finite & step_finite & (predicted > 0) & (actual > self.config.damping.min_model_fidelity * predicted)
        else:
            # A step from a clamped factorisation is not a Gauss-Newton step: not taken.
            ok = finite & step_finite & ~s.clamped
        return _Verdict(ok, finite, step_finite, actual, predicted)

    def next_damping(self, s: _State, v: _Verdict):
        """LM: divide ``lambda`` after an accepted step, multiply after a rejected one."""
        if not self.lm:
            return s.lam
        c = self.config.damping
        lam = jnp.where(v.ok, jnp.maximum(s.lam / c.damping_factor, c.min_damping), s.lam * c.damping_factor)
        return jnp.where(s.first, s.lam, lam)

    def termination(self, s: _State, v: _Verdict, new_lin: Linearization, lam):
        """Status code after this trial (0: keep going); see ``STATUS``."""
        if not self.stop:  # fixed number of trials (truncated backward)
            return jnp.zeros((), jnp.int32)
        t = self.config.termination
        trial = ~s.first
        no = jnp.zeros((), bool)
        conv_cost = trial & v.ok & ((v.actual <= t.tolerance * s.lin.cost) | (v.actual <= t.absolute_tolerance))
        conv_cost = conv_cost | (new_lin.cost <= 0)
        # A rejected, essentially undamped step (damping under a tenth of the model decrease)
        # whose predicted decrease is itself below tolerance: the minimum is reached to the
        # precision the cost can be evaluated in (float32 values: the candidate's cost is
        # rounding noise, so waiting for an accepted step only raises the damping; city10000
        # took 20 trials instead of 6).
        tiny = (v.predicted <= t.tolerance * s.lin.cost) | (v.predicted <= t.absolute_tolerance)
        conv_cost = conv_cost | (trial & ~v.ok & v.finite & tiny & (s.ddx <= -0.1 * s.gdx)) if self.lm else conv_cost
        conv_grad = jnp.max(jnp.abs(new_lin.gradient)) <= t.gradient_tolerance
        conv_step = trial & v.ok & (s.step_norm <= t.step_tolerance)
        limit = trial & ~v.ok & (lam >= self.config.damping.max_damping) if self.lm else no
        increased = trial & v.ok & (v.actual < 0) if not self.lm else no
        # Non-finite: the current cost (trip 0: the initial cost) or the step, for LM and GN;
        # GN has no damping to retreat with, so a non-finite candidate cost stops it too.
        bad = ~jnp.isfinite(new_lin.cost) | (trial & ~v.step_finite)
        if not self.lm:
            bad = bad | (trial & ~v.finite)
        singular = trial & s.clamped if not self.lm else no
        return jnp.select(
            [bad, singular, increased, conv_cost, conv_grad, conv_step, limit], [6, 7, 5, 1, 2, 3, 4], 0
        ).astype(jnp.int32)

    def report(self, s: _State, v: _Verdict, cost):
        """Call the user's progress callback for a judged trial (not for trip 0)."""
        if self.config.callback is not None:
            progress.report(self.config.callback, s.first, s.it, cost, s.lam_used, s.step_norm, v.ok)

    # -- the loop ------------------------------------------------------------------------
    def body(self, s: _State) -> _State:
        lin_c = self.problem.linearize(s.cand, self.acc)
        v = self.judge(s, lin_c)
        lam = self.next_damping(s, v)
        accept = s.first | v.ok
        new_values = _select(accept, s.cand, s.values)
        new_lin = _select(accept, lin_c, s.lin)
        status = self.termination(s, v, new_lin, lam)
        trial = ~s.first
        it = s.it + trial.astype(jnp.int32)
        running = (status == 0) & (it < self.config.termination.max_iterations)
        self.report(s, v, new_lin.cost)
        zero = self.zero
        step = jax.lax.cond(
            running,
            lambda _: self.propose(new_values, new_lin, lam),
            lambda _: _Step(s.cand, zero, zero, zero, jnp.zeros((), bool)),
            None,
        )
        k = jnp.maximum(s.it, 0)

        def record(h, x):
            return jnp.where(trial, h.at[k].set(jnp.asarray(x).astype(h.dtype)), h)

        return _State(
            values=new_values,
            lin=new_lin,
            cand=step.cand,
            gdx=step.gdx,
            ddx=step.ddx,
            step_norm=step.step_norm,
            clamped=step.clamped,
            lam_used=lam,
            lam=lam,
            initial_cost=jnp.where(s.first, lin_c.cost, s.initial_cost),
            it=it,
            accepted_steps=s.accepted_steps + (trial & v.ok).astype(jnp.int32),
            clamped_trials=s.clamped_trials + (trial & s.clamped).astype(jnp.int32),
            status=status,
            running=running,
            first=jnp.zeros((), bool),
            h_cost=record(s.h_cost, new_lin.cost),
            h_lam=record(s.h_lam, s.lam_used),
            h_step=record(s.h_step, s.step_norm),
            h_acc=record(s.h_acc, v.ok),
            h_mask=record(s.h_mask, True),
        )

    def initial_state(self, values) -> _State:
        n, zero = self.config.termination.max_iterations, self.zero
        zeros = jnp.zeros((n,), self.dtype)
        return _State(
            values=values,
            lin=self.problem.zero_linearization(self.acc),
            cand=values,
            gdx=zero,
            ddx=zero,
            step_norm=zero,
            clamped=jnp.zeros((), bool),
            lam_used=jnp.zeros((), self.dtype),
            lam=self.config.damping.initial_damping if self.lm else jnp.zeros((), self.dtype),
            initial_cost=zero,
            it=jnp.zeros((), jnp.int32),
            accepted_steps=jnp.zeros((), jnp.int32),
            clamped_trials=jnp.zeros((), jnp.int32),
            status=jnp.zeros((), jnp.int32),
            running=jnp.ones((), bool),
            first=jnp.ones((), bool),
            h_cost=zeros,
            h_lam=zeros,
            h_step=zeros,
            h_acc=jnp.zeros((n,), bool),
            h_mask=jnp.zeros((n,), bool),
        )

    def run(self, values, *, unrolled: bool = False):
        """``(values, SolveInfo)``; ``unrolled``: a fixed-length scan (reverse-differentiable)."""
        s0 = self.initial_state(values)
        if unrolled:
            # A stopped state is carried through unchanged, so the result equals the while-loop's.
            # lax.cond, not a select: the trials after convergence (most of max_iterations)
            # then cost nothing (under vmap JAX turns it into a select).
            # jax.checkpoint: reverse mode stacks only the carry of each trip and recomputes an
            # active trip's forward pass. Without it the scan stacked every trip's residuals
            # (Jacobians, factor data), zeros for stopped trips included: 101 trips of which 7
            # active on smallGrid3D. Unroll value_and_grad in benchmarks/theseus.py: 3.3-3.9x
            # faster on intel, smallGrid3D and sphere2500; truncated (all trips active): same
            # time, far less memory.
            @jax.checkpoint
            def scan_body(s, _):
                return jax.lax.cond(s.running, self.body, lambda s: s, s), None

            s, _ = jax.lax.scan(scan_body, s0, None, length=self.config.termination.max_iterations + 1)
        else:
            s = jax.lax.while_loop(lambda s: s.running, self.body, s0)
        # A promise: "converged" only with a finite cost and finite values.
        finite = jnp.isfinite(s.lin.cost)
        for leaf in jax.tree_util.tree_leaves(s.values):
            finite = finite & jnp.all(jnp.isfinite(leaf))
        converged = jnp.isin(s.status, jnp.asarray(CONVERGED))
        status = jnp.where(converged & ~finite, 6, s.status).astype(jnp.int32)
        info = SolveInfo(
            cost=s.lin.cost.astype(self.dtype),
            initial_cost=s.initial_cost.astype(self.dtype),
            iterations=s.it,
            accepted_steps=s.accepted_steps,
            converged=converged & finite,
            status=status,
            linear_clamped=s.clamped_trials,
            damping=s.lam,
            gradient_norm=jnp.max(jnp.abs(s.lin.gradient)).astype(self.dtype),
            history_cost=s.h_cost,
            history_damping=s.h_lam,
            history_step_norm=s.h_step,
            history_accepted=s.h_acc,
            history_mask=s.h_mask,
            anchored=jnp.asarray(self.st.anchored is not None),
        )
        return s.values, info


def run(problem: Problem, values: dict, config: SolverConfig, *, unrolled: bool = False, stop: bool = True):
    """Run the solver loop (traceable; callers jit it)."""
    return Loop(problem, values, config, stop=stop).run(values, unrolled=unrolled)
