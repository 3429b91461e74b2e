"""Command line: ``splat train | render | eval | demo`` (see docs/training.md).

User errors (a missing or malformed file, a bad flag value, a size that cannot fit in
memory) print one line ``splat: error: ...`` and exit with status 2, as ``jaxgraph``
does; ``--out`` is created and checked writable before any work.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

from .constants import MAX_PIXELS
from .validation import (check_memory, nonnegative_int, positive_int, prepare_out_dir,
                         render_bytes)

DEMO_SCENE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "demo_scene.npz")
DEMO_OUT = "splat_demo"


def _warn(msg: str) -> None:
    """Warnings of the loaders and the PLY reader, as one line on stderr."""
    print(f"[splat] warning: {msg}", file=sys.stderr, flush=True)


def _check_render_size(n_views: int, width: int, height: int, n_gaussians: int,
                       what: str) -> None:
    """Refuse images that cannot be indexed or held in memory, before allocating."""
    if width * height > MAX_PIXELS:
        raise ValueError(f"{what}: {width}x{height} is {width * height} pixels per image, "
                         f"more than the {MAX_PIXELS} a render can index")
    check_memory(render_bytes(n_views, width, height, n_gaussians=n_gaussians),
                 f"{what}: {n_views} views of {width}x{height}", "render fewer or smaller views")


def _config(args, steps):
    from .train import TrainConfig
    from .train.presets import make_strategy, schedule_for
    return TrainConfig(steps=steps, capacity=args.capacity, sh_degree=args.sh_degree,
                       strategy=make_strategy(args.strategy, steps, absgrad=args.absgrad),
                       backend=args.backend,
                       sh_degree_interval=schedule_for(steps)["sh_degree_interval"])


def _fit_to_machine(args, scene) -> None:
    """Initial points and capacity from the scene, --steps and the device when the flags
    are left at their defaults (presets in splat/train/presets.py, docs/training.md);
    says what was chosen and what to change for quality."""
    from .datasets import random_points
    from .train import presets
    plat = presets.platform_name()
    init_points = getattr(args, "init_points", None)  # not a flag of `splat demo`
    n_pts = len(scene.points)
    if scene.points_source == "random":
        n = init_points or presets.default_init_points(scene.width, scene.height, plat)
        if n != n_pts:  # same points as the loader would draw for n (same seed)
            tr = scene.train_idx
            scene.points, scene.point_colors = random_points(
                scene.viewmats[tr], scene.Ks[tr], scene.width, scene.height, n, args.seed)
    else:
        most = init_points or presets.max_init_points(plat)
        if most is not None and n_pts > most:
            keep = np.sort(np.random.default_rng(args.seed).choice(n_pts, most, replace=False))
            scene.points, scene.point_colors = scene.points[keep], scene.point_colors[keep]
            print(f"[splat] starting from {most} of the scene's {n_pts} points ({plat} "
                  "preset; --init-points to change)")
    if args.capacity is not None:
        return
    if args.resume:  # the checkpoint's arrays fix the capacity
        from .train.trainer import load_checkpoint_arrays
        args.capacity = int(load_checkpoint_arrays(args.resume)[0]["config"]["capacity"])
        return
    args.capacity = presets.default_capacity(len(scene.points), scene.width, scene.height,
                                             args.steps, plat, args.strategy)
    why = f"sized from {scene.width}x{scene.height} images and {args.steps} steps"
    if args.backend == "reference":
        fit = presets.reference_max_capacity(scene.width, scene.height)
        if fit < args.capacity:
            why = (f"reduced from {args.capacity} so that the reference backend's "
                   "(intersection, pixel) pairs fit in half the available memory")
            args.capacity = fit
    print(f"[splat] capacity {args.capacity} Gaussians ({why}, {plat} preset; --capacity to "
          "change). For quality: more --steps (gsplat trains 30000), a smaller --downscale, "
          "and a larger --capacity if requests are denied")


def _write_curve(path, history):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[splat] matplotlib not installed: training curve PNG skipped")
        return False
    steps = np.arange(1, len(history) + 1)
    loss = np.array([h["loss"] for h in history])
    ps = np.array([h["psnr"] for h in history])
    n = np.array([h["n_active"] for h in history])
    k = max(1, len(history) // 50)
    smooth = lambda x: np.convolve(x, np.ones(k) / k, mode="valid")  # noqa: E731
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.2))
    ax[0].plot(steps[k - 1:], smooth(loss)); ax[0].set_title("loss"); ax[0].set_xlabel("step")
    ax[1].plot(steps[k - 1:], smooth(ps)); ax[1].set_title("train PSNR (dB)")
    ax[1].set_xlabel("step")
    ax[2].plot(steps, n); ax[2].set_title("active Gaussians"); ax[2].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def _save_views(out_dir, imgs, gts=None, psnrs=None, prefix="view"):
    """Write each render as ``{prefix}_{i:03d}.png``; with ground truths ``gts`` [V, H, W, 3]
    uint8 and ``psnrs`` [V], a labelled, enlarged "ground truth | render" comparison."""
    from .datasets import write_png
    from .figures import comparison_panel
    paths = []
    for i, im in enumerate(imgs):
        pic = im if gts is None else comparison_panel(gts[i], im, float(psnrs[i]))
        p = os.path.join(out_dir, f"{prefix}_{i:03d}.png")
        write_png(p, pic)
        paths.append(p)
    return paths


def _check_rendered(imgs, what: str) -> None:
    """Never write non-finite pixels; say so when every view came out empty (black)."""
    imgs = np.asarray(imgs)
    if not np.isfinite(imgs).all():
        raise RuntimeError(f"{what}: the render has {int((~np.isfinite(imgs)).sum())} "
                           "non-finite pixel values")
    if imgs.size and not (imgs > 0.5 / 255).any():
        _warn(f"{what}: every rendered view is black: no Gaussian is visible from these "
              "cameras")


def cmd_train(args, scene=None, data_label=None) -> dict:
    import jax
    from .datasets import load_scene
    from .ply import write_ply
    from .train import Trainer, restore_state, save_checkpoint
    from .train.presets import suggest_capacity

    prepare_out_dir(args.out)
    if args.resume:
        from .validation import open_npz
        open_npz(args.resume, "splat checkpoint (--resume)").close()
    t0 = time.time()
    if scene is None:
        # one random point if --init-points is left to the preset, which needs the image
        # size: _fit_to_machine draws them
        scene = load_scene(args.data, downscale=args.downscale,
                           n_random_points=getattr(args, "init_points", None) or 1, seed=args.seed, warn=_warn)
        data_label = os.path.abspath(args.data)
    if scene.images is None:
        raise ValueError(f"{args.data}: the scene has no images to train on")
    _fit_to_machine(args, scene)
    print(f"[splat] {len(scene.train_idx)} train / {len(scene.test_idx)} test views of "
          f"{scene.width}x{scene.height}, {len(scene.points)} initial points "
          f"({scene.points_source}), extent {scene.extent:.3f} ({time.time() - t0:.1f} s)")
    cfg = _config(args, args.steps)
    check_memory(render_bytes(1, scene.width, scene.height, n_gaussians=cfg.capacity,
                              backend=cfg.backend,
                              isect_capacity=cfg.capacity * cfg.isect_per_gaussian,
                              tile_size=cfg.tile_size),
                 f"training with --backend {cfg.backend} at --capacity {cfg.capacity}",
                 "lower --capacity" + (" or use --backend pallas"
                                       if cfg.backend == "reference" else ""))
    trainer = Trainer(scene, cfg)
    if args.resume:
        try:
            state = restore_state(args.resume, trainer)
        except KeyError as e:
            raise ValueError(f"{args.resume}: not a complete splat checkpoint (no {e})") \
                from None
        print(f"[splat] resumed from {args.resume} at step {int(state.step)}")
    else:
        state = trainer.init_state(seed=args.seed)
    remaining = max(0, args.steps - int(state.step))
    print(f"[splat] training {remaining} steps, strategy {cfg.strategy.name}"
          f"{' (absgrad)' if cfg.strategy.uses_absgrad else ''}, capacity {cfg.capacity} "
          "(first step compiles)")
    t1 = time.time()
    state, history = trainer.fit(state, remaining, log_every=args.log_every)
    jax.block_until_ready(state)
    train_s = time.time() - t1
    os.makedirs(args.out, exist_ok=True)
    ckpt = os.path.join(args.out, "checkpoint.npz")
    save_checkpoint(ckpt, trainer, state, extra=dict(data=data_label, downscale=args.downscale))
    p = {k: np.asarray(v) for k, v in state.params.items()}
    act = np.asarray(state.active)
    sh = np.concatenate([p["sh0"], p["shN"]], 1)[act]
    write_ply(os.path.join(args.out, "point_cloud.ply"), p["means"][act], p["quats"][act],
              p["log_scales"][act], p["logit_opacities"][act], sh)
    result = dict(steps=int(state.step), train_seconds=train_s, n_active=int(act.sum()),
                  capacity=cfg.capacity,
                  capacity_denied=int(sum(h["denied"] for h in history)),
                  capacity_suggested=suggest_capacity(history))
    if len(scene.test_idx):
        ev = trainer.evaluate(state)
        _save_views(os.path.join(args.out, "renders"), ev["images"],
                    scene.images[scene.test_idx], ev["psnr"], prefix="test")
        result.update(test_psnr=float(ev["psnr"].mean()), test_ssim=float(np.nanmean(ev["ssim"])))
        print(f"[splat] test PSNR {result['test_psnr']:.2f} dB, SSIM {result['test_ssim']:.4f}"
              f" over {len(scene.test_idx)} views (renders/: ground truth | render)")
    if history:
        _write_curve(os.path.join(args.out, "curve.png"), history)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(dict(result, history=history), f)
    print(f"[splat] wrote {ckpt}, point_cloud.ply, metrics.json to {args.out}")
    return result


def _orbit_cameras(center, radius, n, width, height, fov_deg=60.0):
    vms, Ks = [], []
    f = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    for i in range(n):
        a = 2 * math.pi * i / n
        eye = center + radius * np.array([math.cos(a), 0.3, math.sin(a)])
        fwd = (center - eye) / np.linalg.norm(center - eye)
        right = np.cross(fwd, [0, 1, 0])
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        r = np.stack([right, down, fwd])
        vm = np.eye(4)
        vm[:3, :3] = r
        vm[:3, 3] = -r @ eye
        vms.append(vm)
        Ks.append(np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]]))
    return np.stack(vms), np.stack(Ks)


def _load_model(path):
    """(params dict numpy, active-only and valid; TrainConfig; meta or None).

    ``path`` is a 3DGS .ply or a checkpoint.npz of ``splat train``. Gaussians with
    non-finite values (or overflowing scales) are dropped with a warning."""
    from .ply import read_ply
    from .train import TrainConfig, params_from_checkpoint
    from .validation import invalid_gaussians, open_npz
    if path.endswith(".ply"):
        g = read_ply(path, warn=_warn)
        deg = int(round(math.sqrt(g.sh.shape[1]))) - 1
        if deg > 3:
            raise ValueError(f"{path}: SH degree {deg}; the renderer supports degrees 0..3")
        params = dict(means=g.means, quats=g.quats, log_scales=g.log_scales,
                      logit_opacities=g.logit_opacities, sh0=g.sh[:, :1], shN=g.sh[:, 1:])
        if not len(g.means):
            raise ValueError(f"{path}: the PLY holds no Gaussians")
        cfg = TrainConfig(capacity=len(g.means), sh_degree=deg)
        return params, cfg, None
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
        _warn(f"{path}: dropped {int(bad.sum())} of {len(bad)} Gaussians with non-finite "
              "values")
        params = {k: v[~bad] for k, v in params.items()}
    return params, cfg, meta


def _render_model(params, cfg, viewmats, Ks, width, height):
    import functools

    import jax
    import jax.numpy as jnp
    from .train.trainer import _render_views, render_checked
    n = params["means"].shape[0]
    p = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    fn = jax.jit(functools.partial(_render_views, cfg=cfg, width=width, height=height))
    return render_checked(fn, p, jnp.ones((n,), bool), viewmats, Ks, cfg, width, height,
                          jnp.float32)


def _checkpoint_cameras(path, meta):
    """(viewmats, Ks, width, height) of a checkpoint's test views (else its train views)."""
    from .validation import check_cameras, npz_array, open_npz
    with open_npz(path, "splat checkpoint") as z:
        a = {k: npz_array(z, k, path, "splat checkpoint")
             for k in ("viewmats", "Ks", "train_idx", "test_idx")}
    idx = a["test_idx"] if len(a["test_idx"]) else a["train_idx"]
    w, h = int(meta["width"]), int(meta["height"])
    check_cameras(a["viewmats"][idx], a["Ks"][idx], w, h, path)
    return a["viewmats"][idx], a["Ks"][idx], w, h


