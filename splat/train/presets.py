"""Defaults that fit the machine: schedule, initial points and capacity from the scene,
the step count and the device (what ``splat train`` uses; see docs/training.md).

Two presets, chosen by ``jax.default_backend()``:

* CPU: few initial random points (about one per 8 pixels of a training image, at least
  1,000 and at most 10,000) and a capacity of about 2 Gaussians per pixel of a training
  image, at most 131,072: a step then takes well under a second at a few hundred
  pixels a side.
* GPU: gsplat's 100,000 initial random points and a capacity of 4x the initial count
  or 2 per pixel, whichever is larger.

A scene with a point cloud (COLMAP) starts from its points (a random subset of at most
``max_init_points`` on CPU). The capacity never exceeds what the densification schedule
could reach (at most a doubling per refinement). The reference backend materialises
every (intersection, pixel) pair, so its capacity is also limited by memory
(:func:`reference_max_capacity`).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..checks import available_memory_bytes, check_render_size, render_bytes
from ..datasets import random_points
from ..tiling import next_pow2
from .checkpoint import load_checkpoint_arrays
from .state import TrainConfig
from .strategy import Strategy, strategy_from_name

CPU_MAX_INIT_POINTS = 10_000
GPU_INIT_POINTS = 100_000
CPU_MAX_CAPACITY = 131_072


def schedule_for(steps: int) -> dict:
    """Refinement schedule for a run of ``steps``: gsplat's for >= 30,000 steps, else
    compressed so that short runs still refine (and skip opacity resets).

    Returns refine_start, refine_stop, refine_every, reset_every (strategy fields) and
    sh_degree_interval (a :class:`TrainConfig` field).
    """
    if steps >= 30000:
        return dict(refine_start=500, refine_stop=15000, refine_every=100, reset_every=3000,
                    sh_degree_interval=1000)
    every = int(min(100, max(10, steps // 10)))
    return dict(refine_start=every, refine_stop=max(every + 1, steps // 2),
                refine_every=every, reset_every=3000 if steps > 6000 else steps + 1,
                sh_degree_interval=int(min(1000, max(1, steps // 4))))


def make_strategy(name: str, steps: int, *, absgrad: bool = False) -> Strategy:
    """The strategy ``name`` ("default", "mcmc", "none") with the schedule for ``steps``."""
    sched = schedule_for(steps)
    if name == "default":
        return strategy_from_name(name, absgrad=absgrad, **{
            k: sched[k] for k in ("refine_start", "refine_stop", "refine_every", "reset_every")})
    if absgrad:
        raise ValueError("absgrad applies to the default strategy only")
    if name == "mcmc":
        return strategy_from_name(name, **{
            k: sched[k] for k in ("refine_start", "refine_stop", "refine_every")})
    return strategy_from_name(name)


def n_refinements(steps: int) -> int:
    """Number of refinements the schedule of :func:`schedule_for` runs in ``steps``."""
    s = schedule_for(steps)
    return sum(1 for t in range(s["refine_every"], min(steps, s["refine_stop"] - 1) + 1,
                                s["refine_every"]) if t > s["refine_start"])


def default_init_points(width: int, height: int, platform: str) -> int:
    """Initial random points for a scene without a point cloud."""
    if platform == "gpu":
        return GPU_INIT_POINTS
    return int(min(CPU_MAX_INIT_POINTS, max(1000, round(width * height / 8, -2))))


def max_init_points(platform: str) -> int | None:
    """Cap on the point-cloud points used to initialise (None: all of them)."""
    return None if platform == "gpu" else CPU_MAX_INIT_POINTS


def reference_max_capacity(width: int, height: int, *, isect_per_gaussian: int = 8,
                           tile_size: int = 16, budget: int | None = None) -> int:
    """Largest power-of-two capacity whose reference-backend training step fits in
    ``budget`` bytes (default: half the available memory), by
    :func:`splat.checks.render_bytes`."""
    if budget is None:
        budget = available_memory_bytes() // 2
    cap = 1
    while render_bytes(1, width, height, n_gaussians=2 * cap, backend="reference",
                       isect_capacity=2 * cap * isect_per_gaussian,
                       tile_size=tile_size) <= budget and cap < 2**30:
        cap *= 2
    return cap


def default_gaussian_capacity(n_init: int, width: int, height: int, steps: int,
                              platform: str, strategy: str = "default") -> int:
    """Gaussian capacity (``TrainConfig.capacity``, the most Gaussians a run can hold)
    sized from the scene (pixels per image), the initial count and the steps.

    A power of two: max(n_init, min(2 per pixel (GPU: also >= 4 n_init), n_init x 2^R))
    with R refinements in ``steps``; on CPU at most :data:`CPU_MAX_CAPACITY` (but never
    below n_init). Without densification the capacity is n_init.
    """
    if strategy == "none":
        return max(1, n_init)
    pixels = width * height
    grow = n_init * 2 ** min(n_refinements(steps), 30)
    want = min(2 * pixels, grow)
    if platform == "gpu":
        want = max(want, min(4 * n_init, grow))
    cap = next_pow2(max(n_init, want))
    if platform != "gpu":
        cap = min(cap, max(CPU_MAX_CAPACITY, next_pow2(n_init)))
    return cap


def suggest_capacity(history: list) -> int | None:
    """Capacity that would have fitted a run whose ``history`` (per-step metric dicts)
    had densification requests denied, else None.

    Estimate: 1.25 x (largest active count + all denied requests), as a power of two.
    Denied requests are counted at every refinement, so a Gaussian refused twice counts
    twice, while the Gaussians the refused ones would have spawned later are not
    counted: an estimate, not a bound.
    """
    denied = sum(int(h["denied"]) for h in history)
    if denied == 0:
        return None
    peak = max(int(h["n_active"]) for h in history)
    return next_pow2(math.ceil(1.25 * (peak + denied)))


def platform_name() -> str:
    """"gpu" or "cpu" (TPU and others count as CPU here: the conservative preset)."""
    import jax

    return "gpu" if jax.default_backend() == "gpu" else "cpu"


def train_config(steps: int, capacity: int, sh_degree: int, strategy: str, *,
                 absgrad: bool = False, backend: str = "pallas") -> TrainConfig:
    """The :class:`TrainConfig` of ``splat train``: strategy ``strategy`` ("default",
    "mcmc", "none") and the SH schedule of :func:`schedule_for` for ``steps``."""
    return TrainConfig(steps=steps, capacity=capacity, sh_degree=sh_degree,
                       strategy=make_strategy(strategy, steps, absgrad=absgrad),
                       backend=backend,
                       sh_degree_interval=schedule_for(steps)["sh_degree_interval"])


def training_state_bytes(capacity: int, sh_degree: int) -> int:
    """A lower bound on the memory (bytes) of the training state at ``capacity``
    Gaussians: float32 parameters (mean 3, quaternion 4, log-scale 3, opacity 1, SH
    3 (sh_degree + 1)^2), their gradients and Adam's two moments."""
    floats = 3 + 4 + 3 + 1 + 3 * (int(sh_degree) + 1) ** 2
    return int(capacity) * floats * 4 * 4


