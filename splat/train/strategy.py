"""Densification strategies: frozen dataclasses with pure, jit-safe hooks (as gsplat's
``Strategy`` objects), and the fixed-shape primitives they are made of.

A strategy is chosen by object (``TrainConfig(strategy=MCMCStrategy(...))``) or, on the
command line, by name (:func:`strategy_from_name`). The training step calls the same
three hooks whatever the strategy, so it never branches on its kind:

* ``init_state(capacity, dtype)``: the strategy's own state, a pytree of [P] arrays
  (gradient accumulators for the default strategy, nothing for MCMC);
* ``regularization(params, active)``: a term added to the loss (MCMC's opacity and
  scale regularisers; 0 otherwise);
* ``step_post_backward(params, active, opt_state, state, ctx)``: after the optimiser
  update, returns the new (params, active, opt_state, state, info); ``info`` always
  holds the int32 counters of :data:`INFO_KEYS`.

Default (3DGS / gsplat's DefaultStrategy): per-Gaussian sums of the 2D-mean gradient
norm (or absgrad) over the views where it is visible; every ``refine_every`` steps
Gaussians whose average exceeds the threshold are cloned (small ones) or split in two
(large ones: children sampled from the Gaussian, scales / 1.6) into free slots; then
low-opacity and oversized Gaussians are pruned. Opacities are periodically clamped down.

MCMC (Kheradmand et al. 2024, gsplat's MCMCStrategy): no cloning by gradient; dead
Gaussians (opacity <= min_opacity) are relocated onto live ones sampled proportionally
to opacity, the budget grows by ``growth`` per refinement up to the capacity, and
opacity-scaled noise is added to the means every step.

Free slots are handed out in index order; requests that find no free slot are counted
and returned (``denied``) so that capacity exhaustion is visible in the step's metrics.
Adam moments of every slot whose content changed are zeroed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxgraph import lie

from ..projection import quat_scale_to_covar


def reset_moments(opt_state, name, rows):
    """Zero Adam's first and second moments of parameter ``name`` where rows [P] is True."""
    st = opt_state[name]
    adam = st[0]

    def z(m):
        mask = rows.reshape(rows.shape + (1,) * (m.ndim - 1))
        return jnp.where(mask, jnp.zeros_like(m), m)

    new = dict(opt_state)
    new[name] = (adam._replace(mu=z(adam.mu), nu=z(adam.nu)),) + tuple(st[1:])
    return new


def allocate(requests, active):
    """Assign free slots to requests in index order.

    requests, active: [P] bool. Returns (dst [P] int32 slot for each granted request, P
    for others (an out-of-range index that scatters with mode="drop" ignore), granted [P]
    bool, denied () int32 number of requests that found no free slot).
    """
    p = active.shape[0]
    free_idx = jnp.nonzero(~active, size=p, fill_value=p)[0].astype(jnp.int32)
    n_free = jnp.sum(~active, dtype=jnp.int32)
    rank = jnp.cumsum(requests.astype(jnp.int32)) - 1
    granted = requests & (rank < n_free)
    dst = jnp.where(granted, free_idx[jnp.clip(rank, 0, p - 1)], p)
    denied = jnp.sum(requests, dtype=jnp.int32) - jnp.sum(granted, dtype=jnp.int32)
    return dst, granted, denied


def _scatter_rows(params, dst, new_rows):
    return {k: params[k].at[dst].set(new_rows[k], mode="drop") for k in params}