def cmd_render(args):
    prepare_out_dir(args.out)
    params, cfg, meta = _load_model(args.model)
    if args.data:
        from .datasets import load_scene
        sc = load_scene(args.data, downscale=args.downscale, warn=_warn)
        idx = sc.test_idx if len(sc.test_idx) else sc.train_idx
        if sc.images is None:
            w, h = _npz_size(args.data, args.downscale)
        else:
            w, h = sc.width, sc.height
        vms, Ks = sc.viewmats[idx], sc.Ks[idx]
    elif meta is not None:
        vms, Ks, w, h = _checkpoint_cameras(args.model, meta)
    else:
        m = params["means"]
        center = np.median(m, 0)
        radius = 2.5 * float(np.percentile(np.linalg.norm(m - center, axis=1), 90))
        w = h = args.size
        _check_render_size(args.views, w, h, len(params["means"]), f"render {args.model}")
        vms, Ks = _orbit_cameras(center, max(radius, 1e-3), args.views, w, h)
    _check_render_size(len(vms), int(w), int(h), len(params["means"]), f"render {args.model}")
    imgs = _render_model(params, cfg, vms, Ks, int(w), int(h))
    _check_rendered(imgs, f"render {args.model}")
    paths = _save_views(args.out, imgs)
    print(f"[splat] rendered {len(paths)} views of {len(params['means'])} Gaussians to {args.out}")