#: A lower bound on the bytes per initial point while a scene is set up (coordinates and
#: colours in float64, the 3-nearest-neighbour distances and indices of the initial scales).
INIT_POINT_BYTES = 2 * 3 * 8 + 4 * 8 * 2


def check_init_points(n: int) -> None:
    """Refuse (ValueError naming ``--init-points``) ``n`` initial points whose set-up
    cannot fit in the available memory, before any is drawn."""
    need = int(n) * INIT_POINT_BYTES
    avail = available_memory_bytes()
    if need > avail:
        raise ValueError(f"--init-points {n} needs at least {need / 2**30:.1f} GiB, only "
                         f"{avail / 2**30:.1f} GiB available; lower --init-points")


def check_training_memory(cfg: TrainConfig, width: int, height: int) -> None:
    """Refuse (ValueError) a training run of ``cfg`` on width x height images whose step
    cannot fit in the available memory (:func:`splat.checks.check_render_size` plus
    :func:`training_state_bytes`)."""
    check_render_size(
        1, width, height, n_gaussians=cfg.capacity, backend=cfg.backend,
        isect_capacity=cfg.capacity * cfg.isect_per_gaussian, tile_size=cfg.tile_size,
        extra_bytes=training_state_bytes(cfg.capacity, cfg.sh_degree),
        what=f"training with --backend {cfg.backend} at --capacity {cfg.capacity}",
        hint="lower --capacity" + (" or use --backend pallas"
                                   if cfg.backend == "reference" else ""))