def default_refine(params, active, opt_state, grad_acc, vis_count, step, key, strategy,
                   extent):
    """One refinement of the default strategy (``strategy``: a :class:`DefaultStrategy`).

    Returns (params, active, opt_state, info) with info: n_clone, n_split, n_prune,
    denied (int32 scalars).
    """
    dt = params["means"].dtype
    p = active.shape[0]
    avg = grad_acc / jnp.maximum(vis_count, 1).astype(dt)
    scale_max = jnp.exp(jnp.max(params["log_scales"], axis=-1))
    cand = active & (avg > strategy.grad_threshold)
    small = scale_max <= strategy.grow_scale3d * extent
    dst, granted, denied = allocate(cand, active)
    split = granted & ~small
    clone = granted & small

    k1, k2 = jax.random.split(key)
    rot = lie.matrix_from_quaternion(params["quats"])
    sc = jnp.exp(params["log_scales"])

    def sample(k):
        return jnp.einsum("pij,pj->pi", rot, sc * jax.random.normal(k, (p, 3), dt))

    shrink = jnp.asarray(math.log(1.6), dt)
    src = dict(params)
    src["means"] = jnp.where(split[:, None], params["means"] + sample(k1), params["means"])
    src["log_scales"] = jnp.where(split[:, None], params["log_scales"] - shrink,
                                  params["log_scales"])
    child = dict(src)
    child["means"] = jnp.where(split[:, None], params["means"] + sample(k2), params["means"])
    new_params = _scatter_rows(src, dst, child)
    new_active = active.at[dst].set(True, mode="drop")
    written = jnp.zeros((p,), bool).at[dst].set(True, mode="drop")

    opac = jax.nn.sigmoid(new_params["logit_opacities"])
    new_scale_max = jnp.exp(jnp.max(new_params["log_scales"], axis=-1))
    prune = new_active & (opac < strategy.prune_opa)
    prune = prune | (new_active & (step > strategy.reset_every)
                     & (new_scale_max > strategy.prune_scale3d * extent))
    new_active = new_active & ~prune
    changed = split | written | prune
    for name in new_params:
        opt_state = reset_moments(opt_state, name, changed)
    info = dict(n_clone=jnp.sum(clone, dtype=jnp.int32), n_split=jnp.sum(split, dtype=jnp.int32),
                n_prune=jnp.sum(prune, dtype=jnp.int32), denied=denied)
    return new_params, new_active, opt_state, info


def opacity_reset(params, opt_state, strategy):
    """Clamp opacities to at most 2 * prune_opa and zero their Adam moments."""
    dt = params["logit_opacities"].dtype
    v = 2 * strategy.prune_opa
    cap = jnp.asarray(math.log(v / (1 - v)), dt)
    params = dict(params)
    params["logit_opacities"] = jnp.minimum(params["logit_opacities"], cap)
    p = params["logit_opacities"].shape[0]
    opt_state = reset_moments(opt_state, "logit_opacities", jnp.ones((p,), bool))
    return params, opt_state


_N_MAX = 51  # cap on copies per source in the relocation formula (as gsplat)


def _binoms(dtype):
    b = np.zeros((_N_MAX, _N_MAX))
    for n in range(_N_MAX):
        for k in range(n + 1):
            b[n, k] = math.comb(n, k)
    return jnp.asarray(b, dtype)


def relocation(opacities, log_scales, ratios, min_opacity):
    """MCMC relocation rule: a Gaussian shared by ``ratios`` copies keeps its rendered
    footprint (Kheradmand et al. 2024, eq. 9).

    opacities [P]; log_scales [P, 3]; ratios [P] int32 >= 1. Returns (new opacities,
    new log scales).
    """
    dt = opacities.dtype
    r = jnp.clip(ratios, 1, _N_MAX)
    new_o = 1 - jnp.power(1 - opacities, 1 / r.astype(dt))
    new_o = jnp.clip(new_o, min_opacity, 1 - 1e-6)
    binoms = _binoms(dt)
    i = jnp.arange(1, _N_MAX + 1)  # i = 1..N
    k = jnp.arange(_N_MAX)  # k = 0..i-1
    coef = binoms[i[:, None] - 1, k[None, :]] * jnp.where(k % 2 == 0, 1.0, -1.0).astype(dt) \
        / jnp.sqrt(k + 1.0).astype(dt)
    valid = (k[None, :] < i[:, None]).astype(dt)
    powk = jnp.power(new_o[:, None], (k + 1).astype(dt)[None, :])  # [P, K]
    inner = jnp.einsum("ik,pk->pi", coef * valid, powk)  # [P, i]
    denom = jnp.sum(jnp.where(i[None, :] <= r[:, None], inner, 0), axis=1)
    coeff = opacities / denom
    ok = jnp.isfinite(coeff) & (coeff > 0) & (ratios > 1)
    new_ls = jnp.where(ok[:, None], log_scales + jnp.log(jnp.where(ok, coeff, 1))[:, None],
                       log_scales)
    new_o = jnp.where(ratios > 1, new_o, opacities)
    return new_o, new_ls