def _npz_size(path, downscale):
    """(width, height) after ``downscale`` of an npz scene without images."""
    from .validation import npz_array, open_npz
    with open_npz(path, "gsplat npz scene") as z:
        w, h = (int(npz_array(z, k, path).item()) for k in ("width", "height"))
    return w // downscale, h // downscale


def cmd_eval(args):
    from .datasets import load_scene
    from .ssim import ssim
    import jax.numpy as jnp
    if args.out:
        prepare_out_dir(args.out)
    params, cfg, meta = _load_model(args.model)
    data = args.data or (meta or {}).get("data")
    if not data:
        raise ValueError(f"{args.model}: eval needs --data DATA (the model does not name "
                         "its scene)")
    ds = args.downscale or (meta or {}).get("downscale", 1)
    sc = load_scene(data, downscale=ds, warn=_warn)
    if not len(sc.test_idx) or sc.images is None:
        raise ValueError(f"{data}: no test views with images")
    _check_render_size(len(sc.test_idx), sc.width, sc.height, len(params["means"]),
                       f"eval {args.model}")
    imgs = _render_model(params, cfg, sc.viewmats[sc.test_idx], sc.Ks[sc.test_idx],
                         sc.width, sc.height)
    _check_rendered(imgs, f"eval {args.model}")
    rows = []
    for k, i in enumerate(sc.test_idx):
        gt = sc.images[i].astype(np.float64) / 255
        mse = float(((imgs[k] - gt) ** 2).mean())
        s = float(ssim(jnp.asarray(imgs[k], jnp.float32), jnp.asarray(gt, jnp.float32))) \
            if min(sc.width, sc.height) >= 11 else float("nan")
        rows.append(dict(view=sc.names[i], psnr=-10 * math.log10(max(mse, 1e-10)), ssim=s))
        print(f"{sc.names[i]:>24s}  PSNR {rows[-1]['psnr']:6.2f} dB  SSIM {s:.4f}")
    mean = dict(psnr=float(np.mean([r["psnr"] for r in rows])),
                ssim=float(np.mean([r["ssim"] for r in rows])))
    print(f"{'mean':>24s}  PSNR {mean['psnr']:6.2f} dB  SSIM {mean['ssim']:.4f}")
    if args.out:
        with open(os.path.join(args.out, "eval.json"), "w") as f:
            json.dump(dict(views=rows, mean=mean), f, indent=1)
    return mean


