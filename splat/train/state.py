"""Training configuration, the fixed-capacity Gaussian state and rendering of it.

The model lives in arrays of a fixed capacity P with an ``active`` mask: inactive slots
are rendered with opacity 0 (the rasterizer culls them, so they cost no intersections)
and receive zero gradients, and densification writes new Gaussians into them. Shapes
never change, so one compiled step serves the whole run.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..rendering import rasterization
from ..sh import SH_C0, num_sh_bases
from .strategy import DefaultStrategy, Strategy, strategy_from_dict

# how the pose corrections learn (TrainConfig.pose_optimizer, docs/poses.md)
POSE_OPTIMIZERS = ("adam", "gauss_newton")
PARAM_NAMES = ("means", "quats", "log_scales", "logit_opacities", "sh0", "shN")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Static training settings (hashable; changing one means a new compilation).

    Learning rates follow gsplat's simple_trainer: ``lr_means`` is multiplied by the
    scene extent and decays exponentially to ``lr_means * lr_means_final_ratio`` at
    ``steps``. ``strategy`` is a densification strategy object (:class:`DefaultStrategy`,
    :class:`MCMCStrategy` or :class:`NoDensification`, see :mod:`splat.train.strategy`);
    its step counts, like ``sh_degree_interval``, are optimiser steps.
    """

    steps: int = 3000
    capacity: int = 100_000
    sh_degree: int = 3
    sh_degree_interval: int = 1000
    ssim_lambda: float = 0.2
    lr_means: float = 1.6e-4
    lr_means_final_ratio: float = 0.01
    lr_quats: float = 1e-3
    lr_scales: float = 5e-3
    lr_opacities: float = 5e-2
    lr_sh0: float = 2.5e-3
    lr_shN: float = 2.5e-3 / 20
    strategy: Strategy = DefaultStrategy()
    init_opacity: float = 0.1
    init_scale: float = 1.0
    background: tuple = (0.0, 0.0, 0.0)
    backend: str = "pallas"
    # "reverse" (training's gradients) or "forward": which derivatives the Pallas compositor
    # supports (splat.rasterization's pallas_autodiff); tangent_jacobian sets "forward"
    pallas_autodiff: str = "reverse"
    tile_size: int = 16
    isect_per_gaussian: int = 8
    near_plane: float = 0.01
    rasterize_mode: str = "classic"
    # per-training-camera SE(3) correction Exp(xi) T_cw (camera frame) learnt with a
    # per-camera Adam (docs/poses.md, trainer.pose_update): lr_pose is the rotation rate
    # (radians per draw of the camera), the translation rate is lr_pose times the scene
    # extent, both decaying to lr_pose_final_ratio of that at ``steps``; the poses stay
    # fixed for the first pose_opt_start steps; pose_weight_decay pulls xi towards 0
    # (gsplat's pose_opt_reg)
    pose_opt: bool = False
    lr_pose: float = 3e-3
    lr_pose_final_ratio: float = 0.1
    pose_weight_decay: float = 0.0
    pose_opt_start: int = 300
    # pose_optimizer "gauss_newton": each draw takes one Levenberg-Marquardt step on the drawn
    # camera's 6 coordinates instead of Adam's (trainer.pose_gn_update): the 6x6 normal
    # equations of the view's photometric residual (docs/poses.md); pose_gn_damping is Marquardt's lambda (times the diagonal of J^T J), and a
    # step turns the camera by at most pose_gn_max_step_deg and moves it by at most that
    # angle (radians) times the scene extent (the model is poor early: its steps are noisy);
    # pose_gn_jacobian "image": J of each pixel is minus the rendered image's spatial
    # gradient times the motion of the pixel (its rendered expected depth) under the
    # correction, as direct image alignment takes it (cheap: the step's own render);
    # "exact": 6 forward tangents through the compositor (splat.localize's Jacobian: the
    # Pallas tangent kernel, or the reference compositor's own jvp); pose_gn_decay
    # scales each step by Adam's rate schedule (1 at pose_opt_start to lr_pose_final_ratio)
    pose_optimizer: str = "adam"
    pose_gn_damping: float = 0.1
    pose_gn_max_step_deg: float = 0.25
    pose_gn_jacobian: str = "image"
    pose_gn_decay: bool = False

    def __post_init__(self):
        if not isinstance(self.strategy, Strategy):
            raise TypeError("strategy must be a Strategy object such as DefaultStrategy(), "
                            f"MCMCStrategy() or NoDensification(), got {self.strategy!r}")
        if not 0 <= self.sh_degree <= 3:
            raise ValueError(f"sh_degree must be in 0..3, got {self.sh_degree}")
        if self.capacity < 1 or self.steps < 0:
            raise ValueError("capacity must be >= 1 and steps >= 0")
        if self.sh_degree_interval < 1:
            raise ValueError("sh_degree_interval must be >= 1")
        if not (self.lr_pose >= 0 and self.pose_weight_decay >= 0
                and self.lr_pose_final_ratio > 0 and self.pose_opt_start >= 0):
            raise ValueError("lr_pose, pose_weight_decay and pose_opt_start must be >= 0, "
                             "lr_pose_final_ratio > 0")
        if self.pose_optimizer not in POSE_OPTIMIZERS:
            raise ValueError(f"pose_optimizer must be one of {POSE_OPTIMIZERS}, "
                             f"got {self.pose_optimizer!r}")
        if self.pose_gn_jacobian not in ("image", "exact"):
            raise ValueError("pose_gn_jacobian must be 'image' or 'exact', "
                             f"got {self.pose_gn_jacobian!r}")
        if not (self.pose_gn_damping >= 0 and self.pose_gn_max_step_deg > 0):
            raise ValueError("pose_gn_damping must be >= 0 and pose_gn_max_step_deg > 0")
        if len(self.background) != 3:
            raise ValueError(f"background must be 3 floats, got {self.background}")
        object.__setattr__(self, "background", tuple(float(b) for b in self.background))

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["strategy"] = self.strategy.to_dict()
        return json.dumps(d)

    @classmethod
    def from_json(cls, s: str) -> "TrainConfig":
        d = json.loads(s)
        d["background"] = tuple(d["background"])
        d["strategy"] = strategy_from_dict(d["strategy"])
        return cls(**d)