def mcmc_refine(params, active, opt_state, key, strategy):
    """Relocate dead Gaussians and grow the budget by ``strategy.growth`` (up to P)
    (``strategy``: an :class:`MCMCStrategy`).

    Returns (params, active, opt_state, info) with n_relocated, n_added, denied.
    """
    dt = params["means"].dtype
    p = active.shape[0]
    opac = jax.nn.sigmoid(params["logit_opacities"])
    dead = active & (opac <= strategy.min_opacity)
    live = active & ~dead
    n_active = jnp.sum(active, dtype=jnp.int32)
    target = jnp.minimum(p, jnp.floor(strategy.growth * n_active.astype(dt)).astype(jnp.int32))
    n_add = jnp.maximum(target - n_active, 0)
    free_rank = jnp.cumsum((~active).astype(jnp.int32)) - 1
    add = ~active & (free_rank < n_add)
    wanted = jnp.maximum(jnp.floor((strategy.growth - 1) * n_active.astype(dt)).astype(jnp.int32)
                         - jnp.sum(add, dtype=jnp.int32), 0)
    denied = jnp.where(n_active > 0, wanted, 0)
    targets = (dead | add) & jnp.any(live)
    logits = jnp.where(live, jnp.log(jnp.maximum(opac, 1e-12)), -jnp.inf)
    src = jax.random.categorical(key, logits, shape=(p,)).astype(jnp.int32)
    src = jnp.where(targets, src, p)
    counts = jnp.zeros((p,), jnp.int32).at[src].add(1, mode="drop")
    ratios = counts + 1
    new_o, new_ls = relocation(opac, params["log_scales"], ratios, strategy.min_opacity)
    upd = dict(params)
    upd["logit_opacities"] = jnp.log(new_o) - jnp.log1p(-new_o)
    upd["log_scales"] = new_ls
    # sources (counts > 0) take the shared values; targets copy their source's new row
    sources = counts > 0
    upd = {k: jnp.where(sources.reshape((p,) + (1,) * (v.ndim - 1)), upd[k], params[k])
           for k, v in params.items()}
    gather = jnp.clip(src, 0, p - 1)
    new_params = {k: jnp.where(targets.reshape((p,) + (1,) * (v.ndim - 1)), v[gather], v)
                  for k, v in upd.items()}
    new_active = active | targets
    changed = targets | sources
    for name in new_params:
        opt_state = reset_moments(opt_state, name, changed)
    info = dict(n_relocated=jnp.sum(dead & targets, dtype=jnp.int32),
                n_added=jnp.sum(add & targets, dtype=jnp.int32), denied=denied)
    return new_params, new_active, opt_state, info


def mcmc_noise(params, active, key, lr_means_now, strategy):
    """Noise on the means, shaped by each covariance, strong only for near-transparent
    Gaussians: sigmoid(100 (1 - opacity - 0.995)) * lr * noise_lr (gsplat's rule)."""
    dt = params["means"].dtype
    opac = jax.nn.sigmoid(params["logit_opacities"])
    gate = jax.nn.sigmoid(100 * ((1 - opac) - 0.995))
    cov = quat_scale_to_covar(params["quats"], jnp.exp(params["log_scales"]))
    eps = jax.random.normal(key, params["means"].shape, dt)
    noise = jnp.einsum("pij,pj->pi", cov, eps) * (gate * lr_means_now * strategy.noise_lr)[:, None]
    params = dict(params)
    params["means"] = params["means"] + jnp.where(active[:, None], noise, 0).astype(dt)
    return params


# ------------------------------------------------------------------ strategy objects

INFO_KEYS = ("n_clone", "n_split", "n_prune", "n_relocated", "n_added", "denied")


def _info(**counts):
    """A full info dict: the given int32 counters, zero for the other keys of INFO_KEYS."""
    zero = jnp.zeros((), jnp.int32)
    return {k: counts.get(k, zero) for k in INFO_KEYS}


class StepContext(NamedTuple):
    """What the training step hands to ``step_post_backward`` (all [P] arrays are of the
    single rendered view).

    step: () int32 optimiser steps done, this one included (1 after the first step);
    key: PRNG key for this step's refinement; radii: [P, 2] int32 (0 where not visible);
    grad2d, absgrad: [P, 2] dL/dmean2d and gsplat's absgrad, in pixels; width, height:
    image size (Python ints); extent: scene extent (Python float); lr_means: () current
    learning rate of the means.
    """

    step: Any
    key: Any
    radii: Any
    grad2d: Any
    absgrad: Any
    width: int
    height: int
    extent: float
    lr_means: Any


