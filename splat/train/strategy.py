"""Densification strategies as pure functions of fixed-shape arrays (run inside jit).

Default (3DGS / gsplat's DefaultStrategy): per-Gaussian sums of the 2D-mean gradient
norm (or absgrad) over the views where it is visible; every ``refine_every`` steps
Gaussians whose average exceeds the threshold are cloned (small ones) or split in two
(large ones: children sampled from the Gaussian, scales / 1.6) into free slots; then
low-opacity and oversized Gaussians are pruned. Opacities are periodically clamped down.

MCMC (Kheradmand et al. 2024, gsplat's MCMCStrategy): no cloning by gradient; dead
Gaussians (opacity <= prune_opa) are relocated onto live ones sampled proportionally to
opacity, the budget grows by ``mcmc_growth`` per refinement up to the capacity, and
opacity-scaled noise is added to the means every step.

Free slots are handed out in index order; requests that find no free slot are counted
and returned (``denied``) so that capacity exhaustion is visible in the step's metrics.
Adam moments of every slot whose content changed are zeroed.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxgraph import lie

from ..projection import quat_scale_to_covar


def reset_moments(opt_state, name, rows):
    """Zero Adam's first and second moments of parameter ``name`` where rows [P] is True."""
    st = opt_state[name]
    adam = st[0]

    def z(m):
        mask = rows.reshape(rows.shape + (1,) * (m.ndim - 1))
        return jnp.where(mask, jnp.zeros_like(m), m)

    new = dict(opt_state)
    new[name] = (adam._replace(mu=z(adam.mu), nu=z(adam.nu)),) + tuple(st[1:])
    return new


def allocate(requests, active):
    """Assign free slots to requests in index order.

    requests, active: [P] bool. Returns (dst [P] int32 slot for each granted request, P
    for others (an out-of-range index that scatters with mode="drop" ignore), granted [P]
    bool, denied () int32 number of requests that found no free slot).
    """
    p = active.shape[0]
    free_idx = jnp.nonzero(~active, size=p, fill_value=p)[0].astype(jnp.int32)
    n_free = jnp.sum(~active, dtype=jnp.int32)
    rank = jnp.cumsum(requests.astype(jnp.int32)) - 1
    granted = requests & (rank < n_free)
    dst = jnp.where(granted, free_idx[jnp.clip(rank, 0, p - 1)], p)
    denied = jnp.sum(requests, dtype=jnp.int32) - jnp.sum(granted, dtype=jnp.int32)
    return dst, granted, denied


def _scatter_rows(params, dst, new_rows):
    return {k: params[k].at[dst].set(new_rows[k], mode="drop") for k in params}


def default_refine(params, active, opt_state, grad_acc, vis_count, step, key, cfg, extent):
    """One refinement of the default strategy.

    Returns (params, active, opt_state, info) with info: n_clone, n_split, n_prune,
    denied (int32 scalars).
    """
    dt = params["means"].dtype
    p = active.shape[0]
    avg = grad_acc / jnp.maximum(vis_count, 1).astype(dt)
    scale_max = jnp.exp(jnp.max(params["log_scales"], axis=-1))
    cand = active & (avg > cfg.grad_threshold)
    small = scale_max <= cfg.grow_scale3d * extent
    dst, granted, denied = allocate(cand, active)
    split = granted & ~small
    clone = granted & small

    k1, k2 = jax.random.split(key)
    rot = lie.matrix_from_quaternion(params["quats"])
    sc = jnp.exp(params["log_scales"])

    def sample(k):
        return jnp.einsum("pij,pj->pi", rot, sc * jax.random.normal(k, (p, 3), dt))

    shrink = jnp.asarray(math.log(1.6), dt)
    src = dict(params)
    src["means"] = jnp.where(split[:, None], params["means"] + sample(k1), params["means"])
    src["log_scales"] = jnp.where(split[:, None], params["log_scales"] - shrink,
                                  params["log_scales"])
    child = dict(src)
    child["means"] = jnp.where(split[:, None], params["means"] + sample(k2), params["means"])
    new_params = _scatter_rows(src, dst, child)
    new_active = active.at[dst].set(True, mode="drop")
    written = jnp.zeros((p,), bool).at[dst].set(True, mode="drop")

    opac = jax.nn.sigmoid(new_params["logit_opacities"])
    new_scale_max = jnp.exp(jnp.max(new_params["log_scales"], axis=-1))
    prune = new_active & (opac < cfg.prune_opa)
    prune = prune | (new_active & (step > cfg.reset_every)
                     & (new_scale_max > cfg.prune_scale3d * extent))
    new_active = new_active & ~prune
    changed = split | written | prune
    for name in new_params:
        opt_state = reset_moments(opt_state, name, changed)
    info = dict(n_clone=jnp.sum(clone, dtype=jnp.int32), n_split=jnp.sum(split, dtype=jnp.int32),
                n_prune=jnp.sum(prune, dtype=jnp.int32), denied=denied)
    return new_params, new_active, opt_state, info


def opacity_reset(params, opt_state, cfg):
    """Clamp opacities to at most 2 * prune_opa and zero their Adam moments."""
    dt = params["logit_opacities"].dtype
    v = 2 * cfg.prune_opa
    cap = jnp.asarray(math.log(v / (1 - v)), dt)
    params = dict(params)
    params["logit_opacities"] = jnp.minimum(params["logit_opacities"], cap)
    p = params["logit_opacities"].shape[0]
    opt_state = reset_moments(opt_state, "logit_opacities", jnp.ones((p,), bool))
    return params, opt_state


