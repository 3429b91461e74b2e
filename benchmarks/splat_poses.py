"""Camera poses on the real fox capture (issue 26, docs/poses.md).

Part ``train``: three runs from the same initial points and seed, test views always rendered
with their given poses: training poses clean / perturbed / perturbed + pose-opt. The
perturbation (:func:`splat.train.poses.perturb_poses`, seed 0): every training camera rotated
by exactly ``--rot-deg`` (1) degrees about a random axis and its centre moved by exactly
``--trans-frac`` (2 %) of the mean camera distance (from the centres' centroid) in a random
direction. Reports test PSNR of each run and the training poses' mean rotation / centre
error before and after pose-opt. The clean run's model is kept for part ``localize``.

Part ``localize``: on test views of the clean model, start from exactly ``--start-deg`` (3)
degrees / ``--start-frac`` (5 %) errors (``--seeds`` draws per view) and estimate the pose
with :func:`splat.localize` (Levenberg-Marquardt, jaxgraph's solver), and with Adam on the
same loss (its rate tuned on a separate view: the split's last, lowest loss after
``--tune-steps``) until it reaches the LM's loss (+0.1 %) or ``--adam-steps``, recording
also the first step as close to the given pose as the LM's result. Reports final errors,
iterations and wall time (each side compiles once; the first start carries it).

The issue's full run: ``python benchmarks/splat_poses.py train --steps 2000`` then
``python benchmarks/splat_poses.py localize``. Results: benchmarks/results/splat_poses_cpu.json
(each part updates its own key, ``--key``; the load average is recorded with every timing;
``--out`` writes elsewhere, e.g. splat_poses_ds16_cpu.json for ``--downscale 16``). The
pose-opt settings default to TrainConfig's; the pose-opt run also records the training
poses' mean errors every ``--curve-every`` steps. A pose-opt run alone under another key
(``--runs noisy_pose_opt --key train_gauss_newton``, e.g. another pose optimiser) takes the
PSNR cost of the noise from the clean and noisy runs under ``train`` of the same setting.
``localize --start-deg 0 --start-frac 0`` starts at the given pose: where the model's
photometric optimum lies (each row records the MSE at the given and at the found pose);
``--split train`` runs on views the model was fitted to (a diagnostic).

Image shifts (``splat.train.poses.image_shift``): beside the pose errors in degrees and
per cent, the median distance in pixels by which a pose error moves the scene's points
(the model's opaque Gaussians) in the view: a rotation and a sideways move of a camera look
alike up to parallax, so a pose can be far from the given one in degrees and close in the
image. The pose-opt run records them per training view (``per_view``), localize per start.

Part ``pnp`` (needs OpenCV: ``pip install opencv-python-headless``): the given poses of
held-out views against an estimate that uses no splat model (SIFT tracks triangulated from
the nearest training views' given poses, RANSAC PnP and LM on the held-out view): whether
the test views' given poses agree with the training views' frame.

Part ``figure``: docs/poses.md's figure, benchmarks/results/splat_poses.png (the pose-opt run's
training-pose errors over the steps, and photo / render at the start / render at localize's
result for a test and a training view of the clean model).

Run on the shared 2-core machine pinned to one core with one XLA thread (docs/poses.md):
``taskset -c 1 nice -n 19 env XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1" python benchmarks/splat_poses.py ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_info  # noqa: E402

FOX = ROOT / ".." / "shared" / "data" / "splat" / "fox"
OUT = ROOT / "benchmarks" / "results" / "splat_poses_cpu.json"
WORK = Path(os.environ.get("SPLAT_POSES_WORK", "/tmp/splat_poses_bench"))


def _load():
    return os.getloadavg()


def _read(out):
    out = Path(out)
    return json.loads(out.read_text()) if out.exists() else {}


def _update(key, value, out=OUT):
    out = Path(out)
    data = _read(out)
    data["machine"] = machine_info()
    data[key] = value
    out.write_text(json.dumps(data, indent=1))


def _opaque_means(p, active=None, min_opacity=0.5):
    """World points of the scene for ``image_shift``: the (active) Gaussians' means whose
    opacity is at least ``min_opacity`` [N, 3] float64 (all active ones when fewer than 100
    are: a model in its first steps)."""
    op = 1.0 / (1.0 + np.exp(-np.asarray(p["logit_opacities"], np.float64)))
    active = np.ones(len(op), bool) if active is None else np.asarray(active)
    keep = active & (op >= min_opacity)
    return np.asarray(p["means"], np.float64)[keep if keep.sum() >= 100 else active]


def part_train(args):
    import jax

    from splat.datasets import load_scene
    from splat.train import Trainer, save_checkpoint
    from splat.train import presets
    from splat.train.poses import image_shift, mean_camera_distance, perturb_poses, pose_errors

    scene = load_scene(str(FOX), downscale=args.downscale, n_random_points=1, seed=0,
                       warn=lambda m: None)
    cap = presets.fit_to_machine(scene, steps=args.steps, strategy="default",
                                 backend="pallas", capacity=None, init_points=None,
                                 resume=None, seed=0)
    base = presets.train_config(args.steps, cap, 3, "default")
    tr = np.asarray(scene.train_idx)
    clean = np.asarray(scene.viewmats, np.float64)
    scale = mean_camera_distance(clean)
    noisy = clean.copy()
    noisy[tr] = perturb_poses(clean[tr], args.rot_deg, args.trans_frac, seed=0, scale=scale)
    runs = {}
    for name, vms, pose_opt in (("clean", clean, False), ("noisy", noisy, False),
                                ("noisy_pose_opt", noisy, True)):
        if name not in args.runs:
            continue
        sc = dataclasses.replace(scene, viewmats=vms)
        extra = json.loads(args.extra)
        if "strategy" in extra:  # fields of the densification strategy, e.g. reset_every
            extra["strategy"] = dataclasses.replace(base.strategy, **extra["strategy"])
        cfg = dataclasses.replace(base, pose_opt=pose_opt, lr_pose=args.lr_pose,
                                  lr_pose_final_ratio=args.lr_pose_final_ratio,
                                  pose_opt_start=args.pose_opt_start,
                                  pose_optimizer=args.pose_optimizer,
                                  pose_gn_damping=args.pose_gn_damping,
                                  pose_gn_max_step_deg=args.pose_gn_max_step_deg,
                                  **extra)
        trainer = Trainer(sc, cfg)
        state = trainer.init_state(seed=0)
        curve = []  # the training poses' mean errors every --curve-every steps

        def track(i, st, m, trainer=trainer, curve=curve):
            if pose_opt and ((i + 1) % args.curve_every == 0 or i == 0):
                r, t = pose_errors(trainer.train_viewmats(st), clean[tr], scale)
                curve.append((i + 1, float(r.mean()), float(t.mean())))

        load0 = _load()
        t0 = time.perf_counter()
        state, hist = trainer.fit(state, args.steps, log_every=100, callback=track)
        jax.block_until_ready(state)
        secs = time.perf_counter() - t0
        ev = trainer.evaluate(state)
        r0, t0e = pose_errors(vms[tr], clean[tr], scale)
        r1, t1e = pose_errors(trainer.train_viewmats(state), clean[tr], scale)
        runs[name] = dict(test_psnr=float(ev["psnr"].mean()),
                          test_ssim=float(np.nanmean(ev["ssim"])),
                          train_rot_err_deg_before=float(r0.mean()),
                          train_rot_err_deg_after=float(r1.mean()),
                          train_trans_err_rel_before=float(t0e.mean()),
                          train_trans_err_rel_after=float(t1e.mean()),
                          n_active=int(np.asarray(state.active).sum()), train_seconds=secs,
                          load_before=load0, load_after=_load())
        if pose_opt:
            runs[name]["pose_error_curve"] = dict(step=[c[0] for c in curve],
                                                  rot_deg=[c[1] for c in curve],
                                                  trans_rel=[c[2] for c in curve])
            # per view: the errors, and how far they move the scene in the image (the
            # run's own opaque Gaussians as the scene's points)
            refined = trainer.train_viewmats(state)
            pts = _opaque_means(state.params, state.active)
            h, w = scene.images[0].shape[:2]
            ks = np.asarray(scene.Ks, np.float64)[tr]
            runs[name]["per_view"] = dict(
                view=[int(v) for v in tr], rot_deg_before=r0.tolist(),
                trans_rel_before=t0e.tolist(), rot_deg_after=r1.tolist(),
                trans_rel_after=t1e.tolist(),
                image_shift_px_before=image_shift(vms[tr], clean[tr], ks, pts, w, h).tolist(),
                image_shift_px_after=image_shift(refined, clean[tr], ks, pts, w, h).tolist(),
                refined_viewmats=refined.tolist())
        print(name, runs[name], flush=True)
        if name == "clean" and not args.no_save:
            WORK.mkdir(parents=True, exist_ok=True)
            save_checkpoint(WORK / "clean.npz", trainer, state,
                            extra=dict(data=str(FOX), downscale=args.downscale))
    out = dict(
        command=" ".join(sys.argv), steps=args.steps, steps_asked_by_issue=2000,
        downscale=args.downscale, capacity=cap, lr_pose=args.lr_pose,
        lr_pose_final_ratio=args.lr_pose_final_ratio, pose_opt_start=args.pose_opt_start,
        pose_optimizer=args.pose_optimizer, pose_gn_damping=args.pose_gn_damping,
        pose_gn_max_step_deg=args.pose_gn_max_step_deg, extra=json.loads(args.extra),
        noise=dict(rot_deg=args.rot_deg, trans_frac=args.trans_frac, seed=0,
                   mean_camera_distance=scale, applied_to="training views only"),
        runs=runs)
    if len(runs) == 3:
        cost = runs["clean"]["test_psnr"] - runs["noisy"]["test_psnr"]
        gain = runs["noisy_pose_opt"]["test_psnr"] - runs["noisy"]["test_psnr"]
        out.update(psnr_cost_of_noise=cost, psnr_recovered_by_pose_opt=gain,
                   recovered_fraction=gain / cost if cost > 0 else None)
    elif "noisy_pose_opt" in runs and args.key != "train":
        # a pose-opt run alone (another pose optimiser): the PSNR cost of the noise from the
        # clean and noisy runs of the same setting already under the "train" key
        ref = _read(args.out).get("train", {})
        same = all(ref.get(k) == out[k] for k in ("steps", "downscale", "capacity"))
        if same and {"clean", "noisy"} <= set(ref.get("runs", {})):
            cost = ref["runs"]["clean"]["test_psnr"] - ref["runs"]["noisy"]["test_psnr"]
            gain = runs["noisy_pose_opt"]["test_psnr"] - ref["runs"]["noisy"]["test_psnr"]
            out.update(clean_and_noisy_from="train", psnr_cost_of_noise=cost,
                       psnr_recovered_by_pose_opt=gain,
                       recovered_fraction=gain / cost if cost > 0 else None)
    if "noisy_pose_opt" in runs:
        out["rot_err_reduction"] = (runs["noisy_pose_opt"]["train_rot_err_deg_before"]
                                    / max(runs["noisy_pose_opt"]["train_rot_err_deg_after"],
                                          1e-12))
    _update(args.key, out, args.out)
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))


def part_localize(args):
    """LM (splat.localize) from exact start errors on test views of the clean model, and
    Adam on the same loss (0.5 |r / sigma|^2, same renderer), its rate tuned first on a
    separate view, to the LM's loss or --adam-steps. Each side compiles once per process
    (the image size is the same for every view): the first start's seconds include it,
    the summary's medians are over the other starts."""
    import jax
    import jax.numpy as jnp
    import optax

    from jaxgraph import lie
    from splat.datasets import load_scene
    from splat.tracking import localize
    from splat.tracking.localize import render_pose
    from splat.train import load_model
    from splat.train.poses import image_shift, mean_camera_distance, perturb_poses, pose_errors

    params, cfg, meta = load_model(Path(args.model))
    scene = load_scene(str(FOX), downscale=int(meta["downscale"]), n_random_points=1, seed=0,
                       warn=lambda m: None)
    scale = mean_camera_distance(scene.viewmats)
    pts = _opaque_means(params)
    p32 = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    cfg = dataclasses.replace(cfg, capacity=len(params["means"]))
    h, w = scene.images[0].shape[:2]

    def loss(d, row0, obs, K):
        vm = (lie.SE3(row0) @ lie.SE3.exp(d)).as_matrix()
        img = render_pose(p32, cfg, vm, K, w, h)
        return 0.5 * jnp.sum(((img - obs) * 255.0) ** 2)

    value_and_grad = jax.jit(jax.value_and_grad(loss))
    # the photometric MSE (image units) at a pose: is the given pose the model's optimum?
    mse = jax.jit(lambda vm, obs, K: jnp.mean((render_pose(p32, cfg, vm, K, w, h) - obs) ** 2))

    def view(i):
        return (np.asarray(scene.viewmats[i], np.float64), jnp.asarray(scene.Ks[i], jnp.float32),
                jnp.asarray(scene.images[i] / 255.0, jnp.float32))

    def start_pose(truth, seed):
        return perturb_poses(truth[None], args.start_deg, args.start_frac, seed=seed,
                             scale=scale)[0]

    def adam(lr, start, obs, K, steps, goal_loss=None, goal_error=None):
        """Adam from ``start`` for at most ``steps`` steps, stopped once the loss (evaluated
        at each step's start) is <= ``goal_loss``: dict(steps, pose (final), loss (final),
        seconds, cpu_seconds, and with goals: step_at_goal_loss / seconds_at_goal_loss, and
        step_at_goal_error (the first step whose start is within ``goal_error(pose)``))."""
        row0 = lie.SE3.from_matrix(jnp.asarray(start, jnp.float32)).parameters()
        d = jnp.zeros(6, jnp.float32)
        opt = optax.adam(lr)
        st = opt.init(d)
        t0, c0 = time.perf_counter(), time.process_time()
        out = dict(step_at_goal_loss=None, seconds_at_goal_loss=None, step_at_goal_error=None)
        for k in range(steps + 1):
            value, g = value_and_grad(d, row0, obs, K)
            cur = np.asarray((lie.SE3(row0) @ lie.SE3.exp(d)).as_matrix(), np.float64)
            if goal_error is not None and out["step_at_goal_error"] is None and goal_error(cur):
                out["step_at_goal_error"] = k
            if goal_loss is not None and float(value) <= goal_loss:
                out.update(step_at_goal_loss=k, seconds_at_goal_loss=time.perf_counter() - t0)
                break
            if k == steps:
                break
            upd, st = opt.update(g, st)
            d = d + upd
        out.update(steps=k, pose=cur, loss=float(value), seconds=time.perf_counter() - t0,
                   cpu_seconds=time.process_time() - c0)
        return out

    split = scene.test_idx if args.split == "test" else scene.train_idx
    views = list(split)[:args.views]
    # Adam's rate: the lowest loss after --tune-steps from seed 0 on a separate view (the
    # last one of the split, not among the views measured)
    rates = [float(x) for x in args.adam_lr.split(",")]
    tune_view = int(list(split)[-1])
    if tune_view in views:
        raise SystemExit(f"--views {args.views} leaves no separate view to tune Adam on")
    tuning = {}
    if args.adam_steps:
        truth, K, obs = view(tune_view)
        for lr in rates:
            run = adam(lr, start_pose(truth, 0), obs, K, args.tune_steps)
            tuning[lr] = dict(loss=run["loss"], seconds=run["seconds"])
            print("tune", lr, tuning[lr], flush=True)
    lr = min(rates, key=lambda r: tuning[r]["loss"]) if tuning else None
    rows = []
    for i in views:
        truth, K, obs = view(i)
        for seed in range(args.seeds):
            start = start_pose(truth, seed)
            load0 = _load()
            t0 = time.perf_counter()
            c0 = time.process_time()
            vm, info, infos = localize((params, cfg), scene.images[i], scene.Ks[i],
                                       start.astype(np.float32), levels=args.levels,
                                       max_iterations=args.max_iterations,
                                       return_levels=True)
            lm_s = time.perf_counter() - t0
            lm_cpu = time.process_time() - c0
            rot, trans = pose_errors(vm[None], truth[None], scale)
            row = dict(view=int(i), seed=seed, lm_rot_deg=float(rot[0]),
                       lm_trans_rel=float(trans[0]),
                       start_image_shift_px=float(image_shift(start, truth, K, pts, w, h)[0]),
                       lm_image_shift_px=float(image_shift(vm, truth, K, pts, w, h)[0]),
                       lm_converged=bool(info.converged),
                       lm_status=int(info.status),
                       lm_iterations=int(sum(int(x.iterations) for x in infos)),
                       lm_seconds=lm_s, lm_cpu_seconds=lm_cpu,
                       mse_at_given_pose=float(mse(jnp.asarray(truth, jnp.float32), obs, K)),
                       mse_at_lm_pose=float(mse(jnp.asarray(vm, jnp.float32), obs, K)),
                       load=load0)
            if args.adam_steps:
                # Adam's goal: the LM's photometric loss (both minimise it; +0.1 %), and
                # apart the first step as close to the given pose as the LM's result
                lm_row = lie.SE3.from_matrix(jnp.asarray(vm, jnp.float32)).parameters()
                lm_loss = float(loss(jnp.zeros(6, jnp.float32), lm_row, obs, K))
                goal = (max(rot[0], 0.2), max(trans[0], 0.005))

                def within(cur, truth=truth, goal=goal):
                    ar, at = pose_errors(cur[None], truth[None], scale)
                    return ar[0] <= goal[0] and at[0] <= goal[1]

                run = adam(lr, start, obs, K, args.adam_steps, lm_loss * (1 + 1e-3), within)
                ar, at = pose_errors(run["pose"][None], truth[None], scale)
                row.update(lm_loss=lm_loss, adam_lr=lr, adam_steps=run["steps"],
                           adam_loss=run["loss"],
                           adam_step_at_lm_loss=run["step_at_goal_loss"],
                           adam_seconds_at_lm_loss=run["seconds_at_goal_loss"],
                           adam_step_at_lm_error=run["step_at_goal_error"],
                           adam_rot_deg=float(ar[0]), adam_trans_rel=float(at[0]),
                           adam_image_shift_px=float(
                               image_shift(run["pose"], truth, K, pts, w, h)[0]),
                           adam_seconds=run["seconds"], adam_cpu_seconds=run["cpu_seconds"])
            rows.append(row)
            print(row, flush=True)
    ok = [r["lm_rot_deg"] < 0.2 and r["lm_trans_rel"] < 0.005 for r in rows]
    steady = rows[1:]  # the first start of each side carries its compile
    med = lambda key: float(np.median([r[key] for r in steady])) if steady and key in steady[0] else None  # noqa: E731
    _update(args.key, dict(command=" ".join(sys.argv), model=str(args.model),
                             n_gaussians=len(params["means"]), image=[int(w), int(h)],
                             downscale=int(meta["downscale"]), split=args.split,
                             start_deg=args.start_deg,
                             start_frac=args.start_frac, levels=args.levels,
                             max_iterations=args.max_iterations,
                             adam_tuning=dict(view=tune_view, steps=args.tune_steps,
                                              by_rate={str(k): v for k, v in tuning.items()},
                                              chosen=lr),
                             runs=rows,
                             lm_success=f"{sum(ok)}/{len(ok)}",
                             converged_but_failed=sum(1 for r, g in zip(rows, ok)
                                                      if r["lm_converged"] and not g),
                             first_start_seconds=dict(lm=rows[0]["lm_seconds"] if rows else None,
                                                      adam=rows[0].get("adam_seconds") if rows else None),
                             median_after_first=dict(lm_seconds=med("lm_seconds"),
                                                     adam_seconds=med("adam_seconds"),
                                                     lm_iterations=med("lm_iterations"),
                                                     adam_steps=med("adam_steps"))),
            args.out)


