"""The jit-compiled training step (rendering, loss, Adam, densification) and its driver."""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..ssim import ssim
from . import strategy as strat
from .state import PARAM_NAMES, TrainConfig, TrainState, init_params, render


def psnr(mse):
    """PSNR in dB of images in [0, 1] from their mean squared error."""
    return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


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


def _train_step(state: TrainState, images, viewmats, Ks, *, cfg: TrainConfig, extent: float,
                opts: dict, width: int, height: int, trace_counter: list):
    trace_counter.append(1)  # runs only while tracing: counts compilations
    dt = state.params["means"].dtype
    key = state.key
    key, k_view, k_ref, k_noise = jax.random.split(key, 4)
    n_views = images.shape[0]
    idx = jax.random.randint(k_view, (), 0, n_views)
    gt = images[idx].astype(dt) / 255.0
    vm = viewmats[idx][None]
    K = Ks[idx][None]
    step = state.step
    deg = jnp.minimum(step // cfg.sh_degree_interval, cfg.sh_degree)
    p = state.active.shape[0]

    def loss_fn(params, m_probe, a_probe):
        img, alpha, meta = render(params, state.active, vm, K, width, height, cfg, deg,
                                  means2d_probe=m_probe,
                                  absgrad_probe=a_probe if cfg.absgrad else None)
        img = img[0]
        l1 = jnp.mean(jnp.abs(img - gt))
        mse = jnp.mean((img - gt) ** 2)
        ss = ssim(img, gt) if min(width, height) >= 11 else 1 - l1
        loss = (1 - cfg.ssim_lambda) * l1 + cfg.ssim_lambda * (1 - ss)
        if cfg.strategy == "mcmc":
            act = state.active.astype(dt)
            n_act = jnp.maximum(jnp.sum(act), 1)
            loss = loss + cfg.mcmc_opacity_reg * jnp.sum(
                jax.nn.sigmoid(params["logit_opacities"]) * act) / n_act
            loss = loss + cfg.mcmc_scale_reg * jnp.sum(
                jnp.exp(params["log_scales"]) * act[:, None]) / (3 * n_act)
        return loss, (mse, meta["radii"][0], meta["overflow"])

    probes = (jnp.zeros((1, p, 2), dt), jnp.zeros((1, p, 2), dt))
    (loss, (mse, radii, overflow)), (grads, g_m, g_a) = jax.value_and_grad(
        loss_fn, argnums=(0, 1, 2), has_aux=True)(state.params, *probes)

    params, opt_state = {}, {}
    for name in PARAM_NAMES:
        upd, opt_state[name] = opts[name].update(grads[name], state.opt_state[name])
        params[name] = state.params[name] + upd.astype(dt)

    # 2D-gradient statistics in NDC units (pixels * size / 2), as gsplat accumulates them
    g2d = (g_a if cfg.absgrad else g_m)[0]
    g2d = g2d * jnp.asarray([width / 2, height / 2], dt)
    visible = (radii[:, 0] > 0) & (radii[:, 1] > 0) & state.active
    grad_acc = state.grad_acc + jnp.where(visible, jnp.linalg.norm(g2d, axis=-1), 0)
    vis_count = state.vis_count + visible.astype(jnp.int32)

    new_step = step + 1
    active = state.active
    zero = jnp.zeros((), jnp.int32)
    info = dict(n_clone=zero, n_split=zero, n_prune=zero, n_relocated=zero, n_added=zero,
                denied=zero)
    in_window = (new_step > cfg.refine_start) & (new_step < cfg.refine_stop)
    do_refine = in_window & (new_step % cfg.refine_every == 0)
    if cfg.strategy == "default":
        def refine(args):
            pr, ac, os_, ga, vc = args
            pr, ac, os_, inf = strat.default_refine(pr, ac, os_, ga, vc, new_step, k_ref,
                                                    cfg, extent)
            return pr, ac, os_, jnp.zeros_like(ga), jnp.zeros_like(vc), inf

        def keep(args):
            pr, ac, os_, ga, vc = args
            return pr, ac, os_, ga, vc, dict(n_clone=zero, n_split=zero, n_prune=zero,
                                             denied=zero)

        params, active, opt_state, grad_acc, vis_count, inf = jax.lax.cond(
            do_refine, refine, keep, (params, active, opt_state, grad_acc, vis_count))
        info.update(inf)
        do_reset = (new_step % cfg.reset_every == 0) & (new_step < cfg.refine_stop)
        params, opt_state = jax.lax.cond(
            do_reset, lambda a: strat.opacity_reset(a[0], a[1], cfg), lambda a: a,
            (params, opt_state))
    elif cfg.strategy == "mcmc":
        def refine_m(args):
            pr, ac, os_ = args
            pr, ac, os_, inf = strat.mcmc_refine(pr, ac, os_, k_ref, cfg)
            return pr, ac, os_, inf

        def keep_m(args):
            pr, ac, os_ = args
            return pr, ac, os_, dict(n_relocated=zero, n_added=zero, denied=zero)

        params, active, opt_state, inf = jax.lax.cond(do_refine, refine_m, keep_m,
                                                      (params, active, opt_state))
        info.update(inf)
        lr_now = opts_lr_means(cfg, extent, step)
        params = strat.mcmc_noise(params, active, k_noise, lr_now.astype(dt), cfg)

    new_state = TrainState(params=params, active=active, opt_state=opt_state,
                           grad_acc=grad_acc, vis_count=vis_count, step=new_step, key=key)
    metrics = dict(loss=loss, psnr=psnr(mse), n_active=jnp.sum(active, dtype=jnp.int32),
                   isect_overflow=overflow, refined=do_refine, **info)
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
        self._step = jax.jit(functools.partial(
            _train_step, cfg=cfg, extent=self.extent, opts=self.opts, width=self.width,
            height=self.height, trace_counter=self.trace_counter), donate_argnums=0)
        self._render = jax.jit(functools.partial(
            _render_views, cfg=cfg, width=self.width, height=self.height))

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
        return TrainState(params=params, active=active, opt_state=opt_state,
                          grad_acc=jnp.zeros((p,), self.dtype),
                          vis_count=jnp.zeros((p,), jnp.int32),
                          step=jnp.zeros((), jnp.int32),
                          key=jax.random.PRNGKey(seed))

    def step(self, state: TrainState):
        """One optimiser step (donates ``state``). Returns (new state, metrics dict)."""
        return self._step(state, self.images, self.viewmats, self.Ks)

    def fit(self, state: TrainState, steps: int, *, log_every: int = 0,
            callback: Callable | None = None, log: Callable = print):
        """Run ``steps`` steps; returns (state, history list of per-step metric dicts).

        log_every > 0 prints a progress line (step, loss, PSNR, Gaussian count, speed).
        Capacity exhaustion and intersection overflow are printed when they happen.
        """
        history = []
        t0 = time.perf_counter()
        warned_cap = warned_isect = False
        for i in range(steps):
            state, m = self.step(state)
            m = {k: v.item() for k, v in jax.device_get(m).items()}
            history.append(m)
            if m["denied"] > 0 and not warned_cap:
                log(f"[splat] capacity {self.cfg.capacity} exhausted at step {int(state.step)}:"
                    f" {m['denied']} densification requests denied (raise --capacity)")
                warned_cap = True
            if m["isect_overflow"] and not warned_isect:
                log(f"[splat] tile-intersection buffer overflowed at step {int(state.step)}"
                    " (raise isect_per_gaussian)")
                warned_isect = True
            if callback is not None:
                callback(i, state, m)
            if log_every and ((i + 1) % log_every == 0 or i + 1 == steps):
                el = time.perf_counter() - t0
                done = i + 1
                bar = "#" * int(20 * done / steps) + "-" * (20 - int(20 * done / steps))
                log(f"[{bar}] step {int(state.step)} ({done}/{steps}) loss {m['loss']:.4f} "
                    f"psnr {m['psnr']:.2f} dB  gaussians {m['n_active']}  "
                    f"{done / max(el, 1e-9):.2f} it/s")
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


def _render_views(params, active, viewmats, Ks, *, cfg, width, height):
    """(images [C, H, W, 3] clipped to [0, 1], overflow [C] bool), one view at a time."""
    def one(vm, K):
        img, _, meta = render(params, active, vm[None], K[None], width, height, cfg)
        return jnp.clip(img[0], 0, 1), meta["overflow"]
    return jax.lax.map(lambda a: one(*a), (viewmats, Ks))


def render_checked(render_fn, params, active, viewmats, Ks, cfg, width, height, dtype):
    """Render with ``render_fn`` (a jitted :func:`_render_views`) and re-render exactly
    (measured intersection capacity, outside jit) every view whose buffer overflowed."""
    vms = jnp.asarray(viewmats, dtype)
    Ks = jnp.asarray(Ks, dtype)
    imgs, overflow = render_fn(params, active, vms, Ks)
    imgs = np.array(imgs)
    for i in np.flatnonzero(np.asarray(overflow)):
        img, _, _ = render(params, active, vms[i:i + 1], Ks[i:i + 1], width, height, cfg,
                           exact=True)
        imgs[i] = np.clip(np.asarray(img[0]), 0, 1)
    return imgs


def evaluate_views(render_fn, state, scene, idx):
    """dict(psnr [V], ssim [V], images [V, H, W, 3] float in [0, 1]) for views idx."""
    if len(idx) == 0:
        raise ValueError("no views to evaluate")
    imgs = np.asarray(render_fn(state, scene.viewmats[idx], scene.Ks[idx]))
    gts = scene.images[idx].astype(np.float64) / 255.0
    mse = ((imgs.astype(np.float64) - gts) ** 2).mean(axis=(1, 2, 3))
    ps = -10 * np.log10(np.maximum(mse, 1e-10))
    ss = np.array([float(ssim(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)))
                   for a, b in zip(imgs, gts)]) if min(imgs.shape[1:3]) >= 11 else \
        np.full(len(idx), np.nan)
    return dict(psnr=ps, ssim=ss, images=imgs)


