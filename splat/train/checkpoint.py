"""Models on disk: training checkpoints (resumable), 3DGS PLY export, and loading either
back as a model to render (``splat render`` / ``splat eval``)."""

from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from ..checks import check_cameras, invalid_gaussians, warn_default
from ..io.files import npz_array, open_npz
from ..io.ply import read_ply, write_ply
from .state import PARAM_NAMES, TrainConfig, TrainState, init_params

def refined_viewmats(trainer, state: TrainState) -> np.ndarray:
    """All the scene's world-to-camera poses [M, 4, 4] (float64): training views corrected by
    the state's pose optimisation (docs/poses.md), test views as given."""
    vms = np.array(trainer.scene.viewmats, np.float64)
    vms[np.asarray(trainer.scene.train_idx)] = trainer.train_viewmats(state)
    return vms


def save_checkpoint(path, trainer, state: TrainState, extra: dict | None = None):
    """Write the whole training state (resumable) plus config, extent and cameras (npz).

    With pose optimisation the file also holds ``refined_viewmats`` [M, 4, 4]
    (:func:`refined_viewmats`) beside the given ``viewmats``."""
    leaves = jax.tree_util.tree_leaves(state)
    arrays = {f"leaf_{i:04d}": np.asarray(x) for i, x in enumerate(leaves)}
    meta = dict(config=json.loads(trainer.cfg.to_json()), extent=trainer.extent,
                width=trainer.width, height=trainer.height, n_leaves=len(leaves),
                dtype=np.dtype(trainer.dtype).name, **(extra or {}))
    sc = trainer.scene
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if state.pose is not None:
        arrays["refined_viewmats"] = refined_viewmats(trainer, state)
    np.savez(path, meta=np.asarray(json.dumps(meta)), viewmats=np.asarray(sc.viewmats),
             Ks=np.asarray(sc.Ks), train_idx=np.asarray(sc.train_idx),
             test_idx=np.asarray(sc.test_idx), **arrays)


def load_checkpoint_arrays(path):
    """(meta dict, npz mapping) of a checkpoint written by :func:`save_checkpoint`."""
    z = np.load(path, allow_pickle=False)
    if "meta" not in z.files:
        raise ValueError(f"{path}: not a splat checkpoint (no 'meta')")
    return json.loads(str(z["meta"])), z


def restore_state(path, trainer) -> TrainState:
    """Load a checkpoint into a state shaped like ``trainer``'s (resume training)."""
    meta, z = load_checkpoint_arrays(path)
    template = trainer.state_from_params(*init_params(
        np.zeros((1, 3)), np.zeros((1, 3)), trainer.cfg, dtype=trainer.dtype))
    leaves, treedef = jax.tree_util.tree_flatten(template)
    if meta["n_leaves"] != len(leaves):
        raise ValueError(f"{path}: checkpoint has {meta['n_leaves']} arrays, this "
                         f"configuration expects {len(leaves)}")
    new = []
    for i, t in enumerate(leaves):
        a = z[f"leaf_{i:04d}"]
        if a.shape != t.shape:
            raise ValueError(f"{path}: array {i} has shape {a.shape}, expected {t.shape} "
                             "(different capacity or SH degree?)")
        new.append(jnp.asarray(a, t.dtype))
    return jax.tree_util.tree_unflatten(treedef, new)


def params_from_checkpoint(path):
    """(params dict of numpy arrays restricted to active Gaussians, meta) from a checkpoint."""
    meta, z = load_checkpoint_arrays(path)
    # TrainState leaf order: params (dict, keys sorted), active, ...
    names = sorted(PARAM_NAMES)
    params = {k: z[f"leaf_{i:04d}"] for i, k in enumerate(names)}
    active = z[f"leaf_{len(names):04d}"].astype(bool)
    return {k: v[active] for k, v in params.items()}, meta


def write_model_ply(path, params, active) -> None:
    """Write the active Gaussians of ``params`` (as ``TrainState.params``; active [P]
    bool) to a 3DGS PLY file (:func:`splat.io.write_ply`)."""
    p = {k: np.asarray(v) for k, v in params.items()}
    act = np.asarray(active)
    sh = np.concatenate([p["sh0"], p["shN"]], 1)[act]
    write_ply(path, p["means"][act], p["quats"][act], p["log_scales"][act],
              p["logit_opacities"][act], sh)


def load_model(path, warn=warn_default):
    """A model to render from a 3DGS .ply or a checkpoint.npz of ``splat train``.

    Returns (params, cfg, meta): params a dict of numpy arrays as ``TrainState.params``
    (means [N, 3], quats [N, 4], log_scales [N, 3], logit_opacities [N], sh0 [N, 1, 3],
    shN [N, K - 1, 3]) holding only valid Gaussians (active ones, for a checkpoint); cfg a
    :class:`TrainConfig` to render with (capacity N and the PLY's SH degree for a .ply);
    meta the checkpoint's metadata dict, or None for a .ply. Gaussians with non-finite
    values (or overflowing scales) are dropped with one ``warn`` message; a file with no
    valid Gaussian is a ValueError.
    """
    path = os.fspath(path)
    if path.endswith(".ply"):
        g = read_ply(path, warn=warn)
        deg = int(round(math.sqrt(g.sh.shape[1]))) - 1
        if deg > 3:
            raise ValueError(f"{path}: SH degree {deg}; the renderer supports degrees 0..3")
        params = dict(means=g.means, quats=g.quats, log_scales=g.log_scales,
                      logit_opacities=g.logit_opacities, sh0=g.sh[:, :1], shN=g.sh[:, 1:])
        if not len(g.means):
            raise ValueError(f"{path}: the PLY holds no Gaussians")
        return params, TrainConfig(capacity=len(g.means), sh_degree=deg), None
    open_npz(path, "splat checkpoint (.npz) or .ply").close()
    try:
        params, meta = params_from_checkpoint(path)
        cfg = TrainConfig.from_json(json.dumps(meta["config"]))
        for k in ("width", "height"):
            int(meta[k])
    except (KeyError, TypeError, ValueError) as e:
        msg = str(e)
        raise ValueError(msg if msg.startswith(path) else
                         f"{path}: not a complete splat checkpoint ({type(e).__name__}: {msg})") \
            from None
    bad = invalid_gaussians(params["means"], params["quats"], params["log_scales"],
                            params["logit_opacities"],
                            np.concatenate([params["sh0"], params["shN"]], 1))
    if bad.all():
        raise ValueError(f"{path}: the checkpoint has no valid active Gaussian")
    if bad.any():
        warn(f"{path}: dropped {int(bad.sum())} of {len(bad)} Gaussians with non-finite "
             "values")
        params = {k: v[~bad] for k, v in params.items()}
    return params, cfg, meta


def checkpoint_cameras(path, meta):
    """The cameras a checkpoint was trained with: its test views, else its train views.

    meta: the checkpoint's metadata (from :func:`load_model`). Returns (viewmats [V, 4, 4]
    world-to-camera, Ks [V, 3, 3] pixels, width, height), checked as a scene's cameras.
    """
    with open_npz(path, "splat checkpoint") as z:
        a = {k: npz_array(z, k, path, "splat checkpoint")
             for k in ("viewmats", "Ks", "train_idx", "test_idx")}
    idx = a["test_idx"] if len(a["test_idx"]) else a["train_idx"]
    w, h = int(meta["width"]), int(meta["height"])
    check_cameras(a["viewmats"][idx], a["Ks"][idx], w, h, path)
    return a["viewmats"][idx], a["Ks"][idx], w, h
