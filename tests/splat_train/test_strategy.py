"""Densification primitives and strategy objects on hand-built states, against what each
rule must produce."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from splat.train import (DefaultStrategy, MCMCStrategy, NoDensification, TrainConfig,
                         strategy_from_name)
from splat.train.state import PARAM_NAMES
from splat.train import strategy

# jit each primitive (cfg static): one compilation instead of hundreds of eager ops
allocate = jax.jit(strategy.allocate)
relocation = jax.jit(strategy.relocation, static_argnums=3)
opacity_reset = jax.jit(strategy.opacity_reset, static_argnums=2)


def default_refine(params, active, opt_state, grad_acc, vis, step, key, strat, extent):
    f = jax.jit(functools.partial(strategy.default_refine, strategy=strat, extent=extent))
    return f(params, active, opt_state, grad_acc, vis, step, key)


def mcmc_refine(params, active, opt_state, key, strat):
    f = jax.jit(functools.partial(strategy.mcmc_refine, strategy=strat))
    return f(params, active, opt_state, key)
from splat.train.trainer import make_optimizers


def _state(p=8, n_active=4):
    rng = np.random.default_rng(0)
    f = jnp.float32
    params = dict(
        means=jnp.asarray(rng.normal(size=(p, 3)), f),
        quats=jnp.asarray(np.tile([1.0, 0, 0, 0], (p, 1)), f),
        log_scales=jnp.full((p, 3), math.log(0.001), f),
        logit_opacities=jnp.full((p,), 2.0, f),
        sh0=jnp.asarray(rng.normal(size=(p, 1, 3)), f),
        shN=jnp.asarray(rng.normal(size=(p, 3, 3)), f))
    active = jnp.arange(p) < n_active
    opts = make_optimizers(TrainConfig(steps=10, sh_degree=1), 1.0)
    opt_state = {k: opts[k].init(params[k]) for k in PARAM_NAMES}
    # non-zero moments everywhere so that resets are visible
    opt_state = {k: (s[0]._replace(mu=jnp.ones_like(s[0].mu), nu=jnp.ones_like(s[0].nu)),)
                 + tuple(s[1:]) for k, s in opt_state.items()}
    return params, active, opt_state


def test_allocate_in_order_and_reports_denials():
    active = jnp.array([True, False, True, False, True])
    req = jnp.array([True, False, True, True, False])
    dst, granted, denied = allocate(req, active)
    assert dst.tolist() == [1, 5, 3, 5, 5]
    assert granted.tolist() == [True, False, True, False, False]
    assert int(denied) == 1


def test_default_refine_clone_split_prune_and_moment_reset():
    cfg = DefaultStrategy(grow_grad2d=0.1, grow_scale3d=0.01, prune_opa=0.005,
                          reset_every=1000)
    params, active, opt_state = _state()
    params["log_scales"] = params["log_scales"].at[1].set(math.log(0.5))  # large: split
    params["logit_opacities"] = params["logit_opacities"].at[2].set(-8.0)  # prune
    grad_acc = jnp.array([3.0, 3.0, 0, 0, 9, 9, 9, 9], jnp.float32)  # inactive ignored
    vis = jnp.array([2, 2, 1, 1, 0, 0, 0, 0], jnp.int32)  # averages 1.5 > 0.1
    new, act, ost, info = default_refine(params, active, opt_state, grad_acc, vis,
                                         jnp.int32(10), jnp.asarray([0, 1], jnp.uint32),
                                         cfg, 1.0)
    assert (int(info["n_clone"]), int(info["n_split"]), int(info["n_prune"]),
            int(info["denied"])) == (1, 1, 1, 0)
    assert act.tolist() == [True, True, False, True, True, True, False, False]
    for k in PARAM_NAMES:  # slot 4 is an exact clone of 0 (its first free slot)
        np.testing.assert_array_equal(new[k][4], params[k][0])
        np.testing.assert_array_equal(new[k][0], params[k][0])
    shrunk = math.log(0.5) - math.log(1.6)
    np.testing.assert_allclose(new["log_scales"][1], shrunk, rtol=1e-6)
    np.testing.assert_allclose(new["log_scales"][5], shrunk, rtol=1e-6)
    # children are samples of the parent: different, within a few sigma (0.5)
    d1 = np.linalg.norm(np.asarray(new["means"][1] - params["means"][1]))
    d5 = np.linalg.norm(np.asarray(new["means"][5] - params["means"][1]))
    assert 0 < d1 < 3 and 0 < d5 < 3 and not np.allclose(new["means"][1], new["means"][5])
    np.testing.assert_array_equal(new["sh0"][5], params["sh0"][1])
    changed = [False, True, True, False, True, True, False, False]
    for k in PARAM_NAMES:
        mu = np.asarray(ost[k][0].mu).reshape(8, -1)
        for i in range(8):
            assert (mu[i] == 0).all() == changed[i], (k, i)


def test_default_refine_capacity_exhaustion_reported():
    cfg = DefaultStrategy(grow_grad2d=0.1)
    params, active, opt_state = _state(p=5, n_active=4)
    grad_acc = jnp.array([1.0, 1.0, 1.0, 0, 0], jnp.float32)
    vis = jnp.ones((5,), jnp.int32)
    new, act, _, info = default_refine(params, active, opt_state, grad_acc, vis, jnp.int32(10),
                                       jnp.asarray([0, 1], jnp.uint32), cfg, 1.0)
    assert int(info["denied"]) == 2 and int(act.sum()) == 5


def test_opacity_reset_clamps_to_twice_prune_threshold():
    cfg = DefaultStrategy(prune_opa=0.005)
    params, _, opt_state = _state()
    params["logit_opacities"] = params["logit_opacities"].at[0].set(-9.0)
    new, ost = opacity_reset(params, opt_state, cfg)
    o = 1 / (1 + np.exp(-np.asarray(new["logit_opacities"], np.float64)))
    np.testing.assert_allclose(o[1:], 0.01, rtol=1e-5)
    assert o[0] < 0.001
    assert float(jnp.abs(ost["logit_opacities"][0].mu).max()) == 0
    assert float(ost["means"][0].mu.min()) == 1  # other parameters untouched


def test_relocation_formula():
    """N copies with opacity o' composite to the original opacity (1 - (1 - o')^N = o),
    and scales follow eq. 9 of Kheradmand et al., evaluated here in float64 loops."""
    o = np.array([0.3, 0.9, 0.5, 0.05])
    r = np.array([1, 2, 3, 5])
    ls = np.log(np.full((4, 3), 0.2))
    new_o, new_ls = relocation(jnp.asarray(o), jnp.asarray(ls), jnp.asarray(r, jnp.int32), 0.005)
    new_o = np.asarray(new_o)
    np.testing.assert_allclose(1 - (1 - new_o) ** r, o, rtol=1e-10)
    for i in range(4):
        if r[i] == 1:
            np.testing.assert_allclose(np.asarray(new_ls[i]), ls[i])
            continue
        den = sum(math.comb(j - 1, k) * (-1) ** k / math.sqrt(k + 1) * new_o[i] ** (k + 1)
                  for j in range(1, r[i] + 1) for k in range(j))
        np.testing.assert_allclose(np.exp(np.asarray(new_ls[i])), o[i] / den * 0.2, rtol=1e-8)


def test_mcmc_refine_relocates_dead_and_grows():
    cfg = MCMCStrategy(min_opacity=0.005, growth=1.25)
    params, active, opt_state = _state(p=8, n_active=4)
    params["logit_opacities"] = params["logit_opacities"].at[3].set(-9.0)  # dead
    new, act, _, info = mcmc_refine(params, active, opt_state, jnp.asarray([0, 3], jnp.uint32),
                                    cfg)
    assert int(info["n_relocated"]) == 1 and int(info["n_added"]) == 1
    assert act.tolist() == [True] * 5 + [False] * 3
    # the dead slot now holds a copy of a live Gaussian (0, 1 or 2)
    src = [i for i in range(3) if np.allclose(new["sh0"][3], params["sh0"][i])]
    assert len(src) == 1
    o = 1 / (1 + np.exp(-np.asarray(new["logit_opacities"], np.float64)))
    assert (o[:5] > cfg.min_opacity).all()
    assert np.isfinite(np.asarray(new["log_scales"])).all()


def test_strategies_are_hashable_objects_serialised_with_the_config():
    s = DefaultStrategy(refine_every=7, absgrad=True)
    assert hash(s) == hash(DefaultStrategy(refine_every=7, absgrad=True))
    assert s.grad_threshold == 0.0008 and s.uses_absgrad
    for strat in (s, MCMCStrategy(growth=1.2, noise_lr=1e4), NoDensification()):
        cfg = TrainConfig(steps=10, strategy=strat)
        assert TrainConfig.from_json(cfg.to_json()) == cfg
        assert strategy_from_name(strat.name, **{k: v for k, v in strat.to_dict().items()
                                                 if k != "name"}) == strat
    try:
        TrainConfig(strategy="mcmc")
    except TypeError as e:
        assert "MCMCStrategy()" in str(e)
    else:
        raise AssertionError("a strategy name must be refused by TrainConfig")


def _ctx(step, p=8, g=0.0):
    return strategy.StepContext(
        step=jnp.int32(step), key=jnp.asarray([0, 1], jnp.uint32),
        radii=jnp.ones((p, 2), jnp.int32), grad2d=jnp.full((p, 2), g, jnp.float32),
        absgrad=jnp.zeros((p, 2), jnp.float32), width=4, height=2, extent=1.0,
        lr_means=jnp.float32(1e-3))


def test_default_strategy_hook_accumulates_then_refines_on_schedule():
    """Under jit, the hook sums ||grad2d|| in NDC units (pixels * (W/2, H/2)) for visible
    active Gaussians and refines exactly at refine_every multiples inside the window,
    with the same result as the primitive, then resets its state."""
    s = DefaultStrategy(grow_grad2d=0.1, refine_start=2, refine_every=3, refine_stop=9,
                        reset_every=1000)
    params, active, opt_state = _state()
    hook = jax.jit(s.step_post_backward)
    st = s.init_state(8, jnp.float32)
    refined = []
    for t in range(1, 7):
        before = (params, active, opt_state, st)
        params, active, opt_state, st, info = hook(params, active, opt_state, st,
                                                   _ctx(t, g=0.3))
        refined.append(bool(info["refined"]))
        if t == 2:  # two steps of |(0.3 * 2, 0.3 * 1)| = 0.3 sqrt(5) for the 4 active ones
            np.testing.assert_allclose(st["grad_acc"][:4], 2 * 0.3 * math.sqrt(5), rtol=1e-6)
            assert st["grad_acc"][4:].tolist() == [0] * 4
            assert st["vis_count"].tolist() == [2] * 4 + [0] * 4
        if t == 3:
            p0, a0, o0, s0 = before
            ga = s0["grad_acc"] + jnp.where(a0, 0.3 * math.sqrt(5), 0)
            vc = s0["vis_count"] + a0.astype(jnp.int32)
            want = default_refine(p0, a0, o0, ga, vc, jnp.int32(3), _ctx(3).key, s, 1.0)
            for k in PARAM_NAMES:
                np.testing.assert_array_equal(params[k], want[0][k])
            assert active.tolist() == want[1].tolist() and int(active.sum()) == 8
            assert int(info["n_clone"]) == 4 and st["grad_acc"].tolist() == [0] * 8
    assert refined == [False, False, True, False, False, True]


def test_mcmc_strategy_hook_regularization_and_noise():
    s = MCMCStrategy(refine_start=100, opacity_reg=0.3, scale_reg=0.7)
    params, active, opt_state = _state()
    o = 1 / (1 + np.exp(-np.asarray(params["logit_opacities"], np.float64)))
    sc = np.exp(np.asarray(params["log_scales"], np.float64))
    a = np.asarray(active)
    want = (0.3 * o[a].sum() + 0.7 * sc[a].sum() / 3) / a.sum()
    np.testing.assert_allclose(float(jax.jit(s.regularization)(params, active)), want,
                               rtol=1e-6)
    new, act, _, st, info = jax.jit(s.step_post_backward)(params, active, opt_state, {},
                                                          _ctx(5))
    assert not bool(info["refined"]) and st == {} and act.tolist() == active.tolist()
    # opaque Gaussians (o = 0.88) barely move; inactive slots never do
    np.testing.assert_array_equal(new["means"][4:], params["means"][4:])
    assert float(jnp.abs(new["means"][:4] - params["means"][:4]).max()) < 1e-6


def test_no_densification_hook_is_identity():
    s = NoDensification()
    params, active, opt_state = _state()
    out = jax.jit(s.step_post_backward)(params, active, opt_state, s.init_state(8, jnp.float32),
                                        _ctx(100))
    for k in PARAM_NAMES:
        np.testing.assert_array_equal(out[0][k], params[k])
    assert float(s.regularization(params, active)) == 0
    assert all(int(out[4][k]) == 0 for k in strategy.INFO_KEYS)