# ---------------------------------------------------------------- checkpoints

def save_checkpoint(path, trainer: Trainer, state: TrainState, extra: dict | None = None):
    """Write the whole training state (resumable) plus config, extent and cameras (npz)."""
    leaves = jax.tree_util.tree_leaves(state)
    arrays = {f"leaf_{i:04d}": np.asarray(x) for i, x in enumerate(leaves)}
    meta = dict(config=json.loads(trainer.cfg.to_json()), extent=trainer.extent,
                width=trainer.width, height=trainer.height, n_leaves=len(leaves),
                dtype=np.dtype(trainer.dtype).name, **(extra or {}))
    sc = trainer.scene
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, meta=np.asarray(json.dumps(meta)), viewmats=np.asarray(sc.viewmats),
             Ks=np.asarray(sc.Ks), train_idx=np.asarray(sc.train_idx),
             test_idx=np.asarray(sc.test_idx), **arrays)


def load_checkpoint_arrays(path):
    """(meta dict, npz mapping) of a checkpoint written by :func:`save_checkpoint`."""
    z = np.load(path, allow_pickle=False)
    if "meta" not in z.files:
        raise ValueError(f"{path}: not a splat checkpoint (no 'meta')")
    return json.loads(str(z["meta"])), z


def restore_state(path, trainer: Trainer) -> TrainState:
    """Load a checkpoint into a state shaped like ``trainer``'s (resume training)."""
    meta, z = load_checkpoint_arrays(path)
    template = trainer.state_from_params(*init_params(
        np.zeros((1, 3)), np.zeros((1, 3)), trainer.cfg, dtype=trainer.dtype))
    leaves, treedef = jax.tree_util.tree_flatten(template)
    if meta["n_leaves"] != len(leaves):
        raise ValueError(f"{path}: checkpoint has {meta['n_leaves']} arrays, this "
                         f"configuration expects {len(leaves)}")
    new = []
    for i, t in enumerate(leaves):
        a = z[f"leaf_{i:04d}"]
        if a.shape != t.shape:
            raise ValueError(f"{path}: array {i} has shape {a.shape}, expected {t.shape} "
                             "(different capacity or SH degree?)")
        new.append(jnp.asarray(a, t.dtype))
    return jax.tree_util.tree_unflatten(treedef, new)


def params_from_checkpoint(path):
    """(params dict of numpy arrays restricted to active Gaussians, meta) from a checkpoint."""
    meta, z = load_checkpoint_arrays(path)
    # TrainState leaf order: params (dict, keys sorted), active, ...
    names = sorted(PARAM_NAMES)
    params = {k: z[f"leaf_{i:04d}"] for i, k in enumerate(names)}
    active = z[f"leaf_{len(names):04d}"].astype(bool)
    return {k: v[active] for k, v in params.items()}, meta
