"""The training step: one compilation for a whole run with densification, capacity
exhaustion reported, checkpoint resume identical to uninterrupted training, CLI end to end."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from splat.cli import DEMO_SCENE, main
from splat.datasets import load_npz
from splat.io.ply import read_ply
from splat.train import (DefaultStrategy, MCMCStrategy, TrainConfig, Trainer,
                         params_from_checkpoint, restore_state, save_checkpoint)

CFG = TrainConfig(steps=40, capacity=640, sh_degree=1, sh_degree_interval=10,
                  isect_per_gaussian=8,
                  # the CLI test below covers the plain 2D-gradient path
                  strategy=DefaultStrategy(refine_start=5, refine_every=5, refine_stop=40,
                                           reset_every=35, absgrad=True))


@pytest.fixture(scope="module")
def run():
    scene = load_npz(DEMO_SCENE, downscale=4)  # 40 x 26 pixels (the scene is 162 x 105), 14 train / 2 test views
    trainer = Trainer(scene, CFG)
    state = trainer.init_state(scene.points[:300], scene.point_colors[:300])
    init_eval = trainer.evaluate(state)
    logs = []
    state, hist = trainer.fit(state, 30, log_every=10, log=logs.append)
    return scene, trainer, state, hist, init_eval, logs


def test_one_compilation_serves_whole_run_with_densification(run):
    scene, trainer, state, hist, init_eval, _ = run
    assert trainer.compile_count == 1
    assert trainer._step._cache_size() == 1
    refined = [h for h in hist if h["refined"]]
    assert len(refined) == 5  # steps 10, 15, 20, 25, 30 (refine_start 5 is exclusive)
    n = [h["n_active"] for h in hist]
    assert n[0] == 300 and max(n) > 300
    assert sum(h["n_split"] + h["n_clone"] for h in refined) > 0
    assert all(np.isfinite(h["loss"]) for h in hist)
    for v in state.params.values():
        assert np.isfinite(np.asarray(v)).all()
    assert not any(h["isect_overflow"] for h in hist)


def test_capacity_exhaustion_is_reported(run):
    _, _, state, hist, _, logs = run
    denied = [h["denied"] for h in hist]
    # 640 slots fill up: the refinement that found no room says so
    assert max(h["n_active"] for h in hist) == CFG.capacity
    assert sum(denied) > 0
    assert all(d == 0 for h, d in zip(hist, denied) if not h["refined"])
    # said loudly: once when it happens, on every later progress line, and at the end
    # with a larger capacity that would have fitted
    first = next(h for h in hist if h["denied"])
    assert any(f"CAPACITY FULL at step {first['step']}" in m for m in logs)
    later = [m for m in logs if m.startswith("[") and "step" in m and "it/s" in m][-1]
    assert f"DENIED {sum(denied)} (capacity 640 full)" in later
    end = logs[-1]
    assert end.startswith("[splat] WARNING: capacity 640 was too small") and \
        f"{sum(denied)} densification requests were denied" in end
    assert int(end.split("capacity ")[-1].split()[0]) > 640
    assert any("s/step after the first (compiling) step" in m for m in logs)


def test_training_improves_test_psnr(run):
    scene, trainer, state, hist, init_eval, _ = run
    ev = trainer.evaluate(state)
    assert ev["psnr"].mean() > init_eval["psnr"].mean() + 1.0
    assert ev["images"].shape == (len(scene.test_idx), 26, 40, 3)


def test_checkpoint_resume_matches_uninterrupted(run, tmp_path):
    scene, trainer, state, hist, _, _ = run
    path = tmp_path / "ck.npz"
    save_checkpoint(path, trainer, state)
    copy = jax.tree_util.tree_map(jnp.array, state)
    a, _ = trainer.fit(copy, 6, log=lambda *_: None)  # crosses the refinement and opacity reset at step 35
    b = restore_state(path, trainer)
    assert int(b.step) == 30
    b, _ = trainer.fit(b, 6, log=lambda *_: None)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert trainer.compile_count == 1
    params, meta = params_from_checkpoint(path)
    assert params["means"].shape[0] == int(np.asarray(state.active).sum())
    assert meta["config"]["capacity"] == CFG.capacity


@pytest.mark.slow
def test_mcmc_strategy_one_compilation():
    scene = load_npz(DEMO_SCENE, downscale=4)
    cfg = TrainConfig(steps=20, capacity=400, sh_degree=1,
                      strategy=MCMCStrategy(refine_start=4, refine_every=4, refine_stop=20,
                                            growth=1.2))
    trainer = Trainer(scene, cfg)
    state = trainer.init_state(scene.points[:200], scene.point_colors[:200])
    state, hist = trainer.fit(state, 20, log=lambda *_: None)
    assert trainer.compile_count == 1
    n = [h["n_active"] for h in hist]
    assert n[0] == 200 and n[-1] > 200 and n[-1] <= 400
    assert all(np.isfinite(h["loss"]) for h in hist)
    for v in state.params.values():
        assert np.isfinite(np.asarray(v)).all()


def test_cli_end_to_end(tmp_path):
    out = tmp_path / "run"
    main(["demo", "--out", str(out), "--steps", "12", "--capacity", "4000", "--log-every", "6"])
    for f in ("checkpoint.npz", "point_cloud.ply", "metrics.json", "renders/test_000.png"):
        assert (out / f).is_file(), f
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 12 and len(m["history"]) == 12 and np.isfinite(m["test_psnr"])
    # the PLY holds exactly the checkpoint's active Gaussians
    g = read_ply(out / "point_cloud.ply")
    params, _ = params_from_checkpoint(out / "checkpoint.npz")
    np.testing.assert_array_equal(g.means, params["means"])
    np.testing.assert_array_equal(g.sh[:, 1:], params["shN"])
    main(["render", str(out / "point_cloud.ply"), "--out", str(tmp_path / "r"), "--views", "2",
          "--size", "24"])
    assert sorted(os.listdir(tmp_path / "r")) == ["view_000.png", "view_001.png"]
    main(["eval", str(out / "checkpoint.npz"), "--out", str(tmp_path / "e")])
    ev = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert abs(ev["mean"]["psnr"] - m["test_psnr"]) < 1e-3


def test_render_falls_back_to_exact_capacity_on_overflow(run):
    """A one-intersection-per-Gaussian buffer overflows; the re-render must equal the
    rasterizer's exact-capacity render (computed outside jit)."""
    import dataclasses
    import functools

    from splat.train.state import render
    from splat.train.views import render_checked, render_views

    scene, trainer, state, _, _, _ = run
    cfg = dataclasses.replace(CFG, isect_per_gaussian=1)
    fn = jax.jit(functools.partial(render_views, cfg=cfg, width=40, height=26))
    vms = jnp.asarray(scene.viewmats[:1], jnp.float32)
    Ks = jnp.asarray(scene.Ks[:1], jnp.float32)
    _, overflow = fn(state.params, state.active, vms, Ks)
    assert bool(overflow[0])
    got = render_checked(fn, state.params, state.active, vms, Ks, cfg, 40, 26, jnp.float32)
    want, _, meta = render(state.params, state.active, vms, Ks, 40, 26, cfg, exact=True)
    assert not bool(meta["overflow"])
    np.testing.assert_allclose(got[0], np.clip(np.asarray(want[0]), 0, 1), atol=1e-6)
