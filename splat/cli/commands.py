"""The ``splat`` subcommands: each reads its flags, calls the library and prints.

User errors (a missing or malformed file, a bad flag value, a size that cannot fit in
memory) are raised as ``ValueError`` / ``OSError`` and printed by :func:`splat.cli.main`.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def warn(msg: str) -> None:
    """Warnings of the loaders and the PLY reader, as one line on stderr."""
    print(f"[splat] warning: {msg}", file=sys.stderr, flush=True)


def _check_render_size(n_views: int, width: int, height: int, n_gaussians: int,
                       what: str) -> None:
    from ..checks import check_render_size
    check_render_size(n_views, width, height, n_gaussians=n_gaussians,
                      what=f"{what}: {n_views} views of {width}x{height}",
                      hint="render fewer or smaller views")


def cmd_train(args, scene=None, data_label=None) -> dict:
    """``splat train DATA``: fit, then write checkpoint.npz, point_cloud.ply, renders/
    (test views), curve.png and metrics.json into --out; returns the metrics."""
    import jax

    from ..datasets import load_scene
    from ..figures import save_views, training_curve_png
    from ..io.files import open_npz, prepare_out_dir
    from ..train import Trainer, restore_state, save_checkpoint, write_model_ply
    from ..train import presets

    prepare_out_dir(args.out)
    if args.resume:
        open_npz(args.resume, "splat checkpoint (--resume)").close()
    if getattr(args, "init_points", None):
        presets.check_init_points(args.init_points)  # before the loader draws any
    t0 = time.time()
    if scene is None:
        # one random point if --init-points is left to the preset, which needs the image
        # size: fit_to_machine draws them
        scene = load_scene(args.data, downscale=args.downscale,
                           n_random_points=getattr(args, "init_points", None) or 1,
                           seed=args.seed, warn=warn)
        data_label = os.path.abspath(args.data)
    if scene.images is None:
        raise ValueError(f"{args.data}: the scene has no images to train on")
    init_points = getattr(args, "init_points", None)  # not a flag of `splat demo`
    args.capacity = presets.fit_to_machine(
        scene, steps=args.steps, strategy=args.strategy, backend=args.backend,
        capacity=args.capacity, init_points=init_points, resume=args.resume, seed=args.seed)
    print(f"[splat] {len(scene.train_idx)} train / {len(scene.test_idx)} test views of "
          f"{scene.width}x{scene.height}, {len(scene.points)} initial points "
          f"({scene.points_source}), extent {scene.extent:.3f} ({time.time() - t0:.1f} s)")
    cfg = presets.train_config(args.steps, args.capacity, args.sh_degree, args.strategy,
                               absgrad=args.absgrad, backend=args.backend)
    if getattr(args, "pose_opt", False):
        import dataclasses
        cfg = dataclasses.replace(cfg, pose_opt=True, lr_pose=args.lr_pose,
                                  pose_weight_decay=args.pose_weight_decay,
                                  pose_opt_start=args.pose_opt_start,
                                  pose_optimizer=args.pose_optimizer,
                                  pose_gn_damping=args.pose_gn_damping,
                                  pose_gn_max_step_deg=args.pose_gn_max_step_deg)
    presets.check_training_memory(cfg, scene.width, scene.height)
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
    ckpt = os.path.join(args.out, "checkpoint.npz")
    save_checkpoint(ckpt, trainer, state, extra=dict(data=data_label, downscale=args.downscale))
    write_model_ply(os.path.join(args.out, "point_cloud.ply"), state.params, state.active)
    result = dict(steps=int(state.step), train_seconds=train_s,
                  n_active=int(np.asarray(state.active).sum()), capacity=cfg.capacity,
                  capacity_denied=int(sum(h["denied"] for h in history)),
                  capacity_suggested=presets.suggest_capacity(history))
    if state.pose is not None:
        from ..train.poses import pose_errors
        given = np.asarray(scene.viewmats)[scene.train_idx]
        refined = trainer.train_viewmats(state)
        rot, trans = pose_errors(refined, given)
        result.update(refined_poses=dict(
            view=[scene.names[i] for i in scene.train_idx],
            viewmat=refined.tolist(), change_deg=rot.tolist(), change_rel=trans.tolist()))
        print(f"[splat] pose-opt moved the training cameras by {rot.mean():.3f} deg and "
              f"{100 * trans.mean():.2f} % of the mean camera distance on average "
              "(refined_viewmats in the checkpoint, refined_poses in metrics.json)")
    if len(scene.test_idx):
        ev = trainer.evaluate(state)
        save_views(os.path.join(args.out, "renders"), ev["images"],
                   scene.images[scene.test_idx], ev["psnr"], prefix="test")
        result.update(test_psnr=float(ev["psnr"].mean()), test_ssim=float(np.nanmean(ev["ssim"])))
        print(f"[splat] test PSNR {result['test_psnr']:.2f} dB, SSIM {result['test_ssim']:.4f}"
              f" over {len(scene.test_idx)} views (renders/: ground truth | render)")
    if history and not training_curve_png(os.path.join(args.out, "curve.png"), history):
        print("[splat] matplotlib not installed: training curve PNG skipped")
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(dict(result, history=history), f)
    print(f"[splat] wrote {ckpt}, point_cloud.ply, metrics.json to {args.out}")
    return result


#: ``splat render --size`` of an orbit around a .ply when not given.
ORBIT_SIZE = 256


def resize_cameras(Ks, width: int, height: int, size: int):
    """``(Ks, width, height)`` of cameras rescaled so that the longer image side is ``size``
    pixels (aspect kept; focal lengths and principal points scaled by the same factor)."""
    s = size / max(width, height)
    w, h = max(1, round(width * s)), max(1, round(height * s))
    Ks = np.array(Ks, np.float64)
    Ks[:, 0, :] *= w / width
    Ks[:, 1, :] *= h / height
    return Ks, w, h


def cmd_render(args) -> None:
    """``splat render MODEL``: PNGs of the model seen from --data's test cameras, the
    checkpoint's own, or an orbit (a .ply)."""
    from ..checks import check_rendered
    from ..datasets import load_scene, npz_image_size, orbit_cameras
    from ..figures import save_views
    from ..io.files import prepare_out_dir
    from ..train import checkpoint_cameras, load_model, render_model

    prepare_out_dir(args.out)
    params, cfg, meta = load_model(args.model, warn=warn)
    n = len(params["means"])
    what = f"render {args.model}"
    if args.data:
        sc = load_scene(args.data, downscale=args.downscale, warn=warn)
        idx = sc.test_idx if len(sc.test_idx) else sc.train_idx
        w, h = (npz_image_size(args.data, args.downscale) if sc.images is None
                else (sc.width, sc.height))
        vms, Ks = sc.viewmats[idx], sc.Ks[idx]
    elif meta is not None:
        vms, Ks, w, h = checkpoint_cameras(args.model, meta)
    else:
        w = h = args.size or ORBIT_SIZE
        _check_render_size(args.views, w, h, n, what)
        vms, Ks = orbit_cameras(params["means"], args.views, w, h)
    if args.size and (args.data or meta is not None):
        Ks, w, h = resize_cameras(Ks, int(w), int(h), args.size)
    _check_render_size(len(vms), int(w), int(h), n, what)
    imgs = render_model(params, cfg, vms, Ks, int(w), int(h))
    check_rendered(imgs, what, warn=warn)
    paths = save_views(args.out, imgs)
    print(f"[splat] rendered {len(paths)} views of {n} Gaussians to {args.out}")