def part_pnp(args):
    """Are fox's given test poses consistent with its training poses? An estimate of each
    held-out view's pose that uses no splat model: SIFT features (OpenCV, a peer: ``pip
    install opencv-python-headless``) of the view matched to its ``--refs`` nearest training
    views, the tracks seen in at least 3 of them triangulated from their given poses (DLT,
    kept when every reprojection is within 1 px), then RANSAC PnP and a Levenberg-Marquardt
    refinement on the view. Reports its rotation / centre error against the given pose and the
    reprojection RMS (pixels of the ``--downscale`` images)."""
    import cv2

    from splat.datasets import camera_centers, load_scene
    from splat.train.poses import image_shift, mean_camera_distance, pose_errors

    scene = load_scene(str(FOX), downscale=args.downscale, n_random_points=1, seed=0,
                       warn=lambda m: None)
    vms = np.asarray(scene.viewmats, np.float64)
    ks = np.asarray(scene.Ks, np.float64)
    scale = mean_camera_distance(vms)
    centres = camera_centers(vms)
    sift = cv2.SIFT_create(nfeatures=8000)
    feats = []
    for im in scene.images:
        kp, des = sift.detectAndCompute(cv2.cvtColor(np.asarray(im), cv2.COLOR_RGB2GRAY), None)
        feats.append((np.float64([k.pt for k in kp]), des))
    matcher = cv2.BFMatcher(cv2.NORM_L2)

    def matches(i, j):  # keypoint of i -> keypoint of j, Lowe's ratio test
        pairs = [m for m in matcher.knnMatch(feats[i][1], feats[j][1], k=2) if len(m) == 2]
        return {a.queryIdx: a.trainIdx for a, b in pairs if a.distance < 0.75 * b.distance}

    def triangulate(obs):
        rows = []
        for v, (x, y) in obs:
            p = ks[v] @ vms[v][:3]
            rows += [x * p[2] - p[0], y * p[2] - p[1]]
        X = np.linalg.svd(np.asarray(rows))[2][-1]
        X = X[:3] / X[3]
        for v, xy in obs:
            c = vms[v][:3, :3] @ X + vms[v][:3, 3]
            if c[2] <= 0 or np.linalg.norm((ks[v] @ c)[:2] / c[2] - xy) > 1.0:
                return None
        return X

    views = [int(v) for v in args.views.split(",")] if args.views else [int(v) for v in scene.test_idx]
    h, w = scene.images[0].shape[:2]
    rows = []
    for t in views:
        train = [int(i) for i in scene.train_idx if int(i) != t]
        refs = sorted(train, key=lambda i: np.linalg.norm(centres[i] - centres[t]))[:args.refs]
        m = {r: matches(t, r) for r in refs}
        pts3, pts2 = [], []
        for k in range(len(feats[t][0])):
            obs = [(r, feats[r][0][m[r][k]]) for r in refs if k in m[r]]
            X = triangulate(obs) if len(obs) >= 3 else None
            if X is not None:
                pts3.append(X)
                pts2.append(feats[t][0][k])
        pts3, pts2 = np.float64(pts3), np.float64(pts2)
        ok, rvec, tvec, inl = cv2.solvePnPRansac(pts3, pts2, ks[t], None, reprojectionError=2.0,
                                                 iterationsCount=2000, flags=cv2.SOLVEPNP_EPNP)
        if not ok:
            raise SystemExit(f"view {t}: PnP found no pose ({len(pts3)} tracks)")
        inl = inl[:, 0]
        rvec, tvec = cv2.solvePnPRefineLM(pts3[inl], pts2[inl], ks[t], None, rvec, tvec)
        est = np.eye(4)
        est[:3, :3] = cv2.Rodrigues(rvec)[0]
        est[:3, 3] = tvec[:, 0]
        proj = cv2.projectPoints(pts3[inl], rvec, tvec, ks[t], None)[0][:, 0]
        rot, trans = pose_errors(est[None], vms[t][None], scale)
        row = dict(view=t, split="test" if t in set(int(i) for i in scene.test_idx) else "train",
                   refs=refs, tracks=len(pts3), inliers=len(inl),
                   rms_px=float(np.sqrt(np.mean(np.sum((proj - pts2[inl]) ** 2, -1)))),
                   rot_deg=float(rot[0]), trans_rel=float(trans[0]),
                   image_shift_px=float(image_shift(est, vms[t], ks[t], pts3, w, h)[0]))
        rows.append(row)
        print(row, flush=True)
    _update(args.key, dict(command=" ".join(sys.argv), downscale=args.downscale, image=[w, h],
                           opencv=cv2.__version__, refs=args.refs, runs=rows), args.out)