_N_MAX = 51  # cap on copies per source in the relocation formula (as gsplat)


def _binoms(dtype):
    b = np.zeros((_N_MAX, _N_MAX))
    for n in range(_N_MAX):
        for k in range(n + 1):
            b[n, k] = math.comb(n, k)
    return jnp.asarray(b, dtype)


def relocation(opacities, log_scales, ratios, min_opacity):
    """MCMC relocation rule: a Gaussian shared by ``ratios`` copies keeps its rendered
    footprint (Kheradmand et al. 2024, eq. 9).

    opacities [P]; log_scales [P, 3]; ratios [P] int32 >= 1. Returns (new opacities,
    new log scales).
    """
    dt = opacities.dtype
    r = jnp.clip(ratios, 1, _N_MAX)
    new_o = 1 - jnp.power(1 - opacities, 1 / r.astype(dt))
    new_o = jnp.clip(new_o, min_opacity, 1 - 1e-6)
    binoms = _binoms(dt)
    i = jnp.arange(1, _N_MAX + 1)  # i = 1..N
    k = jnp.arange(_N_MAX)  # k = 0..i-1
    coef = binoms[i[:, None] - 1, k[None, :]] * jnp.where(k % 2 == 0, 1.0, -1.0).astype(dt) \
        / jnp.sqrt(k + 1.0).astype(dt)
    valid = (k[None, :] < i[:, None]).astype(dt)
    powk = jnp.power(new_o[:, None], (k + 1).astype(dt)[None, :])  # [P, K]
    inner = jnp.einsum("ik,pk->pi", coef * valid, powk)  # [P, i]
    denom = jnp.sum(jnp.where(i[None, :] <= r[:, None], inner, 0), axis=1)
    coeff = opacities / denom
    ok = jnp.isfinite(coeff) & (coeff > 0) & (ratios > 1)
    new_ls = jnp.where(ok[:, None], log_scales + jnp.log(jnp.where(ok, coeff, 1))[:, None],
                       log_scales)
    new_o = jnp.where(ratios > 1, new_o, opacities)
    return new_o, new_ls


def mcmc_refine(params, active, opt_state, key, cfg):
    """Relocate dead Gaussians and grow the budget by ``cfg.mcmc_growth`` (up to P).

    Returns (params, active, opt_state, info) with n_relocated, n_added, denied.
    """
    dt = params["means"].dtype
    p = active.shape[0]
    opac = jax.nn.sigmoid(params["logit_opacities"])
    dead = active & (opac <= cfg.prune_opa)
    live = active & ~dead
    n_active = jnp.sum(active, dtype=jnp.int32)
    target = jnp.minimum(p, jnp.floor(cfg.mcmc_growth * n_active.astype(dt)).astype(jnp.int32))
    n_add = jnp.maximum(target - n_active, 0)
    free_rank = jnp.cumsum((~active).astype(jnp.int32)) - 1
    add = ~active & (free_rank < n_add)
    wanted = jnp.maximum(jnp.floor((cfg.mcmc_growth - 1) * n_active.astype(dt)).astype(jnp.int32)
                         - jnp.sum(add, dtype=jnp.int32), 0)
    denied = jnp.where(n_active > 0, wanted, 0)
    targets = (dead | add) & jnp.any(live)
    logits = jnp.where(live, jnp.log(jnp.maximum(opac, 1e-12)), -jnp.inf)
    src = jax.random.categorical(key, logits, shape=(p,)).astype(jnp.int32)
    src = jnp.where(targets, src, p)
    counts = jnp.zeros((p,), jnp.int32).at[src].add(1, mode="drop")
    ratios = counts + 1
    new_o, new_ls = relocation(opac, params["log_scales"], ratios, cfg.prune_opa)
    upd = dict(params)
    upd["logit_opacities"] = jnp.log(new_o) - jnp.log1p(-new_o)
    upd["log_scales"] = new_ls
    # sources (counts > 0) take the shared values; targets copy their source's new row
    sources = counts > 0
    upd = {k: jnp.where(sources.reshape((p,) + (1,) * (v.ndim - 1)), upd[k], params[k])
           for k, v in params.items()}
    gather = jnp.clip(src, 0, p - 1)
    new_params = {k: jnp.where(targets.reshape((p,) + (1,) * (v.ndim - 1)), v[gather], v)
                  for k, v in upd.items()}
    new_active = active | targets
    changed = targets | sources
    for name in new_params:
        opt_state = reset_moments(opt_state, name, changed)
    info = dict(n_relocated=jnp.sum(dead & targets, dtype=jnp.int32),
                n_added=jnp.sum(add & targets, dtype=jnp.int32), denied=denied)
    return new_params, new_active, opt_state, info


def mcmc_noise(params, active, key, lr_means_now, cfg):
    """Noise on the means, shaped by each covariance, strong only for near-transparent
    Gaussians: sigmoid(100 (1 - opacity - 0.995)) * lr * noise_lr (gsplat's rule)."""
    dt = params["means"].dtype
    opac = jax.nn.sigmoid(params["logit_opacities"])
    gate = jax.nn.sigmoid(100 * ((1 - opac) - 0.995))
    cov = quat_scale_to_covar(params["quats"], jnp.exp(params["log_scales"]))
    eps = jax.random.normal(key, params["means"].shape, dt)
    noise = jnp.einsum("pij,pj->pi", cov, eps) * (gate * lr_means_now * cfg.mcmc_noise_lr)[:, None]
    params = dict(params)
    params["means"] = params["means"] + jnp.where(active[:, None], noise, 0).astype(dt)
    return params
