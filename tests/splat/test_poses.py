"""Camera poses (issue 26): the pose Jacobian of the rendered image against float64 central
differences through both backends, localize by LM on a synthetic scene (and an honest
status), and pose-opt inside the training step."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgraph import lie
from splat.sh import SH_C0
from splat.tracking.localize import pose_jacobian, render_pose
from splat.train import NoDensification, TrainConfig, Trainer
from splat.train.poses import apply_correction, perturb_poses, pose_errors

from .scenes import random_scene


def model_from(sc, backend="reference"):
    """A params dict (as TrainState.params) and config rendering ``sc``'s Gaussians."""
    n = len(sc["means"])
    op = np.clip(sc["opacities"], 1e-4, 1 - 1e-4)
    params = dict(means=sc["means"], quats=sc["quats"], log_scales=np.log(sc["scales"]),
                  logit_opacities=np.log(op / (1 - op)),
                  sh0=((sc["colors"] - 0.5) / SH_C0)[:, None, :],
                  shN=np.zeros((n, 0, 3), sc["means"].dtype))
    params = {k: jnp.asarray(v) for k, v in params.items()}
    return params, TrainConfig(capacity=n, sh_degree=0, backend=backend, isect_per_gaussian=16)


def smooth_fd(f, d0, eps):
    """Central differences at two step sizes; entries where they disagree straddle a
    discontinuity of the image (a Gaussian entering a tile or crossing the 1/255 alpha cut)
    and are masked out. Returns (FD [..., 6], smooth mask [..., 6])."""
    cols, mask = [], []
    for k in range(6):
        e = np.zeros(6)
        e[k] = 1
        a = (f(d0 + eps * e) - f(d0 - eps * e)) / (2 * eps)
        b = (f(d0 + 2 * eps * e) - f(d0 - 2 * eps * e)) / (4 * eps)
        cols.append(a)
        mask.append(np.abs(a - b) <= 1e-5 * (1 + np.abs(a)))
    return np.stack(cols, -1), np.stack(mask, -1)


@pytest.mark.parametrize("backend,mode", [
    # each takes 40-55 s on the loaded 2-core machine (eager FD renders and a jacfwd compile)
    pytest.param("reference", "forward", marks=pytest.mark.slow),
    pytest.param("pallas", "forward", marks=pytest.mark.slow),
    pytest.param("pallas", "reverse", marks=pytest.mark.slow)])
def test_pose_jacobian_matches_central_differences(backend, mode):
    w, h = 16, 12
    sc = random_scene(30, seed=3, dtype=np.float64, width=w, height=h, scale=(0.1, 0.4))
    params, cfg = model_from(sc, backend)
    vm = jnp.asarray(sc["viewmats"][0])
    K = jnp.asarray(sc["Ks"][0])
    row = lie.SE3.from_matrix(vm).parameters()
    J = np.asarray(pose_jacobian(params, cfg, row, K, w, h, mode))
    assert J.shape == (h, w, 3, 6) and J.dtype == np.float64

    @jax.jit
    def image_j(d):  # the function localize linearises, rendered by the chosen backend
        return render_pose(params, cfg, (lie.SE3(row) @ lie.SE3.exp(d)).as_matrix(), K, w, h)

    def image(d):
        return np.asarray(image_j(jnp.asarray(d)))

    fd, smooth = smooth_fd(image, np.zeros(6), 1e-6)
    assert smooth.mean() > 0.99  # discontinuities touch a few pixels only
    assert np.abs(fd).max() > 0.1  # the image does move with the pose
    err = np.abs(J - fd)[smooth]
    assert err.max() < 1e-5 * (1 + np.abs(fd).max()), err.max()


@pytest.fixture(scope="module")
def synthetic():
    sc = random_scene(60, seed=7, dtype=np.float32, width=48, height=36, scale=(0.1, 0.35))
    params, cfg = model_from(sc)
    truth = np.asarray(sc["viewmats"][0], np.float64)
    img = render_pose(params, cfg, jnp.asarray(truth, jnp.float32), jnp.asarray(sc["Ks"][0]),
                      sc["width"], sc["height"])
    return params, cfg, np.asarray(img), sc["Ks"][0], truth