class TrainState(NamedTuple):
    """Everything that changes during training (a pytree of fixed-shape arrays).

    params: dict of means [P, 3], quats [P, 4] (w, x, y, z), log_scales [P, 3],
      logit_opacities [P], sh0 [P, 1, 3], shN [P, K - 1, 3]; active [P] bool;
      opt_state: dict name -> optax state of that parameter; strategy_state: the
      densification strategy's pytree (``Strategy.init_state``); step () int32 optimiser
      steps done; key: PRNG key data uint32 [2]; pose: None, or with
      ``TrainConfig.pose_opt`` dict(delta=[V, 6] SE(3) tangents (v, w) of the V training
      cameras' corrections, opt=dict(mu, nu [V, 6], count [V]) their per-camera Adam state) (last, so that the other leaves keep
      their checkpoint order).
    """

    params: dict
    active: Any
    opt_state: dict
    strategy_state: Any
    step: Any
    key: Any
    pose: Any = None


def knn_mean_dist(points: np.ndarray, k: int = 3) -> np.ndarray:
    """Mean distance of each point to its k nearest other points (float64 numpy)."""
    pts = np.asarray(points, np.float64)
    n = pts.shape[0]
    if n <= 1:
        return np.ones(n)
    k = min(k, n - 1)
    try:
        from scipy.spatial import cKDTree
        d, _ = cKDTree(pts).query(pts, k=k + 1)
        return d[:, 1:].mean(axis=1)
    except ImportError:  # brute force in chunks; fine for the sizes trained on CPU
        out = np.empty(n)
        sq = (pts ** 2).sum(1)
        for s in range(0, n, 2048):
            blk = pts[s:s + 2048]
            d2 = (blk ** 2).sum(1)[:, None] + sq[None, :] - 2 * blk @ pts.T
            d2[np.arange(len(blk)), np.arange(s, s + len(blk))] = np.inf
            part = np.sqrt(np.maximum(np.partition(d2, k - 1, axis=1)[:, :k], 0))
            out[s:s + len(blk)] = part.mean(1)
        return out


