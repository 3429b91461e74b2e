"""`splat.rasterization` arguments that used to render something wrong without a word (issue
23): a pose whose last row is not (0, 0, 0, 1), a fractional width, eps2d < 0 (every Gaussian
vanished), near_plane <= 0 (Gaussians behind the camera drawn), and a NaN colour on a
Gaussian flagged invalid (composited anyway). Each is refused naming the argument, or (NaN
colour) culled as documented. Reference backend, one 32 x 24 view: fast."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import splat

from .scenes import random_scene

W, H = 32, 24


def _args(**edits):
    sc = random_scene(6, n_cams=2, width=W, height=H, seed=3)
    sc.update(edits)
    return (sc["means"], sc["quats"], sc["scales"], sc["opacities"], sc["colors"], sc["viewmats"], sc["Ks"])


def _render(args, width=W, height=H, **kw):
    return splat.rasterization(*args, width, height, backend="reference", **kw)


@pytest.mark.parametrize("kw, message", [
    (dict(width=31.7), r"width must be a positive integer \(pixels\), got 31.7"),
    (dict(height=0), r"height must be a positive integer \(pixels\), got 0"),
    (dict(tile_size=8.5), r"tile_size must be a positive integer \(pixels\), got 8.5"),
    (dict(eps2d=-0.1), r"eps2d must be a finite number >= 0 .*got -0.1"),
    (dict(near_plane=-1.0), r"near_plane must be a finite depth > 0 .*got -1.0"),
    (dict(near_plane=0.0), r"near_plane must be a finite depth > 0 .*got 0.0"),
    (dict(near_plane=2.0, far_plane=1.0), r"far_plane must be > near_plane = 2, got 1.0"),
    (dict(radius_clip=float("nan")), r"radius_clip must be finite \(pixels\), got nan"),
])
def test_bad_numbers_refused_naming_the_argument(kw, message):
    with pytest.raises(ValueError, match=message):
        _render(_args(), **kw)


def test_non_affine_pose_refused_outside_jit_invalid_inside():
    sc = random_scene(6, n_cams=2, width=W, height=H, seed=3)
    vm = sc["viewmats"].copy()
    vm[1, 3] = [0.0, 0.0, 0.5, 1.0]  # the renderer reads the top 3 x 4 block only
    with pytest.raises(ValueError, match=r"viewmats\[1\]: last row must be 0 0 0 1 .*got \[0.0, 0.0, 0.5, 1.0\]"):
        _render(_args(viewmats=vm))
    # inside jit the camera is flagged (meta["invalid_cameras"]) and renders nothing: the
    # renderer's validity rule, evaluated under jit
    valid = jax.jit(splat.checks.camera_valid)(jnp.asarray(vm), jnp.asarray(sc["Ks"]))
    assert np.asarray(valid).tolist() == [True, False]


def test_nan_colour_gaussian_is_culled_like_any_flagged_gaussian():
    sc = random_scene(6, n_cams=2, width=W, height=H, seed=3)
    colors = sc["colors"].copy()
    colors[2, 1] = np.nan
    img, alpha, meta = _render(_args(colors=colors), isect_capacity=64)
    assert np.asarray(meta["invalid_gaussians"]).tolist() == [False, False, True, False, False, False]
    assert int(np.asarray(meta["radii"])[:, 2].max()) == 0
    # the same as Gaussian 2 being fully transparent (it used to be composited as black);
    # same shapes and capacity: the compiled renderer is reused
    opacities = sc["opacities"].copy()
    opacities[2] = 0.0
    img0, alpha0, _ = _render(_args(opacities=opacities), isect_capacity=64)
    assert float(jnp.max(alpha0)) > 0.1
    np.testing.assert_allclose(np.asarray(alpha), np.asarray(alpha0), atol=1e-6)
    np.testing.assert_allclose(np.asarray(img), np.asarray(img0), atol=1e-6)
