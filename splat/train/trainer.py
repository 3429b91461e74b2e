"""The jit-compiled training step (rendering, loss, Adam, densification) and its driver."""

from __future__ import annotations

import functools
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..metrics import SSIM_WINDOW, psnr, ssim
from . import strategy as strat
from jaxgraph import lie

from .poses import (apply_correction, corrected_viewmats, gauge_basis, gauss_newton_step,
                    image_motion_jacobian, remove_gauge, tangent_jacobian)
from .presets import suggest_capacity
from .state import PARAM_NAMES, TrainConfig, TrainState, init_params, render
from .views import evaluate_views, render_checked, render_views


# fit() reports the measured time per step once this many steps followed the first one
TIMING_STEPS = 10


def _duration(seconds: float) -> str:
    """'42 s', '3.5 min' or '1.2 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def make_optimizers(cfg: TrainConfig, extent: float) -> dict:
    """One optax Adam per parameter (eps 1e-15 as in 3DGS); means' rate scaled by the
    scene extent and decaying exponentially over ``cfg.steps``."""
    lr_means = optax.exponential_decay(
        cfg.lr_means * extent, transition_steps=max(cfg.steps, 1),
        decay_rate=cfg.lr_means_final_ratio)
    lrs = dict(means=lr_means, quats=cfg.lr_quats, log_scales=cfg.lr_scales,
               logit_opacities=cfg.lr_opacities, sh0=cfg.lr_sh0, shN=cfg.lr_shN)
    return {k: optax.chain(optax.scale_by_adam(eps=1e-15), optax.scale_by_learning_rate(lrs[k]))
            for k in PARAM_NAMES}


# Adam's moment decays for the pose corrections (optax's defaults) and its epsilon (3DGS's)
POSE_BETAS = (0.9, 0.999)
POSE_EPS = 1e-15


def init_pose_state(n_views: int, dtype) -> dict:
    """Zero corrections [V, 6] and their per-camera Adam state (moments [V, 6] and the number
    of updates [V] each camera has had)."""
    def zeros():  # separate buffers: the step donates the state
        return jnp.zeros((n_views, 6), dtype)

    return dict(delta=zeros(), opt=dict(mu=zeros(), nu=zeros(),
                                        count=jnp.zeros((n_views,), jnp.int32)))


def pose_update(pose: dict, idx, grad, step, cfg: TrainConfig, extent: float) -> dict:
    """One Adam update of camera ``idx``'s correction only (the others and their moments
    stay as they are), from ``grad`` [V, 6] (non-zero in row ``idx``) at optimiser ``step``.

    Why per camera: a camera is drawn about every V steps. A dense Adam decays every
    camera's first moment each step, so by the next draw it has forgotten the last gradient
    (0.9^V) and each draw moves the camera by about a rate in the sign of one noisy gradient;
    this one averages a camera's gradients over its own draws (as torch's SparseAdam), so a
    draw moves it by at most about ``lr`` and by less where the gradients disagree.
    Rates: ``lr_pose`` (rad) on the rotation, ``lr_pose * extent`` on the translation,
    decaying exponentially from ``cfg.pose_opt_start`` to ``lr_pose_final_ratio`` of that
    at ``cfg.steps``; nothing moves before ``cfg.pose_opt_start`` (the gradients of a model
    that has not formed yet point anywhere). ``pose_weight_decay`` adds an L2 pull to zero to
    the gradient (torch Adam's weight_decay, as gsplat's pose_opt_reg)."""
    delta, st = pose["delta"], pose["opt"]
    b1, b2 = POSE_BETAS
    live = (jnp.arange(delta.shape[0]) == idx) & (step >= cfg.pose_opt_start)
    g = grad + cfg.pose_weight_decay * delta
    count = st["count"] + live.astype(jnp.int32)
    live2 = live[:, None]
    mu = jnp.where(live2, b1 * st["mu"] + (1 - b1) * g, st["mu"])
    nu = jnp.where(live2, b2 * st["nu"] + (1 - b2) * g * g, st["nu"])
    n = jnp.maximum(count, 1).astype(delta.dtype)[:, None]
    m_hat, v_hat = mu / (1 - b1 ** n), nu / (1 - b2 ** n)
    frac = (step - cfg.pose_opt_start).astype(jnp.float32) / max(
        cfg.steps - cfg.pose_opt_start, 1)
    lr = cfg.lr_pose * jnp.power(jnp.float32(cfg.lr_pose_final_ratio), frac)
    per_coord = jnp.asarray([extent] * 3 + [1.0] * 3, delta.dtype)
    upd = -(lr * per_coord).astype(delta.dtype) * m_hat / (jnp.sqrt(v_hat) + POSE_EPS)
    return dict(delta=jnp.where(live2, delta + upd, delta), opt=dict(mu=mu, nu=nu, count=count))


def pose_gn_update(pose: dict, idx, jacobian_fn, residual, step, cfg: TrainConfig,
                   extent: float) -> dict:
    """One Levenberg-Marquardt step of camera ``idx``'s correction only (the others stay):
    ``d`` from :func:`splat.train.poses.gauss_newton_step` on the view's photometric residual
    [H, W, 3] (rendered minus observed) and ``jacobian_fn()`` [H, W, 3, 6], its Jacobian
    (``cfg.pose_gn_jacobian``: direct image alignment's or the exact one) with respect to a
    further camera-frame correction ``Exp(d)`` of the drawn camera's current pose; then
    ``delta[idx] = Log(Exp(d) Exp(delta[idx]))``.

    Why: the per-camera gradient step crawls along a valley in which turning the camera about
    its centre and moving it sideways nearly cancel in the image (docs/poses.md); the 6x6
    normal equations hold that coupling and step across it. Nothing moves (and
    ``jacobian_fn`` is not evaluated: ``lax.cond``) before ``cfg.pose_opt_start``; the step
    is damped by ``cfg.pose_gn_damping`` and capped by ``cfg.pose_gn_max_step_deg`` (and
    that angle in radians times ``extent`` for the translation). ``count`` counts the steps
    taken per camera; the Adam moments are left at zero. With ``cfg.pose_gn_decay`` the step
    is scaled by Adam's rate schedule (1 at the start to ``lr_pose_final_ratio`` at the end):
    a later draw then moves the camera part of the way only."""
    delta = pose["delta"]
    live = step >= cfg.pose_opt_start
    max_rot = float(np.deg2rad(cfg.pose_gn_max_step_deg))

    def move(delta):
        d = gauss_newton_step(jacobian_fn(), residual, cfg.pose_gn_damping, max_rot,
                              max_rot * extent)
        if cfg.pose_gn_decay:
            frac = (step - cfg.pose_opt_start).astype(jnp.float32) / max(
                cfg.steps - cfg.pose_opt_start, 1)
            d = d * jnp.power(jnp.float32(cfg.lr_pose_final_ratio), frac).astype(d.dtype)
        new = (lie.SE3.exp(d.astype(delta.dtype)) @ lie.SE3.exp(delta[idx])).log()
        return delta.at[idx].set(new.astype(delta.dtype))

    delta = jax.lax.cond(live, move, lambda x: x, delta)
    st = pose["opt"]
    count = st["count"] + ((jnp.arange(delta.shape[0]) == idx) & live).astype(jnp.int32)
    return dict(delta=delta, opt=dict(st, count=count))


def _train_step(state: TrainState, images, viewmats, Ks, *, cfg: TrainConfig, extent: float,
                opts: dict, width: int, height: int, trace_counter: list, gauge=None):
    trace_counter.append(1)  # runs only while tracing: counts compilations
    dt = state.params["means"].dtype
    strategy = cfg.strategy
    # the fourth key is unused: kept so that runs reproduce the earlier releases' numbers
    key, k_view, k_strategy, _ = jax.random.split(state.key, 4)
    n_views = images.shape[0]
    idx = jax.random.randint(k_view, (), 0, n_views)
    gt = images[idx].astype(dt) / 255.0
    K = Ks[idx][None]
    step = state.step
    deg = jnp.minimum(step // cfg.sh_degree_interval, cfg.sh_degree)
    p = state.active.shape[0]
    gn = state.pose is not None and cfg.pose_optimizer == "gauss_newton"
    # the image Jacobian needs the view's depth: rendered as a fourth channel of the same
    # render (the loss does not see it, so its gradient is zero)
    with_depth = gn and cfg.pose_gn_jacobian == "image"

    def loss_fn(params, m_probe, a_probe, delta):
        vm = viewmats[idx][None]
        if delta is not None:  # the selected camera's correction; its gradient trains it
            vm = apply_correction(vm, delta[idx][None].astype(vm.dtype))
        img, alpha, meta = render(params, state.active, vm, K, width, height, cfg, deg,
                                  means2d_probe=m_probe,
                                  absgrad_probe=a_probe if strategy.uses_absgrad else None,
                                  render_mode="RGB+ED" if with_depth else "RGB")
        img, alpha = img[0], alpha[0]
        depth = img[..., 3] if with_depth else None
        img = img[..., :3]
        l1 = jnp.mean(jnp.abs(img - gt))
        mse = jnp.mean((img - gt) ** 2)
        ss = ssim(img, gt) if min(width, height) >= SSIM_WINDOW else 1 - l1
        loss = (1 - cfg.ssim_lambda) * l1 + cfg.ssim_lambda * (1 - ss)
        loss = loss + strategy.regularization(params, state.active)
        return loss, (mse, meta["radii"][0], meta["overflow"], img, alpha, depth)

    probes = (jnp.zeros((1, p, 2), dt), jnp.zeros((1, p, 2), dt))
    delta = None if state.pose is None else state.pose["delta"]
    (loss, (mse, radii, overflow, img, alpha, depth)), (grads, g_m, g_a, g_pose) = \
        jax.value_and_grad(loss_fn, argnums=(0, 1, 2, 3), has_aux=True)(
            state.params, *probes, delta)
    pose = state.pose
    if gn:
        residual = img - gt
        if with_depth:
            # pixels that show something (alpha > 0.5) at a positive depth; elsewhere the
            # expected depth means nothing
            seen = (alpha[..., 0] > 0.5) & (depth > cfg.near_plane)
            residual = jnp.where(seen[..., None], residual, 0)

            def jacobian():
                z = jnp.where(seen, depth, 1.0)
                jac = image_motion_jacobian(jax.lax.stop_gradient(img), z, Ks[idx])
                return jnp.where(seen[..., None, None], jac, 0)
        else:
            def jacobian():  # the drawn view's image against a further correction
                base = apply_correction(viewmats[idx][None], delta[idx][None].astype(dt))

                def image(d, rcfg):
                    vm = apply_correction(base, d[None].astype(base.dtype))
                    return render(state.params, state.active, vm, K, width, height, rcfg,
                                  deg)[0][0]

                return tangent_jacobian(image, cfg, delta.dtype, "forward")

        pose = pose_gn_update(pose, idx, jacobian, residual, step, cfg, extent)
    elif pose is not None:
        pose = pose_update(pose, idx, g_pose, step, cfg, extent)
    if pose is not None:
        # A motion G of the whole world (every T_cw G) is invisible to the training images:
        # left free, the model and the cameras drift together away from the test views'
        # given frame. Removing the corrections' least-squares world motion keeps the given
        # poses' frame (the noise has no preferred motion).
        pose = dict(pose, delta=remove_gauge(pose["delta"], *gauge))

    params, opt_state = {}, {}
    for name in PARAM_NAMES:
        upd, opt_state[name] = opts[name].update(grads[name], state.opt_state[name])
        params[name] = state.params[name] + upd.astype(dt)

    new_step = step + 1
    ctx = strat.StepContext(step=new_step, key=k_strategy, radii=radii, grad2d=g_m[0],
                            absgrad=g_a[0], width=width, height=height, extent=extent,
                            lr_means=opts_lr_means(cfg, extent, step))
    params, active, opt_state, strategy_state, info = strategy.step_post_backward(
        params, state.active, opt_state, state.strategy_state, ctx)

    new_state = TrainState(params=params, active=active, opt_state=opt_state,
                           strategy_state=strategy_state, step=new_step, key=key, pose=pose)
    metrics = dict(loss=loss, psnr=psnr(mse), n_active=jnp.sum(active, dtype=jnp.int32),
                   isect_overflow=overflow, step=new_step, **info)
    return new_state, metrics


def opts_lr_means(cfg: TrainConfig, extent: float, step):
    """Current learning rate of the means (traced step allowed)."""
    frac = step.astype(jnp.float32) / max(cfg.steps, 1)
    return cfg.lr_means * extent * jnp.power(jnp.float32(cfg.lr_means_final_ratio), frac)


class Trainer:
    """Holds a scene's training images/cameras and the single compiled step.

    scene: a :class:`splat.datasets.Scene` (or any object with ``images`` [M, H, W, 3]
    uint8, ``viewmats`` [M, 4, 4], ``Ks`` [M, 3, 3], ``train_idx``, ``extent``).
    """

    def __init__(self, scene, cfg: TrainConfig, *, dtype=jnp.float32):
        self.scene = scene
        self.cfg = cfg
        self.dtype = dtype
        self.extent = float(scene.extent)
        self.opts = make_optimizers(cfg, self.extent)
        h, w = scene.images.shape[1:3]
        self.width, self.height = int(w), int(h)
        tr = np.asarray(scene.train_idx)
        if tr.size == 0:
            raise ValueError("the scene has no training views")
        self.images = jnp.asarray(scene.images[tr])
        self.viewmats = jnp.asarray(scene.viewmats[tr], dtype)
        self.Ks = jnp.asarray(scene.Ks[tr], dtype)
        self.trace_counter: list = []
        gauge = None
        if cfg.pose_opt:  # the world motions' basis of these cameras, fixed for the run
            basis = gauge_basis(scene.viewmats[tr])
            normal_inv = np.linalg.inv(np.einsum("vji,vjk->ik", basis, basis))
            gauge = (jnp.asarray(basis, dtype), jnp.asarray(normal_inv, dtype))
        self._step = jax.jit(functools.partial(
            _train_step, cfg=cfg, extent=self.extent, opts=self.opts, width=self.width,
            height=self.height, trace_counter=self.trace_counter, gauge=gauge),
            donate_argnums=0)
        self._render = jax.jit(functools.partial(
            render_views, cfg=cfg, width=self.width, height=self.height))

    @property
    def compile_count(self) -> int:
        """Number of times the step has been traced (1 for a whole run)."""
        return len(self.trace_counter)

    def init_state(self, points=None, colors=None, *, seed: int = 0) -> TrainState:
        """Initial state from points [N, 3] / colors [N, 3] (default: the scene's)."""
        if points is None:
            points, colors = self.scene.points, self.scene.point_colors
        params, active = init_params(points, colors, self.cfg, seed=seed, dtype=self.dtype)
        return self.state_from_params(params, active, seed=seed)

    def state_from_params(self, params, active, *, seed: int = 0) -> TrainState:
        opt_state = {k: self.opts[k].init(params[k]) for k in PARAM_NAMES}
        p = active.shape[0]
        pose = None
        if self.cfg.pose_opt:  # zero corrections: training starts from the given poses
            pose = init_pose_state(self.viewmats.shape[0], self.dtype)
        return TrainState(params=params, active=active, opt_state=opt_state,
                          strategy_state=self.cfg.strategy.init_state(p, self.dtype),
                          step=jnp.zeros((), jnp.int32),
                          key=jax.random.PRNGKey(seed), pose=pose)

    def train_viewmats(self, state: TrainState) -> np.ndarray:
        """The training cameras' world-to-camera poses [V, 4, 4] (float64 numpy) as the
        model now sees them: the given ones corrected by ``state.pose`` with pose
        optimisation, else the given ones (in the order of ``scene.train_idx``)."""
        given = np.asarray(self.scene.viewmats)[np.asarray(self.scene.train_idx)]
        if state.pose is None:
            return np.asarray(given, np.float64)
        return corrected_viewmats(given, state.pose["delta"])

    def step(self, state: TrainState):
        """One optimiser step (donates ``state``). Returns (new state, metrics dict)."""
        return self._step(state, self.images, self.viewmats, self.Ks)

    def fit(self, state: TrainState, steps: int, *, log_every: int = 0,
            callback: Callable | None = None, log: Callable = print):
        """Run ``steps`` steps; returns (state, history list of per-step metric dicts).

        log_every > 0 prints a progress line (step, loss, PSNR, Gaussian count, speed
        without the compiling first step, denied densification requests so far) and,
        after the first :data:`TIMING_STEPS` steps, the measured time per step and the
        expected remaining time. Capacity exhaustion (with the capacity that would have
        fitted, at the end) and intersection-buffer overflow are printed whatever
        ``log_every`` is.
        """
        history = []
        t_first = None  # end of the first step, which includes the compilation
        denied_total = 0
        warned_isect = False
        cap = self.cfg.capacity
        for i in range(steps):
            state, m = self.step(state)
            m = {k: v.item() for k, v in jax.device_get(m).items()}
            history.append(m)
            now = time.perf_counter()
            if i == 0:
                t_first = now
            if m["denied"] > 0:
                if denied_total == 0:
                    log(f"[splat] CAPACITY FULL at step {m['step']}: {m['denied']} "
                        f"densification requests denied (capacity {cap}; raise --capacity / "
                        "TrainConfig.capacity)")
                denied_total += m["denied"]
            if m["isect_overflow"] and not warned_isect:
                log(f"[splat] tile-intersection buffer overflowed at step {m['step']}"
                    " (raise isect_per_gaussian)")
                warned_isect = True
            if callback is not None:
                callback(i, state, m)
            done = i + 1
            if log_every and i == TIMING_STEPS and steps > done:
                per = (now - t_first) / i
                log(f"[splat] {per:.3f} s/step after the first (compiling) step: about "
                    f"{_duration(per * (steps - done))} for the remaining {steps - done} steps")
            if log_every and (done % log_every == 0 or done == steps):
                rate = (done - 1) / (now - t_first) if done > 1 and now > t_first else 0.0
                bar = "#" * int(20 * done / steps) + "-" * (20 - int(20 * done / steps))
                full = f"  DENIED {denied_total} (capacity {cap} full)" if denied_total else ""
                log(f"[{bar}] step {m['step']} ({done}/{steps}) loss {m['loss']:.4f} "
                    f"psnr {m['psnr']:.2f} dB  gaussians {m['n_active']}  "
                    f"{rate:.2f} it/s{full}")
        if denied_total:
            n_ref = sum(1 for h in history if h["denied"] > 0)
            log(f"[splat] WARNING: capacity {cap} was too small: {denied_total} densification "
                f"requests were denied in {n_ref} refinement(s); capacity "
                f"{suggest_capacity(history)} would have fitted (estimate)")
        return state, history

    def render(self, state: TrainState, viewmats, Ks):
        """Render C views [C, H, W, 3] in [0, 1] with the scene's image size.

        One compiled function with a static intersection buffer; views whose buffer
        overflowed are rendered again with the exact (measured) capacity.
        """
        return render_checked(self._render, state.params, state.active, viewmats, Ks,
                              self.cfg, self.width, self.height, self.dtype)

    def evaluate(self, state: TrainState, indices=None):
        """PSNR and SSIM per view (default: the scene's test views), as numpy arrays."""
        idx = np.asarray(self.scene.test_idx if indices is None else indices)
        return evaluate_views(self.render, state, self.scene, idx)