def init_params(points, colors, cfg: TrainConfig, *, seed: int = 0, dtype=jnp.float32):
    """Initial parameters and active mask at capacity ``cfg.capacity``.

    points [N, 3] world positions; colors [N, 3] RGB in [0, 1]. If N > capacity a random
    subset is used. Scales are the mean distance to the 3 nearest neighbours times
    ``cfg.init_scale``; rotations random; opacity ``cfg.init_opacity``; colour in SH0.
    Returns (params dict, active [P] bool).
    """
    points = np.asarray(points, np.float64)
    colors = np.asarray(colors, np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or colors.shape != points.shape:
        raise ValueError(f"points and colors must both be [N, 3], got {points.shape}, {colors.shape}")
    if points.shape[0] == 0:
        raise ValueError("cannot initialise from zero points")
    ok = np.isfinite(points).all(1) & np.isfinite(colors).all(1)
    points, colors = points[ok], colors[ok]
    rng = np.random.default_rng(seed)
    p = cfg.capacity
    if points.shape[0] > p:
        keep = np.sort(rng.choice(points.shape[0], p, replace=False))
        points, colors = points[keep], colors[keep]
    n = points.shape[0]
    dist = np.maximum(knn_mean_dist(points), 1e-7) * cfg.init_scale
    quats = rng.normal(size=(n, 4))
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    k = num_sh_bases(cfg.sh_degree)

    def pad(a, fill=0.0):
        out = np.full((p,) + a.shape[1:], fill, np.float64)
        out[:n] = a
        return jnp.asarray(out, dtype)

    o = cfg.init_opacity
    params = dict(
        means=pad(points),
        quats=pad(quats, 0.0).at[n:, 0].set(1),
        log_scales=pad(np.log(dist)[:, None].repeat(3, 1), math.log(1e-3)),
        logit_opacities=pad(np.full(n, math.log(o / (1 - o))), -10.0),
        sh0=pad(((np.clip(colors, 0, 1) - 0.5) / SH_C0)[:, None, :]),
        shN=jnp.zeros((p, k - 1, 3), dtype),
    )
    active = jnp.asarray(np.arange(p) < n)
    return params, active


def sh_coeffs(params, sh_degree_now, max_degree: int):
    """[P, K, 3] SH coefficients with bases above the current (traced) degree zeroed.

    The rasterizer's ``sh_degree`` is static, so the degree schedule is a mask: one
    compilation for all degrees, and the masked coefficients get zero gradient.
    """
    sh = jnp.concatenate([params["sh0"], params["shN"]], axis=1)
    kk = jnp.arange(num_sh_bases(max_degree))
    mask = (kk < (sh_degree_now + 1) ** 2).astype(sh.dtype)
    return sh * mask[None, :, None]


def render(params, active, viewmats, Ks, width: int, height: int, cfg: TrainConfig,
           sh_degree_now=None, means2d_probe=None, absgrad_probe=None, exact: bool = False,
           render_mode: str = "RGB"):
    """Render the active Gaussians into C cameras (jit-compatible, static capacity).

    viewmats [C, 4, 4] world-to-camera (OpenCV), Ks [C, 3, 3] pixels. The tile-intersection
    buffer holds ``cfg.isect_per_gaussian`` x C x P entries (``meta["overflow"]`` says if
    that was too few); ``exact=True`` (concrete inputs only, outside jit) lets the
    rasterizer measure the exact count instead. ``render_mode`` as the rasterizer's ("RGB+ED"
    appends the expected depth as a fourth channel).
    Returns (colors [C, H, W, 3], alphas [C, H, W, 1], meta) as :func:`splat.rasterization`.
    """
    dt = params["means"].dtype
    if sh_degree_now is None:
        sh_degree_now = cfg.sh_degree
    opac = jax.nn.sigmoid(params["logit_opacities"]) * active.astype(dt)
    p = params["means"].shape[0]
    c = viewmats.shape[0]
    return rasterization(
        params["means"], params["quats"], jnp.exp(params["log_scales"]), opac,
        sh_coeffs(params, sh_degree_now, cfg.sh_degree), viewmats.astype(dt),
        Ks.astype(dt), width, height, near_plane=cfg.near_plane, sh_degree=cfg.sh_degree,
        tile_size=cfg.tile_size, backgrounds=jnp.asarray(cfg.background, dt),
        rasterize_mode=cfg.rasterize_mode, backend=cfg.backend, render_mode=render_mode,
        pallas_autodiff=cfg.pallas_autodiff,
        means2d_probe=means2d_probe, absgrad_probe=absgrad_probe,
        isect_capacity=None if exact else max(1, c * p * cfg.isect_per_gaussian))
