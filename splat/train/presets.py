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

from .strategy import Strategy, strategy_from_name

CPU_MAX_INIT_POINTS = 10_000
GPU_INIT_POINTS = 100_000
CPU_MAX_CAPACITY = 131_072
def next_pow2(k: int) -> int:
    """Smallest power of two >= k (>= 1)."""
    return 1 << max(0, int(k - 1).bit_length())


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
    :func:`splat.validation.render_bytes`."""
    from ..validation import available_memory_bytes, render_bytes

    if budget is None:
        budget = available_memory_bytes() // 2
    cap = 1
    while render_bytes(1, width, height, n_gaussians=2 * cap, backend="reference",
                       isect_capacity=2 * cap * isect_per_gaussian,
                       tile_size=tile_size) <= budget and cap < 2**30:
        cap *= 2
    return cap


def default_capacity(n_init: int, width: int, height: int, steps: int, platform: str,
                     strategy: str = "default") -> int:
    """Capacity sized from the scene (pixels per image), the initial count and the steps.

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


__all__ = ["schedule_for", "make_strategy", "n_refinements", "default_init_points",
           "max_init_points", "default_capacity", "reference_max_capacity", "suggest_capacity",
           "platform_name", "next_pow2"]
