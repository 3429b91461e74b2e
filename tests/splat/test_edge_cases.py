"""Degenerate inputs, capacity overflow, validation, vmap and jit behaviour.

Every case must give finite outputs and finite gradients; the expected images are
stated independently (background only, same as a reference scene, ...).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import splat

from .scenes import random_scene

PARAMS = ("means", "quats", "scales", "opacities", "colors")
N, W, H = 12, 32, 24
BGC = np.asarray([0.25, 0.5, 0.75], np.float32)


@functools.partial(jax.jit, static_argnames=("backend", "capacity"))
def _render_grads(params, viewmats, Ks, backend, capacity=N * 4):
    def loss(params):
        img, alpha, meta = splat.rasterization(
            *params, viewmats, Ks, W, H, backgrounds=jnp.asarray(BGC), backend=backend,
            isect_capacity=capacity)
        return jnp.sum(img) + jnp.sum(alpha * img[..., :1]), (img, alpha, meta)

    (_, (img, alpha, meta)), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return img, alpha, meta, grads


def _run(sc, backend, capacity=N * 4):
    params = tuple(jnp.asarray(sc[k]) for k in PARAMS)
    return _render_grads(params, jnp.asarray(sc["viewmats"]), jnp.asarray(sc["Ks"]),
                         backend=backend, capacity=capacity)


def _check_finite(out):
    img, alpha, meta, grads = out
    assert img.dtype == alpha.dtype == jnp.float32  # float32 in, float32 out (x64 enabled)
    for x in (img, alpha, *jax.tree.leaves(grads)):
        assert np.all(np.isfinite(np.asarray(x)))
    for k in ("means2d", "depths", "conics", "opacities"):
        assert np.all(np.isfinite(np.asarray(meta[k])))


BACKENDS = ["reference", "pallas"]


def _base():
    return random_scene(N, n_cams=1, seed=21, width=W, height=H)


def _with(sc, **edits):
    sc = dict(sc)
    for k, v in edits.items():
        sc[k] = np.asarray(v, np.float32)
    return sc


def _cases():
    sc = _base()
    means, scales, quats, opac = sc["means"], sc["scales"], sc["quats"], sc["opacities"]
    # The camera sits at (0, 0, -3.5) looking along +z: world z < -3.5 is behind it.
    behind = means - np.array([0, 0, 20], np.float32)
    near = means.copy()
    near[:4] = [[0, 0, -3.5 + 0.02], [0.05, 0, -3.5 + 0.011], [0, 0.05, -3.5 + 0.5], [0, 0, -3.4]]
    near_scales = scales.copy()
    near_scales[:4] = 0.3  # extends across the near plane (0.01)
    huge = scales.copy()
    huge[:3] = 1e4
    zero = scales.copy()
    zero[:5] = 0
    nan_means = means.copy()
    nan_means[0, 1] = np.nan
    inf_scales = scales.copy()
    inf_scales[1, 0] = np.inf
    nan_opac = opac.copy()
    nan_opac[2] = np.nan
    zq = quats.copy()
    zq[3] = 0
    return {
        "behind_camera": _with(sc, means=behind),
        "straddling_near_plane": _with(sc, means=near, scales=near_scales),
        "huge_scales": _with(sc, scales=huge),
        "zero_scales": _with(sc, scales=zero),
        "zero_quaternion": _with(sc, quats=zq),
        "nonfinite_inputs": _with(sc, means=nan_means, scales=inf_scales, opacities=nan_opac),
    }


@functools.lru_cache(maxsize=None)
def _cached(backend, name):
    sc = _base() if name == "base" else _cases()[name]
    return _run(sc, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["behind_camera", "straddling_near_plane", "huge_scales",
                                  "zero_scales", "zero_quaternion", "nonfinite_inputs"])
def test_degenerate_inputs_are_finite(backend, name):
    out = _cached(backend, name)
    _check_finite(out)
    if name == "behind_camera":
        np.testing.assert_allclose(np.asarray(out[0]), np.broadcast_to(BGC, out[0].shape))
        assert float(jnp.max(out[1])) == 0.0
        assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(out[3]))
    if name == "huge_scales":
        assert float(jnp.min(out[1])) > 0.5  # every pixel covered
    if backend == "pallas":  # both backends agree on degenerate inputs too
        ref = _cached("reference", name)
        np.testing.assert_allclose(np.asarray(out[0]), np.asarray(ref[0]), atol=1e-5)


def test_nonfinite_gaussians_are_culled():
    """A Gaussian with NaN/Inf parameters renders as if its opacity were 0."""
    bad = _cached("reference", "nonfinite_inputs")
    sc = _base()
    opac = sc["opacities"].copy()
    opac[:3] = 0
    want = _run(_with(sc, opacities=opac), "reference")
    np.testing.assert_allclose(np.asarray(bad[0]), np.asarray(want[0]), atol=1e-6)


def test_unnormalised_quaternions_render_identically():
    sc = _base()
    out = _cached("reference", "base")
    scaled = _run(_with(sc, quats=sc["quats"] * np.linspace(0.1, 9, N)[:, None]), "reference")
    np.testing.assert_allclose(np.asarray(scaled[0]), np.asarray(out[0]), atol=1e-6)


def test_validate_raises_clear_errors():
    sc = _cases()["nonfinite_inputs"]
    with pytest.raises(ValueError, match="means contains 1 non-finite"):
        splat.rasterization(**sc, validate=True, backend="reference")
    good = _base()
    with pytest.raises(ValueError, match=r"quats must have shape"):
        splat.rasterization(**{**good, "quats": good["quats"][:, :3]})
    with pytest.raises(ValueError, match="render_mode"):
        splat.rasterization(**good, render_mode="RGBD")
    with pytest.raises(ValueError, match="sh_degree"):
        splat.rasterization(**good, sh_degree=4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_gaussians(backend):
    sc = random_scene(0, seed=1, width=W, height=H)

    def loss(means, opac):
        img, alpha, _ = splat.rasterization(means, sc["quats"], sc["scales"], opac, sc["colors"],
                                            sc["viewmats"], sc["Ks"], W, H,
                                            backgrounds=BGC, backend=backend)
        return jnp.sum(img), (img, alpha)

    (_, (img, alpha)), g = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        jnp.asarray(sc["means"]), jnp.asarray(sc["opacities"]))
    np.testing.assert_allclose(np.asarray(img), np.broadcast_to(BGC, (1, H, W, 3)))
    assert float(jnp.abs(alpha).max()) == 0 and g[0].shape == (0, 3) and g[1].shape == (0,)


def test_overflow_retries_outside_jit_and_flags_inside():
    sc = _base()
    full = _cached("reference", "base")
    # Outside jit: an explicit too-small capacity is retried with enough room.
    img, _, meta = splat.rasterization(**sc, backgrounds=BGC, backend="reference",
                                       isect_capacity=3)
    assert not bool(meta["overflow"]) and meta["isect_capacity"] >= int(meta["isect_count"])
    np.testing.assert_allclose(np.asarray(img), np.asarray(full[0]), atol=1e-6)
    # Inside jit the capacity is static: the flag is raised, outputs and gradients stay
    # finite. (Tiling is shared by both backends, so one backend suffices here.)
    out = _run(sc, "reference", capacity=3)
    assert bool(out[2]["overflow"]) and int(out[2]["isect_count"]) > 3
    _check_finite(out)


@pytest.mark.slow  # vmap of the renderer stays in the fast suite with test_vmap_over_scenes_matches_separate_calls
def test_vmap_over_cameras_matches_batched_cameras():
    sc = random_scene(20, n_cams=3, seed=5, width=W, height=H)
    args = [sc[k] for k in PARAMS]
    batched, alpha, _ = splat.rasterization(*args, sc["viewmats"], sc["Ks"], W, H,
                                            backend="pallas", isect_capacity=256)

    def one(vm, k):
        img, a, _ = splat.rasterization(*args, vm[None], k[None], W, H, backend="pallas",
                                        isect_capacity=256)
        return img[0], a[0]

    img_v, alpha_v = jax.jit(jax.vmap(one))(sc["viewmats"], sc["Ks"])
    np.testing.assert_allclose(np.asarray(img_v), np.asarray(batched), atol=1e-6)
    np.testing.assert_allclose(np.asarray(alpha_v), np.asarray(alpha), atol=1e-6)


def test_vmap_over_scenes_matches_separate_calls():
    scenes = [random_scene(16, seed=s, width=W, height=H) for s in (7, 8)]
    stacked = [np.stack([s[k] for s in scenes]) for k in PARAMS]
    vm, ks = scenes[0]["viewmats"], scenes[0]["Ks"]

    def render(*p):
        return splat.rasterization(*p, vm, ks, W, H, backend="reference", isect_capacity=128)[0]

    imgs = jax.jit(jax.vmap(render))(*stacked)
    for i, s in enumerate(scenes):
        one = splat.rasterization(*[s[k] for k in PARAMS], vm, ks, W, H, backend="reference")[0]
        np.testing.assert_allclose(np.asarray(imgs[i]), np.asarray(one), atol=1e-6)


def test_jit_traces_once():
    traces = []
    sc = _base()

    @jax.jit
    def render(means, opac):
        traces.append(1)
        return splat.rasterization(means, sc["quats"], sc["scales"], opac, sc["colors"],
                                   sc["viewmats"], sc["Ks"], W, H, backend="reference",
                                   isect_capacity=64)[0]

    a = render(jnp.asarray(sc["means"]), jnp.asarray(sc["opacities"]))
    b = render(jnp.asarray(sc["means"]) + 0.01, jnp.asarray(sc["opacities"]) * 0.5)
    assert len(traces) == 1 and not np.allclose(np.asarray(a), np.asarray(b))


def test_cameras_and_sizes_checked_eagerly_outside_jit():
    import time

    sc = random_scene(4, n_cams=2, seed=3, width=W, height=H)
    t = time.perf_counter()
    with pytest.raises(ValueError, match="100000x100000 = 10000000000 pixels"):
        splat.rasterization(**{**sc, "width": 100000, "height": 100000})
    with pytest.raises(ValueError, match="needs at least .* GiB, only"):
        splat.rasterization(**{**sc, "width": 46000, "height": 46000})
    assert time.perf_counter() - t < 10  # refused before allocating anything
    for k, (i, *j), v, msg in (("Ks", (1, 0, 0), 0.0, r"Ks\[1\]: focal lengths must be > 0"),
                              ("Ks", (0, 1, 1), -5.0, r"Ks\[0\]: focal lengths must be > 0"),
                              ("Ks", (1, 0, 2), np.inf, r"Ks\[1\] is not finite"),
                              ("viewmats", (1, 2, 3), np.nan, r"viewmats\[1\] is not finite")):
        bad = sc[k].copy()
        bad[(i, *j)] = v
        with pytest.raises(ValueError, match=msg):
            splat.rasterization(**{**sc, k: bad}, backend="reference")


def test_invalid_cameras_and_gaussians_flagged_in_meta_under_jit():
    sc = random_scene(4, n_cams=3, seed=3, width=W, height=H)
    ks, vms, means = sc["Ks"].copy(), sc["viewmats"].copy(), sc["means"].copy()
    ks[1, 1, 1] = 0.0  # zero focal length: must not render everything at the centre
    vms[2, 0, 3] = np.nan
    means[2, 0] = np.inf

    @jax.jit
    def f(ks, vms, means):
        return splat.rasterization(**{**sc, "Ks": ks, "viewmats": vms, "means": means},
                                   backend="reference", isect_capacity=64)

    img, alpha, meta = f(ks, vms, means)
    assert np.asarray(meta["invalid_cameras"]).tolist() == [False, True, True]
    assert np.asarray(meta["invalid_gaussians"]).tolist() == [False, False, True, False]
    a = np.asarray(alpha)
    assert a[0].max() > 0.1 and a[1].max() == 0 and a[2].max() == 0
    assert (np.asarray(meta["radii"])[1:] == 0).all() and (np.asarray(meta["radii"])[:, 2] == 0).all()
    assert np.isfinite(np.asarray(img)).all()


def test_cameras_closed_over_by_jit_are_checked_while_tracing():
    """Concrete (JAX) cameras captured by a jitted function are checked eagerly."""
    sc = random_scene(4, n_cams=2, seed=3, width=W, height=H)
    sc["viewmats"] = jnp.asarray(sc["viewmats"])

    def render(means, ks):
        ks = jnp.asarray(ks)
        return jax.jit(lambda m: splat.rasterization(**{**sc, "means": m, "Ks": ks},
                                                     backend="reference",
                                                     isect_capacity=64)[1])(means)

    assert np.asarray(render(sc["means"], sc["Ks"])).max() > 0
    bad = sc["Ks"].copy()
    bad[1, 0, 0] = 0.0
    with pytest.raises(ValueError, match=r"Ks\[1\]: focal lengths must be > 0"):
        render(sc["means"], bad)