def resolve_data(data: str) -> str:
    """A checkpoint's scene: ``bundled:NAME`` is the bundled file wherever the package now
    is (:func:`splat.data.resolve`); a path is kept."""
    from ..data import resolve

    return resolve(data)


def cmd_eval(args) -> dict:
    """``splat eval MODEL``: PSNR and SSIM of each test view, printed (and eval.json)."""
    from ..checks import check_rendered
    from ..datasets import load_scene
    from ..io.files import prepare_out_dir
    from ..metrics import image_metrics
    from ..train import load_model, render_model

    if args.out:
        prepare_out_dir(args.out)
    params, cfg, meta = load_model(args.model, warn=warn)
    data = args.data or (meta or {}).get("data")
    if not data:
        raise ValueError(f"{args.model}: eval needs --data DATA (the model does not name "
                         "its scene)")
    data = resolve_data(data)
    ds = args.downscale or (meta or {}).get("downscale", 1)
    sc = load_scene(data, downscale=ds, warn=warn)
    if not len(sc.test_idx) or sc.images is None:
        raise ValueError(f"{data}: no test views with images")
    _check_render_size(len(sc.test_idx), sc.width, sc.height, len(params["means"]),
                       f"eval {args.model}")
    imgs = render_model(params, cfg, sc.viewmats[sc.test_idx], sc.Ks[sc.test_idx],
                        sc.width, sc.height)
    check_rendered(imgs, f"eval {args.model}", warn=warn)
    scores = image_metrics(imgs, sc.images[sc.test_idx])
    rows = []
    for k, i in enumerate(sc.test_idx):
        rows.append(dict(view=sc.names[i], psnr=float(scores["psnr"][k]),
                         ssim=float(scores["ssim"][k])))
        print(f"{sc.names[i]:>24s}  PSNR {rows[-1]['psnr']:6.2f} dB  SSIM {rows[-1]['ssim']:.4f}")
    mean = dict(psnr=float(np.mean(scores["psnr"])), ssim=float(np.mean(scores["ssim"])))
    print(f"{'mean':>24s}  PSNR {mean['psnr']:6.2f} dB  SSIM {mean['ssim']:.4f}")
    if args.out:
        with open(os.path.join(args.out, "eval.json"), "w") as f:
            json.dump(dict(views=rows, mean=mean), f, indent=1)
    return mean


