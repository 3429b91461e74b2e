"""Command line: ``splat train | render | eval | demo`` (see docs/training.md)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

DEMO_SCENE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "demo_scene.npz")


def schedule_for(steps: int) -> dict:
    """Densification schedule for a run of ``steps``: gsplat's for >= 30000 steps, else
    compressed so that short runs still refine (and skip opacity resets)."""
    if steps >= 30000:
        return dict(refine_start=500, refine_stop=15000, refine_every=100, reset_every=3000,
                    sh_degree_interval=1000)
    every = int(min(100, max(10, steps // 10)))
    return dict(refine_start=every, refine_stop=max(every + 1, steps // 2),
                refine_every=every, reset_every=3000 if steps > 6000 else steps + 1,
                sh_degree_interval=int(min(1000, max(1, steps // 4))))


def _config(args, steps):
    from .train import TrainConfig
    return TrainConfig(steps=steps, capacity=args.capacity, sh_degree=args.sh_degree,
                       strategy=args.strategy, absgrad=args.absgrad, backend=args.backend,
                       **schedule_for(steps))


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


def _save_views(out_dir, imgs, gts=None, prefix="view"):
    from .datasets import write_png
    paths = []
    for i, im in enumerate(imgs):
        pic = im if gts is None else np.concatenate([im, gts[i].astype(np.float64) / 255], 1)
        p = os.path.join(out_dir, f"{prefix}_{i:03d}.png")
        write_png(p, pic)
        paths.append(p)
    return paths


def cmd_train(args, scene=None, data_label=None) -> dict:
    import jax
    from .datasets import load_scene
    from .ply import write_ply
    from .train import Trainer, restore_state, save_checkpoint

    t0 = time.time()
    if scene is None:
        scene = load_scene(args.data, downscale=args.downscale,
                           n_random_points=args.init_points, seed=args.seed)
        data_label = os.path.abspath(args.data)
    if scene.images is None:
        raise SystemExit(f"{args.data}: the scene has no images to train on")
    print(f"[splat] {len(scene.train_idx)} train / {len(scene.test_idx)} test views of "
          f"{scene.width}x{scene.height}, {len(scene.points)} initial points "
          f"({scene.points_source}), extent {scene.extent:.3f} ({time.time() - t0:.1f} s)")
    cfg = _config(args, args.steps)
    trainer = Trainer(scene, cfg)
    if args.resume:
        state = restore_state(args.resume, trainer)
        print(f"[splat] resumed from {args.resume} at step {int(state.step)}")
    else:
        state = trainer.init_state(seed=args.seed)
    remaining = max(0, args.steps - int(state.step))
    print(f"[splat] training {remaining} steps, strategy {cfg.strategy}"
          f"{' (absgrad)' if cfg.absgrad else ''}, capacity {cfg.capacity} "
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
                  capacity_denied=int(sum(h["denied"] for h in history)))
    if len(scene.test_idx):
        ev = trainer.evaluate(state)
        _save_views(os.path.join(args.out, "renders"), ev["images"],
                    scene.images[scene.test_idx], prefix="test")
        result.update(test_psnr=float(ev["psnr"].mean()), test_ssim=float(np.nanmean(ev["ssim"])))
        print(f"[splat] test PSNR {result['test_psnr']:.2f} dB, SSIM {result['test_ssim']:.4f}"
              f" over {len(scene.test_idx)} views (renders/ beside the ground truth)")
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
    """(params dict numpy, active-only; TrainConfig; meta or None)."""
    from .ply import read_ply
    from .train import TrainConfig, params_from_checkpoint
    if path.endswith(".ply"):
        g = read_ply(path)
        deg = int(round(math.sqrt(g.sh.shape[1]))) - 1
        params = dict(means=g.means, quats=g.quats, log_scales=g.log_scales,
                      logit_opacities=g.logit_opacities, sh0=g.sh[:, :1], shN=g.sh[:, 1:])
        cfg = TrainConfig(capacity=max(1, len(g.means)), sh_degree=deg)
        return params, cfg, None
    params, meta = params_from_checkpoint(path)
    cfg = TrainConfig.from_json(json.dumps(meta["config"]))
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


def cmd_render(args):
    params, cfg, meta = _load_model(args.model)
    if args.data:
        from .datasets import load_scene
        sc = load_scene(args.data, downscale=args.downscale)
        idx = sc.test_idx if len(sc.test_idx) else sc.train_idx
        vms, Ks, w, h = sc.viewmats[idx], sc.Ks[idx], sc.width, sc.height
    elif meta is not None:
        z = np.load(args.model)
        idx = z["test_idx"] if len(z["test_idx"]) else z["train_idx"]
        vms, Ks, w, h = z["viewmats"][idx], z["Ks"][idx], meta["width"], meta["height"]
    else:
        m = params["means"]
        center = np.median(m, 0)
        radius = 2.5 * float(np.percentile(np.linalg.norm(m - center, axis=1), 90))
        w = h = args.size
        vms, Ks = _orbit_cameras(center, max(radius, 1e-3), args.views, w, h)
    imgs = _render_model(params, cfg, vms, Ks, int(w), int(h))
    paths = _save_views(args.out, imgs)
    print(f"[splat] rendered {len(paths)} views of {len(params['means'])} Gaussians to {args.out}")


def cmd_eval(args):
    from .datasets import load_scene
    from .ssim import ssim
    import jax.numpy as jnp
    params, cfg, meta = _load_model(args.model)
    data = args.data or (meta or {}).get("data")
    if not data:
        raise SystemExit("eval needs --data DATA_DIR (the checkpoint does not name one)")
    ds = args.downscale or (meta or {}).get("downscale", 1)
    sc = load_scene(data, downscale=ds)
    if not len(sc.test_idx) or sc.images is None:
        raise SystemExit(f"{data}: no test views with images")
    imgs = _render_model(params, cfg, sc.viewmats[sc.test_idx], sc.Ks[sc.test_idx],
                         sc.width, sc.height)
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
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "eval.json"), "w") as f:
            json.dump(dict(views=rows, mean=mean), f, indent=1)
    return mean


def cmd_demo(args):
    from .datasets import load_npz
    if not os.path.isfile(DEMO_SCENE):
        raise SystemExit(f"bundled demo scene missing: {DEMO_SCENE}")
    scene = load_npz(DEMO_SCENE)
    args.data = DEMO_SCENE
    args.downscale = 1
    res = cmd_train(args, scene=scene, data_label=DEMO_SCENE)
    print(f"[splat] demo done: see {os.path.join(args.out, 'renders', 'test_000.png')}")
    return res


def _train_args(p, steps):
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--strategy", choices=("default", "mcmc", "none"), default="default")
    p.add_argument("--absgrad", action="store_true", help="densify on absgrad")
    p.add_argument("--capacity", type=int, default=None, help="max Gaussians (static)")
    p.add_argument("--sh-degree", type=int, default=None)
    p.add_argument("--backend", choices=("pallas", "reference"), default="pallas")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--resume", default=None, help="checkpoint.npz to continue from")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="splat", description="3D Gaussian Splatting in JAX")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train on a scene folder (transforms.json or COLMAP) or npz")
    t.add_argument("data")
    _train_args(t, 3000)
    t.add_argument("--downscale", type=int, default=1)
    t.add_argument("--init-points", type=int, default=20000,
                   help="random initial points when the scene has no SfM points")
    r = sub.add_parser("render", help="render a checkpoint.npz or a 3DGS .ply to PNGs")
    r.add_argument("model")
    r.add_argument("--out", required=True)
    r.add_argument("--data", default=None, help="take cameras (test views) from this scene")
    r.add_argument("--downscale", type=int, default=1)
    r.add_argument("--views", type=int, default=8, help="orbit views for a .ply without --data")
    r.add_argument("--size", type=int, default=256, help="orbit image size")
    e = sub.add_parser("eval", help="PSNR/SSIM per test view")
    e.add_argument("model")
    e.add_argument("--data", default=None)
    e.add_argument("--downscale", type=int, default=None)
    e.add_argument("--out", default=None, help="write eval.json here")
    d = sub.add_parser("demo", help="train briefly on the bundled scene and write PNGs")
    _train_args(d, 250)
    args = ap.parse_args(argv)
    if args.cmd in ("train", "demo"):
        if args.capacity is None:
            args.capacity = 20000 if args.cmd == "demo" else 200_000
        if args.sh_degree is None:
            args.sh_degree = 1 if args.cmd == "demo" else 3
        if args.steps < 1:
            ap.error("--steps must be >= 1")
    if args.cmd == "train":
        if args.downscale < 1:
            ap.error("--downscale must be >= 1")
        cmd_train(args)
    elif args.cmd == "render":
        cmd_render(args)
    elif args.cmd == "eval":
        cmd_eval(args)
    else:
        cmd_demo(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