def cmd_demo(args):
    from .datasets import load_npz
    if not os.path.isfile(DEMO_SCENE):
        raise FileNotFoundError(f"{DEMO_SCENE}: bundled demo scene missing (reinstall splat)")
    prepare_out_dir(args.out)
    scene = load_npz(DEMO_SCENE, warn=_warn)
    args.data = DEMO_SCENE
    args.downscale = 1
    res = cmd_train(args, scene=scene, data_label=DEMO_SCENE)
    print(f"[splat] demo done: see {os.path.join(args.out, 'renders', 'test_000.png')}")
    return res


class _HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: ...)" to every flag's help unless the help already states it
    (flags whose default is computed say so in words); on/off flags default to off."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or not action.option_strings or action.default is argparse.SUPPRESS:
            return text
        if isinstance(action, argparse._StoreTrueAction):
            return text + " (default: off)"
        return text + " (default: %(default)s)"


def _train_args(p, steps, out_default=None):
    if out_default is None:
        p.add_argument("--out", required=True, help="output folder (created; required)")
    else:
        p.add_argument("--out", default=out_default, help="output folder (created)")
    p.add_argument("--steps", type=positive_int, default=steps, help="optimiser steps")
    p.add_argument("--strategy", choices=("default", "mcmc", "none"), default="default",
                   help="densification: 3DGS clone/split/prune, MCMC relocation, or none")
    p.add_argument("--absgrad", action="store_true",
                   help="densify on gsplat's absgrad instead of the 2D-mean gradient")
    p.add_argument("--capacity", type=positive_int, default=None,
                   help="maximum number of Gaussians (a static array size; default: sized "
                   "from the image size, the initial points and --steps for this device, "
                   "see docs/training.md)")
    p.add_argument("--sh-degree", type=int, choices=range(4), default=None,
                   help="spherical-harmonics degree of the colours (default: 1 for demo, "
                   "3 for train)")
    p.add_argument("--backend", choices=("pallas", "reference"), default="pallas",
                   help="rasterizer: Pallas kernels or the plain-JAX reference")
    p.add_argument("--seed", type=int, default=0, help="random seed (initial points, views)")
    p.add_argument("--log-every", type=nonnegative_int, default=25,
                   help="print a progress line every N steps (0: never)")
    p.add_argument("--resume", default=None,
                   help="checkpoint.npz to continue training from (default: start afresh)")