def part_figure(args):
    """docs/poses.md's figure: the pose-opt run's training-pose errors over the steps (from
    --results' key "train") and, for one test and one training view of the clean model,
    the photo beside the renders at a 3 deg / 5 % start and at localize's result."""
    import jax.numpy as jnp
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from splat.datasets import load_scene
    from splat.tracking import localize
    from splat.tracking.localize import render_pose
    from splat.train import load_model
    from splat.train.poses import mean_camera_distance, perturb_poses, pose_errors

    train = _read(args.results)["train"]
    curve = train["runs"]["noisy_pose_opt"]["pose_error_curve"]
    params, cfg, meta = load_model(Path(args.model))
    scene = load_scene(str(FOX), downscale=int(meta["downscale"]), n_random_points=1, seed=0,
                       warn=lambda m: None)
    scale = mean_camera_distance(scene.viewmats)
    cfg = dataclasses.replace(cfg, capacity=len(params["means"]))
    p32 = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    fig = plt.figure(figsize=(12, 8.5))
    ax = fig.add_subplot(3, 1, 1)
    ax.plot(curve["step"], curve["rot_deg"], label="rotation error (deg)")
    ax.plot(curve["step"], [100 * t for t in curve["trans_rel"]],
            label="centre error (% of the mean camera distance)")
    ax.axvline(train["pose_opt_start"], color="grey", lw=0.8, ls=":")
    ax.set_xlabel("training step")
    ax.set_title(f"pose-opt on fox (downscale {train['downscale']}, noise "
                 f"{train['noise']['rot_deg']} deg / {100 * train['noise']['trans_frac']:.0f} %): "
                 "mean error of the 43 training poses")
    ax.legend()
    for row, (split, i) in enumerate((("test", int(scene.test_idx[0])),
                                      ("training", int(scene.train_idx[0])))):
        truth = np.asarray(scene.viewmats[i], np.float64)
        start = perturb_poses(truth[None], args.start_deg, args.start_frac, seed=0, scale=scale)[0]
        vm, info = localize((params, cfg), scene.images[i], scene.Ks[i], start.astype(np.float32),
                            levels=2)
        h, w = scene.images[i].shape[:2]
        K = jnp.asarray(scene.Ks[i], jnp.float32)
        panels = [("photo", scene.images[i] / 255.0)]
        for name, pose in (("start", start), ("localize", vm)):
            img = np.clip(np.asarray(render_pose(p32, cfg, jnp.asarray(pose, jnp.float32), K, w, h)), 0, 1)
            r, t = pose_errors(np.asarray(pose)[None], truth[None], scale)
            panels.append((f"{name}: {r[0]:.2f} deg / {100 * t[0]:.2f} %", img))
        for k, (title, img) in enumerate(panels):
            ax = fig.add_subplot(3, 3, 3 * (row + 1) + k + 1)
            ax.imshow(img)
            ax.set_title(f"{split} view {i}: {title}" if k == 0 else title, fontsize=9)
            ax.axis("off")
        print(split, i, panels[1][0], panels[2][0], "status", int(info.status), flush=True)
    fig.tight_layout()
    fig.savefig(args.out_png, dpi=80)
    print("wrote", args.out_png)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="part", required=True)
    t = sub.add_parser("train")
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--downscale", type=int, default=8)
    t.add_argument("--rot-deg", type=float, default=1.0)
    t.add_argument("--trans-frac", type=float, default=0.02)
    from splat.train import TrainConfig

    t.add_argument("--lr-pose", type=float, default=TrainConfig.lr_pose)
    t.add_argument("--lr-pose-final-ratio", type=float, default=TrainConfig.lr_pose_final_ratio)
    t.add_argument("--pose-opt-start", type=int, default=TrainConfig.pose_opt_start,
                   help="steps before the poses move (TrainConfig.pose_opt_start)")
    t.add_argument("--pose-optimizer", default=TrainConfig.pose_optimizer,
                   choices=("adam", "gauss_newton"))
    t.add_argument("--pose-gn-damping", type=float, default=TrainConfig.pose_gn_damping)
    t.add_argument("--pose-gn-max-step-deg", type=float,
                   default=TrainConfig.pose_gn_max_step_deg)
    t.add_argument("--extra", default="{}", help="further TrainConfig fields (JSON); "
                   "\"strategy\": a dict of the strategy's fields, e.g. {\"reset_every\": 500}")
    t.add_argument("--runs", nargs="+", default=["clean", "noisy", "noisy_pose_opt"],
                   choices=["clean", "noisy", "noisy_pose_opt"],
                   help="which of the three runs (all three for the PSNR recovery)")
    t.add_argument("--no-save", action="store_true",
                   help="do not keep the clean model for part localize")
    t.add_argument("--curve-every", type=int, default=50,
                   help="record the pose-opt run's mean pose errors every N steps")
    t.add_argument("--out", default=str(OUT), help="results JSON (updated in place)")
    t.add_argument("--key", default="train",
                   help="key of the results JSON (e.g. train_gauss_newton for a pose-opt run "
                        "alone, whose PSNR recovery then uses the clean and noisy runs "
                        "under 'train' of the same steps, downscale and capacity)")
    lo = sub.add_parser("localize")
    lo.add_argument("--views", type=int, default=6,
                    help="views of the split used (first N; the last view is kept apart for tuning Adam)")
    lo.add_argument("--split", default="test", choices=("test", "train"),
                    help="views of the test split (the issue's) or of the training split "
                         "(a diagnostic: views the model was fitted to)")
    lo.add_argument("--seeds", type=int, default=10)
    lo.add_argument("--start-deg", type=float, default=3.0)
    lo.add_argument("--start-frac", type=float, default=0.05)
    lo.add_argument("--adam-steps", type=int, default=500)
    lo.add_argument("--levels", type=int, default=2, help="localize's pyramid levels")
    lo.add_argument("--max-iterations", type=int, default=30, help="LM trials per level")
    lo.add_argument("--adam-lr", default="3e-4,1e-3,3e-3,1e-2",
                    help="Adam rates on the tangent, comma-separated: the one with the lowest "
                         "loss after --tune-steps on a separate view (the split's last) is used")
    lo.add_argument("--tune-steps", type=int, default=100, help="Adam steps per rate when tuning")
    lo.add_argument("--model", default=str(WORK / "clean.npz"),
                    help="checkpoint of the clean run (part train keeps it there)")
    lo.add_argument("--out", default=str(OUT), help="results JSON (updated in place)")
    lo.add_argument("--key", default="localize", help="key of the results JSON")
    pn = sub.add_parser("pnp", help="the given test poses against a feature-based PnP estimate "
                        "(needs OpenCV)")
    pn.add_argument("--downscale", type=int, default=2, help="image downscale of the features")
    pn.add_argument("--views", default="",
                    help="comma-separated views (default: the test views); a training view is "
                    "left out of the triangulation")
    pn.add_argument("--refs", type=int, default=6, help="nearest training views to triangulate from")
    pn.add_argument("--out", default=str(OUT), help="results JSON (updated in place)")
    pn.add_argument("--key", default="pnp_check", help="key of the results JSON")
    fi = sub.add_parser("figure", help="docs/poses.md's figure (pose-opt curve, localize renders)")
    fi.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "splat_poses_2000_cpu.json"),
                    help="results JSON whose key 'train' holds the pose-opt curve")
    fi.add_argument("--model", default=str(WORK / "clean.npz"), help="checkpoint of the clean run")
    fi.add_argument("--start-deg", type=float, default=3.0)
    fi.add_argument("--start-frac", type=float, default=0.05)
    fi.add_argument("--out-png", default=str(ROOT / "benchmarks" / "results" / "splat_poses.png"))
    args = ap.parse_args(argv)
    {"train": part_train, "localize": part_localize, "pnp": part_pnp,
     "figure": part_figure}[args.part](args)


if __name__ == "__main__":
    main()