@pytest.mark.slow
def test_localize_recovers_a_synthetic_pose(synthetic):
    from splat import localize

    params, cfg, img, K, truth = synthetic
    scale = 3.5  # the camera's distance from the scene centre
    start = perturb_poses(truth[None], 2.0, 0.03, seed=1, scale=scale)[0]
    vm, info = localize((params, cfg), img, K, start.astype(np.float32), levels=2,
                        max_iterations=20)
    rot, trans = pose_errors(vm[None], truth[None], scale)
    assert bool(info.converged), int(info.status)
    assert rot[0] < 0.05 and trans[0] < 0.002, (rot, trans)


def test_localize_status_is_not_converged_when_stopped_early(synthetic):
    from splat import localize

    params, cfg, img, K, truth = synthetic
    start = perturb_poses(truth[None], 3.0, 0.05, seed=2, scale=3.5)[0]
    vm, info = localize((params, cfg), img, K, start.astype(np.float32), max_iterations=1)
    rot, _ = pose_errors(vm[None], truth[None], 3.5)
    assert rot[0] > 0.05  # one trial does not get there ...
    assert not bool(info.converged) and int(info.status) == 0  # ... and says so


def test_pose_opt_trains_corrections_and_keeps_test_poses(tmp_path):
    from splat.datasets import DEMO_SCENE, load_npz
    from splat.train import save_checkpoint

    scene = load_npz(DEMO_SCENE, downscale=2)  # 81 x 52: a few steps, not image quality
    cfg = TrainConfig(steps=8, capacity=600, sh_degree=0, strategy=NoDensification(),
                      pose_opt=True, lr_pose=1e-2)
    tr = Trainer(scene, cfg)
    state = tr.init_state()
    test_before = tr.render(state, scene.viewmats[scene.test_idx[:1]], scene.Ks[scene.test_idx[:1]])
    state, _ = tr.fit(state, 8)
    delta = np.asarray(state.pose["delta"])
    assert delta.shape == (len(scene.train_idx), 6) and np.abs(delta).max() > 0
    np.testing.assert_allclose(delta.mean(0), 0, atol=1e-6)  # the gauge: no common motion
    assert tr.compile_count == 1
    # refined poses are the given ones right-multiplied by Exp(delta)
    given = np.asarray(scene.viewmats)[scene.train_idx]
    ref = np.asarray(apply_correction(jnp.asarray(given), jnp.asarray(delta, jnp.float64)))
    np.testing.assert_allclose(tr.train_viewmats(state), ref, atol=1e-5)
    save_checkpoint(tmp_path / "c.npz", tr, state)
    with np.load(tmp_path / "c.npz") as z:
        np.testing.assert_allclose(z["refined_viewmats"][scene.train_idx], ref, atol=1e-5)
        np.testing.assert_array_equal(z["refined_viewmats"][scene.test_idx],
                                      np.asarray(scene.viewmats)[scene.test_idx])
    # a test view is rendered with its given pose, whatever the corrections
    params0 = state.params
    nopose = state._replace(pose=dict(delta=jnp.zeros_like(state.pose["delta"]),
                                      opt=state.pose["opt"]))
    a = tr.render(state, scene.viewmats[scene.test_idx[:1]], scene.Ks[scene.test_idx[:1]])
    b = tr.render(nopose._replace(params=params0), scene.viewmats[scene.test_idx[:1]],
                  scene.Ks[scene.test_idx[:1]])
    np.testing.assert_array_equal(a, b)
    assert test_before.shape == a.shape


def test_perturbation_has_the_asked_size():
    sc = random_scene(1, n_cams=5, seed=1, dtype=np.float64)
    vms = np.asarray(sc["viewmats"])
    noisy = perturb_poses(vms, 1.0, 0.02, seed=0, scale=2.0)
    rot, trans = pose_errors(noisy, vms, 2.0)
    np.testing.assert_allclose(rot, 1.0, atol=1e-6)
    np.testing.assert_allclose(trans, 0.02, atol=1e-9)