def build_parser() -> argparse.ArgumentParser:
    """The ``splat`` argument parser (every flag has help text and a default)."""
    fmt = dict(formatter_class=_HelpFormatter)
    ap = argparse.ArgumentParser(prog="splat", description="3D Gaussian Splatting in JAX", **fmt)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train on a scene folder (transforms.json or COLMAP) or npz",
                       **fmt)
    t.add_argument("data", help="scene: folder with transforms.json or COLMAP sparse/0, "
                   "or a gsplat .npz")
    _train_args(t, 3000)
    t.add_argument("--downscale", type=positive_int, default=1,
                   help="divide the image size by this integer")
    t.add_argument("--init-points", type=positive_int, default=None,
                   help="initial random points when the scene has no point cloud, else the "
                   "most point-cloud points used (default: for this device: CPU about one "
                   "per 8 pixels of an image, 1000 to 10000, all of a point cloud up to "
                   "10000; GPU 100000 and the whole point cloud)")
    r = sub.add_parser("render", help="render a checkpoint.npz or a 3DGS .ply to PNGs", **fmt)
    r.add_argument("model", help="checkpoint.npz of 'splat train' or a 3DGS .ply")
    r.add_argument("--out", required=True, help="output folder for the PNGs (created; required)")
    r.add_argument("--data", default=None,
                   help="take the cameras (test views) from this scene (default: the "
                   "checkpoint's test cameras, or an orbit for a .ply)")
    r.add_argument("--downscale", type=positive_int, default=1,
                   help="with --data: divide the image size by this integer")
    r.add_argument("--views", type=positive_int, default=8,
                   help="orbit views for a .ply without --data")
    r.add_argument("--size", type=positive_int, default=256,
                   help="orbit image width and height in pixels")
    e = sub.add_parser("eval", help="PSNR/SSIM per test view", **fmt)
    e.add_argument("model", help="checkpoint.npz of 'splat train' or a 3DGS .ply")
    e.add_argument("--data", default=None,
                   help="scene with the test views (default: the one named in the checkpoint)")
    e.add_argument("--downscale", type=positive_int, default=None,
                   help="divide the image size by this integer (default: the checkpoint's, "
                   "else 1)")
    e.add_argument("--out", default=None, help="write eval.json into this folder "
                   "(default: print only)")
    d = sub.add_parser("demo", help="train briefly on the bundled scene and write labelled "
                       "test renders", **fmt)
    _train_args(d, 250, out_default=DEMO_OUT)
    return ap


def main(argv=None) -> int:
    """Run the ``splat`` command line; returns the exit status (2 for user errors)."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.cmd in ("train", "demo"):
        if args.sh_degree is None:
            args.sh_degree = 1 if args.cmd == "demo" else 3
    run = {"train": cmd_train, "render": cmd_render, "eval": cmd_eval, "demo": cmd_demo}
    try:
        run[args.cmd](args)
    except (ValueError, OSError) as exc:
        print(f"splat: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