def cmd_demo(args) -> dict:
    """``splat demo``: ``splat train`` on the bundled scene (its flags and outputs)."""
    from ..data import BUNDLED_PREFIX
    from ..datasets import DEMO_SCENE, load_npz
    from ..io.files import prepare_out_dir

    if not os.path.isfile(DEMO_SCENE):
        raise FileNotFoundError(f"{DEMO_SCENE}: bundled demo scene missing (reinstall splat)")
    prepare_out_dir(args.out)
    scene = load_npz(DEMO_SCENE, warn=warn)
    args.data = DEMO_SCENE
    args.downscale = 1
    # named as bundled, not by its path: the checkpoint keeps working after a reinstall
    res = cmd_train(args, scene=scene, data_label=BUNDLED_PREFIX + os.path.basename(DEMO_SCENE))
    print(f"[splat] demo done: see {os.path.join(args.out, 'renders', 'test_000.png')}")
    return res


def cmd_localize(args) -> dict:
    """``splat localize MODEL IMAGE``: the world-to-camera pose of the image by
    Levenberg-Marquardt through the rasterizer (:func:`splat.localize`), printed (and
    pose.json / pose.npy with --out)."""
    from ..io.files import open_npz, prepare_out_dir
    from ..io.images import read_image
    from ..tracking import localize
    from ..train import load_model

    if args.out:
        prepare_out_dir(args.out)
    params, cfg, meta = load_model(args.model, warn=warn)
    if meta is None:
        raise ValueError(f"{args.model}: localize needs a checkpoint.npz (its cameras give K)")
    with open_npz(args.model, "splat checkpoint") as z:
        vms, Ks = np.asarray(z["viewmats"], np.float64), np.asarray(z["Ks"], np.float64)
    if args.view >= len(vms):
        raise ValueError(f"--view {args.view}: the checkpoint has {len(vms)} cameras")
    image = read_image(args.image)
    w, h = int(meta["width"]), int(meta["height"])
    if image.shape[:2] != (h, w):
        raise ValueError(f"{args.image}: image is {image.shape[1]}x{image.shape[0]}, the "
                         f"checkpoint's cameras are {w}x{h}")
    if args.init:
        init = (np.load(args.init) if args.init.endswith(".npy") else np.loadtxt(args.init))
        init = np.asarray(init, np.float64).reshape(4, 4)
    else:
        init = vms[args.view]
    t0 = time.time()
    vm, info = localize((params, cfg), image[..., :3], Ks[args.view], init.astype(np.float32),
                        levels=args.levels, robust=args.robust,
                        max_iterations=args.max_iterations)
    res = dict(viewmat=vm.tolist(), converged=bool(info.converged), status=int(info.status),
               iterations=int(info.iterations), cost=float(info.cost),
               initial_cost=float(info.initial_cost), seconds=time.time() - t0)
    print(f"[splat] {'converged' if res['converged'] else 'NOT converged'} (status "
          f"{res['status']}) after {res['iterations']} iterations, cost "
          f"{res['initial_cost']:.4g} -> {res['cost']:.4g}, {res['seconds']:.1f} s")
    print(np.array2string(vm, precision=6, suppress_small=True))
    if args.out:
        with open(os.path.join(args.out, "pose.json"), "w") as f:
            json.dump(res, f, indent=1)
        np.save(os.path.join(args.out, "pose.npy"), vm)
    return res