def fit_to_machine(scene, *, steps: int, strategy: str = "default", backend: str = "pallas",
                   capacity: int | None = None, init_points: int | None = None,
                   resume: str | None = None, seed: int = 0, log: Callable = print) -> int:
    """Initial points and Gaussian capacity for training ``scene`` on this device, for
    the settings the user left unset (None); returns the capacity.

    The scene's initial points are replaced in place: ``init_points`` random points (a
    scene without a point cloud; default :func:`default_init_points`, drawn as the loader
    does with ``seed``) or a random subset of at most ``init_points`` (default
    :func:`max_init_points`) of its point cloud. The capacity is ``capacity``, else the
    one of the checkpoint ``resume`` (its arrays fix it), else
    :func:`default_gaussian_capacity` (for ``backend="reference"`` at most
    :func:`reference_max_capacity`). ``log`` gets one line for each choice made, saying
    what to change for quality.
    """
    plat = platform_name()
    n_pts = len(scene.points)
    if scene.points_source == "random":
        n = init_points or default_init_points(scene.width, scene.height, plat)
        if n != n_pts:  # same points as the loader would draw for n (same seed)
            tr = scene.train_idx
            scene.points, scene.point_colors = random_points(
                scene.viewmats[tr], scene.Ks[tr], scene.width, scene.height, n, seed)
    else:
        most = init_points or max_init_points(plat)
        if most is not None and n_pts > most:
            keep = np.sort(np.random.default_rng(seed).choice(n_pts, most, replace=False))
            scene.points, scene.point_colors = scene.points[keep], scene.point_colors[keep]
            log(f"[splat] starting from {most} of the scene's {n_pts} points ({plat} "
                "preset; --init-points to change)")
    if capacity is not None:
        if capacity < len(scene.points):
            log(f"[splat] --capacity {capacity} is below the {len(scene.points)} initial points: "
                f"training starts from a random {capacity} of them")
        return capacity
    if resume:
        return int(load_checkpoint_arrays(resume)[0]["config"]["capacity"])
    capacity = default_gaussian_capacity(len(scene.points), scene.width, scene.height, steps,
                                         plat, strategy)
    why = f"sized from {scene.width}x{scene.height} images and {steps} steps"
    if backend == "reference":
        fit = reference_max_capacity(scene.width, scene.height)
        if fit < capacity:
            why = (f"reduced from {capacity} so that the reference backend's "
                   "(intersection, pixel) pairs fit in half the available memory")
            capacity = fit
    log(f"[splat] capacity {capacity} Gaussians ({why}, {plat} preset; --capacity to "
        "change). For quality: more --steps (gsplat trains 30000), a smaller --downscale, "
        "and a larger --capacity if requests are denied")
    return capacity


__all__ = ["schedule_for", "make_strategy", "n_refinements", "default_init_points",
           "max_init_points", "default_gaussian_capacity", "reference_max_capacity",
           "suggest_capacity", "platform_name", "next_pow2", "train_config",
           "check_training_memory", "check_init_points", "training_state_bytes", "fit_to_machine"]
