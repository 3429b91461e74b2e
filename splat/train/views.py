"""Rendering and scoring whole sets of views of a trained model (numpy images out).

Used by :class:`splat.train.Trainer` (``render``, ``evaluate``) and by ``splat render`` /
``splat eval`` (:func:`render_model`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..metrics import image_metrics
from .state import TrainConfig, render


def render_views(params, active, viewmats, Ks, *, cfg: TrainConfig, width: int, height: int):
    """Render C views one at a time (``jax.lax.map``; jit-compatible, static capacity).

    params: the model (dict as ``TrainState.params``, P Gaussians); active [P] bool;
    viewmats [C, 4, 4] world-to-camera (OpenCV); Ks [C, 3, 3] pixels; width, height in
    pixels. Returns (images [C, H, W, 3] clipped to [0, 1] in the parameters' dtype,
    overflow [C] bool: the view's intersection buffer was too small).
    """
    def one(vm, K):
        img, _, meta = render(params, active, vm[None], K[None], width, height, cfg)
        return jnp.clip(img[0], 0, 1), meta["overflow"]
    return jax.lax.map(lambda a: one(*a), (viewmats, Ks))


def render_checked(render_fn, params, active, viewmats, Ks, cfg: TrainConfig, width: int,
                   height: int, dtype) -> np.ndarray:
    """Render with ``render_fn`` (a jitted :func:`render_views` with cfg, width, height
    bound) and re-render exactly (measured intersection capacity, outside jit) every view
    whose buffer overflowed.

    viewmats [C, 4, 4], Ks [C, 3, 3] (cast to ``dtype``). Returns numpy [C, H, W, 3] in
    [0, 1].
    """
    vms = jnp.asarray(viewmats, dtype)
    Ks = jnp.asarray(Ks, dtype)
    imgs, overflow = render_fn(params, active, vms, Ks)
    imgs = np.array(imgs)
    for i in np.flatnonzero(np.asarray(overflow)):
        img, _, _ = render(params, active, vms[i:i + 1], Ks[i:i + 1], width, height, cfg,
                           exact=True)
        imgs[i] = np.clip(np.asarray(img[0]), 0, 1)
    return imgs


def render_model(params, cfg: TrainConfig, viewmats, Ks, width: int, height: int) -> np.ndarray:
    """Render every Gaussian of a model (all active) into C views, in float32.

    params: dict of numpy or JAX arrays as ``TrainState.params`` (N Gaussians, e.g. from
    :func:`splat.train.load_model`); viewmats [C, 4, 4] world-to-camera (OpenCV); Ks
    [C, 3, 3] pixels; width, height pixels. Returns numpy float32 [C, H, W, 3] in [0, 1].
    """
    n = params["means"].shape[0]
    p = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    fn = jax.jit(functools.partial(render_views, cfg=cfg, width=width, height=height))
    return render_checked(fn, p, jnp.ones((n,), bool), viewmats, Ks, cfg, width, height,
                          jnp.float32)


def evaluate_views(render_fn, state, scene, idx) -> dict:
    """dict(psnr [V] dB, ssim [V], images [V, H, W, 3] float in [0, 1]) for the views
    ``idx`` of ``scene``; ``render_fn(state, viewmats, Ks)`` renders them
    (:meth:`splat.train.Trainer.render`)."""
    if len(idx) == 0:
        raise ValueError("no views to evaluate")
    imgs = np.asarray(render_fn(state, scene.viewmats[idx], scene.Ks[idx]))
    return dict(image_metrics(imgs, scene.images[idx]), images=imgs)