@dataclasses.dataclass(frozen=True)
class Strategy:
    """Base class and the "none" strategy: the initial Gaussians are kept as they are.

    Subclasses are frozen (hashable) dataclasses: their fields are static settings, part
    of the compiled step. Every hook is a pure function of arrays, safe under ``jit``.
    """

    name: ClassVar[str] = "none"

    @property
    def uses_absgrad(self) -> bool:
        """Whether the step must compute gsplat's absgrad for this strategy."""
        return False

    def init_state(self, capacity: int, dtype) -> dict:
        """The strategy's state for ``capacity`` slots: a pytree of fixed-shape arrays."""
        del capacity, dtype
        return {}

    def regularization(self, params, active):
        """Loss term (scalar) added by the strategy; ``active`` [P] bool."""
        del active
        return jnp.zeros((), params["means"].dtype)

    def step_post_backward(self, params, active, opt_state, state, ctx: StepContext):
        """After the optimiser update: (params, active, opt_state, state, info)."""
        del ctx
        return params, active, opt_state, state, dict(_info(), refined=jnp.zeros((), bool))

    def to_dict(self) -> dict:
        """JSON-able description (``name`` plus the fields); inverse of
        :func:`strategy_from_dict`."""
        return dict(name=self.name, **dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class NoDensification(Strategy):
    """Optimise the initial Gaussians only (``--strategy none``)."""

    name: ClassVar[str] = "none"


def _refine_if(do_refine, refine, carry: tuple):
    """``refine(carry)`` (which returns carry + (info,)) where do_refine () bool is
    True, else carry with all-zero counters: one ``lax.cond``, both branches compiled."""
    return jax.lax.cond(do_refine, refine, lambda a: a + (_info(),), carry)


@dataclasses.dataclass(frozen=True)
class RefiningStrategy(Strategy):
    """Base of the strategies that refine periodically: every ``refine_every`` optimiser
    steps strictly between ``refine_start`` and ``refine_stop``."""

    refine_start: int = 500
    refine_stop: int = 15_000
    refine_every: int = 100

    def __post_init__(self):
        if self.refine_every < 1:
            raise ValueError(f"refine_every must be >= 1, got {self.refine_every}")

    def refines_at(self, step):
        """() bool: whether optimiser step ``step`` (traced int32 allowed) refines."""
        return ((step > self.refine_start) & (step < self.refine_stop)
                & (step % self.refine_every == 0))


@dataclasses.dataclass(frozen=True)
class DefaultStrategy(RefiningStrategy):
    """3DGS's adaptive density control, with gsplat's DefaultStrategy defaults.

    grow_grad2d: threshold on the view-averaged 2D-gradient norm in NDC units (pixels
    times size / 2); None means 0.0002, or 0.0008 with ``absgrad``. grow_scale3d: clone
    (max scale <= grow_scale3d * extent) or split (larger). prune_opa: prune below this
    opacity; prune_scale3d: after the first opacity reset, prune Gaussians larger than
    prune_scale3d * extent. Refinement every ``refine_every`` steps strictly between
    ``refine_start`` and ``refine_stop``; opacities clamped to 2 * prune_opa every
    ``reset_every`` steps before ``refine_stop``.
    """

    name: ClassVar[str] = "default"
    prune_opa: float = 0.005
    grow_grad2d: float | None = None
    grow_scale3d: float = 0.01
    prune_scale3d: float = 0.1
    reset_every: int = 3000
    absgrad: bool = False

    def __post_init__(self):
        if self.refine_every < 1 or self.reset_every < 1:
            raise ValueError("refine_every and reset_every must be >= 1, got "
                             f"{self.refine_every}, {self.reset_every}")

    @property
    def uses_absgrad(self) -> bool:
        return self.absgrad

    @property
    def grad_threshold(self) -> float:
        if self.grow_grad2d is not None:
            return float(self.grow_grad2d)
        return 0.0008 if self.absgrad else 0.0002

    def init_state(self, capacity: int, dtype) -> dict:
        """grad_acc [P]: summed 2D-gradient norms since the last refinement; vis_count
        [P] int32: views in which each Gaussian was visible meanwhile."""
        return dict(grad_acc=jnp.zeros((capacity,), dtype),
                    vis_count=jnp.zeros((capacity,), jnp.int32))

    def step_post_backward(self, params, active, opt_state, state, ctx: StepContext):
        dt = params["means"].dtype
        g2d = ctx.absgrad if self.absgrad else ctx.grad2d
        # NDC units (pixels * size / 2), as gsplat accumulates them
        g2d = g2d * jnp.asarray([ctx.width / 2, ctx.height / 2], dt)
        visible = (ctx.radii[:, 0] > 0) & (ctx.radii[:, 1] > 0) & active
        grad_acc = state["grad_acc"] + jnp.where(visible, jnp.linalg.norm(g2d, axis=-1), 0)
        vis_count = state["vis_count"] + visible.astype(jnp.int32)
        do_refine = self.refines_at(ctx.step)

        def refine(args):
            pr, ac, os_, ga, vc = args
            pr, ac, os_, inf = default_refine(pr, ac, os_, ga, vc, ctx.step, ctx.key, self,
                                              ctx.extent)
            return pr, ac, os_, jnp.zeros_like(ga), jnp.zeros_like(vc), _info(**inf)

        params, active, opt_state, grad_acc, vis_count, info = _refine_if(
            do_refine, refine, (params, active, opt_state, grad_acc, vis_count))
        do_reset = (ctx.step % self.reset_every == 0) & (ctx.step < self.refine_stop)
        params, opt_state = jax.lax.cond(
            do_reset, lambda a: opacity_reset(a[0], a[1], self), lambda a: a,
            (params, opt_state))
        state = dict(grad_acc=grad_acc, vis_count=vis_count)
        return params, active, opt_state, state, dict(info, refined=do_refine)


@dataclasses.dataclass(frozen=True)
class MCMCStrategy(RefiningStrategy):
    """3DGS as MCMC (Kheradmand et al. 2024), as gsplat's MCMCStrategy; the capacity
    (``TrainConfig.capacity``) plays gsplat's ``cap_max``.

    min_opacity: Gaussians at or below it are dead and relocated; growth: factor on the
    active count per refinement (up to the capacity); noise_lr: scale of the noise on the
    means (times the current means learning rate); opacity_reg, scale_reg: weights of
    the mean opacity and mean scale added to the loss. Refinement every ``refine_every``
    steps strictly between ``refine_start`` and ``refine_stop``.
    """

    name: ClassVar[str] = "mcmc"
    refine_stop: int = 25_000
    min_opacity: float = 0.005
    growth: float = 1.05
    noise_lr: float = 5e5
    opacity_reg: float = 0.01
    scale_reg: float = 0.01

    def __post_init__(self):
        super().__post_init__()
        if self.growth < 1:
            raise ValueError(f"growth must be >= 1, got {self.growth}")

    def regularization(self, params, active):
        dt = params["means"].dtype
        act = active.astype(dt)
        n_act = jnp.maximum(jnp.sum(act), 1)
        reg = self.opacity_reg * jnp.sum(jax.nn.sigmoid(params["logit_opacities"]) * act)
        reg = reg + self.scale_reg * jnp.sum(jnp.exp(params["log_scales"]) * act[:, None]) / 3
        return reg / n_act

    def step_post_backward(self, params, active, opt_state, state, ctx: StepContext):
        dt = params["means"].dtype
        k_ref, k_noise = jax.random.split(ctx.key)
        do_refine = self.refines_at(ctx.step)

        def refine(args):
            *models, inf = mcmc_refine(*args, k_ref, self)
            return (*models, _info(**inf))

        params, active, opt_state, info = _refine_if(do_refine, refine,
                                                     (params, active, opt_state))
        params = mcmc_noise(params, active, k_noise, ctx.lr_means.astype(dt), self)
        return params, active, opt_state, state, dict(info, refined=do_refine)


STRATEGIES = {cls.name: cls for cls in (DefaultStrategy, MCMCStrategy, NoDensification)}


def strategy_from_name(name: str, **fields) -> Strategy:
    """The strategy called ``name`` ("default", "mcmc" or "none") with ``fields`` set."""
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {sorted(STRATEGIES)}, got {name!r}")
    return STRATEGIES[name](**fields)


def strategy_from_dict(d: dict) -> Strategy:
    """Inverse of :meth:`Strategy.to_dict`."""
    d = dict(d)
    return strategy_from_name(d.pop("name"), **d)
