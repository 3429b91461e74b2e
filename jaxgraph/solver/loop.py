"""The optimisation loop: one ``lax.while_loop`` (or fixed-length ``lax.scan``) of trials.

Every trip linearises at the pending candidate (trip 0: at the initial values), accepts or
rejects it, checks termination, updates the damping and solves for the next candidate.
Linearisation and linear solve are each traced once, which halves compile time against the
obvious layout that also linearises before the loop; the candidate's cost comes with its
linearisation, so a trial costs one linearisation and one linear solve.
"""

from __future__ import annotations

import math
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


# Unrolled loops of more trips run as a scan of checkpointed chunks (see Loop.scan).
_FLAT_TRIPS = 256


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
        self.lstruct = self.st.linear_structure(config.linear_solver, config.schur)
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
        # The cap on accepted steps (GTSAM's iterations): not convergence, so last.
        cap = t.max_accepted_iterations  # infinity unless set (TerminationConfig.resolved)
        capped = trial & v.ok & (s.accepted_steps + 1 >= cap) if cap is not None else no
        return jnp.select(
            [bad, singular, increased, conv_cost, conv_grad, conv_step, limit, capped], [6, 7, 5, 1, 2, 3, 4, 8], 0
        ).astype(jnp.int32)

    def report(self, s: _State, v: _Verdict, cost):
        """Call the user's progress callback for a judged trial (not for trip 0)."""
        if self.config.callback is not None:
            progress.report(self.config.callback, s.first, s.it, cost, s.lam_used, s.step_norm, v.ok)

    # -- the loop ------------------------------------------------------------------------
    def trip(self, s: _State):
        """One trip: ``(state, record)``, the record being this trip's history entry
        ``(cost, damping, step_norm, accepted, ran)`` (``ran`` False on trip 0)."""
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
        state = s._replace(
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
        )
        dt = self.dtype
        record = (new_lin.cost.astype(dt), jnp.asarray(s.lam_used).astype(dt), s.step_norm.astype(dt),
                  v.ok & trial, trial)
        return state, record

    def body(self, s: _State) -> _State:
        """One trip of the while loop: the trip, its record written into the history arrays."""
        state, record = self.trip(s)
        k = jnp.maximum(s.it, 0)
        ran = record[-1]

        def put(h, x):  # one element: O(1) per trip, not a select over the whole array
            # a dynamic-update-slice, not h.at[k].set: XLA:CPU compiles a scatter as a loop
            # kernel of its own
            old = jax.lax.dynamic_index_in_dim(h, k, keepdims=False)
            return jax.lax.dynamic_update_index_in_dim(h, jnp.where(ran, x, old), k, 0)

        hist = (s.h_cost, s.h_lam, s.h_step, s.h_acc, s.h_mask)
        h_cost, h_lam, h_step, h_acc, h_mask = (put(h, x) for h, x in zip(hist, record))
        return state._replace(h_cost=h_cost, h_lam=h_lam, h_step=h_step, h_acc=h_acc, h_mask=h_mask)

    def initial_state(self, values, history: bool = True) -> _State:
        """The state before trip 0; ``history=False``: empty history arrays (the scan keeps
        its records as outputs, not in the carry that reverse mode saves per trip)."""
        n, zero = self.config.termination.max_iterations if history else 0, self.zero
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

    def scan(self, values):
        """The loop as a fixed-length ``lax.scan`` of ``max_iterations + 1`` trips: ``(state,
        history)``. A stopped state is carried through unchanged, so the result equals the
        while-loop's.

        ``lax.cond``, not a select: the trips after convergence cost nothing (under vmap JAX
        turns it into a select). ``jax.checkpoint``: reverse mode stacks only the carry of each
        trip and recomputes an active trip's forward pass. Without it the scan stacked every
        trip's residuals (Jacobians, factor data), zeros for stopped trips included: 101 trips
        of which 7 active on smallGrid3D. Unroll value_and_grad in benchmarks/theseus.py:
        3.3-3.9x faster on intel, smallGrid3D and sphere2500; truncated (all trips active): same
        time, far less memory. The history is the scan's output, not part of the carry (in the
        carry, reverse mode saved all of it at every trip: memory quadratic in the trips).

        More than ``_FLAT_TRIPS`` trips run as a scan of checkpointed chunks of about
        ``sqrt(trips)`` trips each: reverse mode then keeps one carry per chunk plus the
        carries of one chunk (about ``2 sqrt(trips)`` in all, e.g. 90 for the default 2000
        trials instead of 2001) and recomputes an active trip's forward pass twice instead of
        once.
        """
        trips = self.config.termination.max_iterations + 1

        @jax.checkpoint
        def one(s, _):
            zero, no = jnp.zeros((), self.dtype), jnp.zeros((), bool)
            return jax.lax.cond(s.running, self.trip, lambda s: (s, (zero, zero, zero, no, no)), s)

        s0 = self.initial_state(values, history=False)
        if trips <= _FLAT_TRIPS:
            s, rec = jax.lax.scan(one, s0, None, length=trips)
        else:
            size = math.isqrt(trips - 1) + 1  # ceil(sqrt(trips)) chunks of that many trips
            count = -(-trips // size)

            @jax.checkpoint
            def chunk(s, _):
                return jax.lax.scan(one, s, None, length=size)

            s, rec = jax.lax.scan(chunk, s0, None, length=count)
            rec = jax.tree_util.tree_map(lambda r: r.reshape((count * size,) + r.shape[2:]), rec)
        # trip 0 linearises the initial values; trip j > 0 is trial j - 1 (trials are consecutive,
        # a stopped trip records zeros as the while loop leaves its unused entries)
        return s, tuple(r[1:trips] for r in rec)

    def run(self, values, *, unrolled: bool = False):
        """``(values, SolveInfo)``; ``unrolled``: a fixed-length scan (reverse-differentiable)."""
        if unrolled:
            s, history = self.scan(values)
        else:
            s = jax.lax.while_loop(lambda s: s.running, self.body, self.initial_state(values))
            history = (s.h_cost, s.h_lam, s.h_step, s.h_acc, s.h_mask)
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
            history_cost=history[0],
            history_damping=history[1],
            history_step_norm=history[2],
            history_accepted=history[3],
            history_mask=history[4],
            anchored=jnp.asarray(self.st.anchored is not None),
        )
        return s.values, info


def run(problem: Problem, values: dict, config: SolverConfig, *, unrolled: bool = False, stop: bool = True):
    """Run the solver loop (traceable; callers jit it)."""
    return Loop(problem, values, config, stop=stop).run(values, unrolled=unrolled)
