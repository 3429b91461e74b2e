"""Machine-fitted defaults of `splat train` (splat/train/presets.py), checked against the
schedule they are derived from and the memory model they must respect."""

import argparse
import math

import numpy as np
import pytest

from splat.datasets import Scene
from splat.train import presets
from splat.checks import render_bytes


@pytest.mark.parametrize("steps", [1, 30, 100, 500, 2000, 7000, 30000])
def test_n_refinements_counts_the_strategy_schedule(steps):
    s = presets.make_strategy("default", steps)
    done = [t for t in range(1, steps + 1)
            if s.refine_start < t < s.refine_stop and t % s.refine_every == 0]
    assert presets.n_refinements(steps) == len(done)


def test_cpu_and_gpu_presets_for_fox():
    # fox at --downscale 16 (120x67) and 8 (240x135)
    assert presets.default_init_points(120, 67, "cpu") == 1000
    assert presets.default_init_points(240, 135, "cpu") == 4000
    assert presets.default_init_points(4000, 3000, "cpu") == presets.CPU_MAX_INIT_POINTS
    assert presets.default_init_points(120, 67, "gpu") == 100_000
    # 500 steps: 3 refinements can at most grow 1000 -> 8000 Gaussians
    assert presets.default_gaussian_capacity(1000, 120, 67, 500, "cpu") == 8192
    # 2000 steps at downscale 8: 2 per pixel of 240x135 (64,800) as a power of two
    assert presets.default_gaussian_capacity(4000, 240, 135, 2000, "cpu") == 65536
    assert presets.default_gaussian_capacity(10000, 4000, 3000, 30000, "cpu") == presets.CPU_MAX_CAPACITY
    assert presets.default_gaussian_capacity(100_000, 240, 135, 30000, "gpu") == 524288
    assert presets.default_gaussian_capacity(1234, 240, 135, 2000, "cpu", "none") == 1234
    for n, steps in ((1000, 500), (50_000, 2000), (300_000, 30000)):
        cap = presets.default_gaussian_capacity(n, 1920, 1080, steps, "cpu")
        assert cap >= min(n, presets.CPU_MAX_CAPACITY) and cap & (cap - 1) == 0


def test_reference_capacity_fits_the_memory_budget():
    budget = 2 << 30
    cap = presets.reference_max_capacity(240, 135, budget=budget)
    assert cap & (cap - 1) == 0

    def need(p):
        return render_bytes(1, 240, 135, n_gaussians=p, backend="reference",
                            isect_capacity=8 * p)

    assert need(cap) <= budget < need(2 * cap)


def test_suggested_capacity():
    assert presets.suggest_capacity([dict(denied=0, n_active=5)]) is None
    hist = [dict(denied=0, n_active=900), dict(denied=300, n_active=1000),
            dict(denied=500, n_active=1000)]
    assert presets.suggest_capacity(hist) == 2 ** math.ceil(math.log2(1.25 * 1800))


def _scene(n_points, source, w=120, h=67):
    rng = np.random.default_rng(0)
    vm = np.tile(np.eye(4), (3, 1, 1))
    vm[:, 2, 3] = [3.0, 3.5, 4.0]
    ks = np.tile(np.array([[100.0, 0, w / 2], [0, 100, h / 2], [0, 0, 1]]), (3, 1, 1))
    return Scene(images=np.zeros((3, h, w, 3), np.uint8), viewmats=vm, Ks=ks,
                 names=["a", "b", "c"], points=rng.normal(size=(n_points, 3)),
                 point_colors=rng.uniform(size=(n_points, 3)),
                 train_idx=np.array([1, 2]), test_idx=np.array([0]), extent=1.0,
                 points_source=source)


def _fit_to_machine(args, scene):
    """What `splat train` does with its flags: the capacity chosen goes back into them."""
    args.capacity = presets.fit_to_machine(
        scene, steps=args.steps, strategy=args.strategy, backend=args.backend,
        capacity=args.capacity, init_points=args.init_points, resume=args.resume,
        seed=args.seed)


def _args(**kw):
    base = dict(init_points=None, capacity=None, steps=500, strategy="default",
                backend="pallas", seed=0, resume=None)
    return argparse.Namespace(**{**base, **kw})


def test_fit_to_machine_picks_points_and_capacity(capsys):
    sc = _scene(1, "random")
    args = _args()
    _fit_to_machine(args, sc)
    assert len(sc.points) == 1000 and args.capacity == 8192
    out = capsys.readouterr().out
    assert "capacity 8192 Gaussians (sized from 120x67 images and 500 steps" in out
    assert "For quality: more --steps" in out
    sc = _scene(25_000, "sfm")  # a point cloud larger than the CPU preset uses
    args = _args(steps=2000)
    _fit_to_machine(args, sc)
    assert len(sc.points) == presets.CPU_MAX_INIT_POINTS
    assert args.capacity == presets.next_pow2(presets.CPU_MAX_INIT_POINTS)
    args = _args(capacity=333, init_points=50)  # explicit values are kept
    sc = _scene(1, "random")
    _fit_to_machine(args, sc)
    assert args.capacity == 333 and len(sc.points) == 50


def test_reference_backend_default_capacity_is_sized_down(capsys, monkeypatch):
    monkeypatch.setattr(presets, "reference_max_capacity", lambda w, h: 2048)
    args = _args(backend="reference")
    _fit_to_machine(args, _scene(1, "random"))
    assert args.capacity == 2048
    assert "reduced from 8192 so that the reference backend" in capsys.readouterr().out
