"""3DGS training on the real fox capture: test PSNR and speed, densification on/off.

Scene: ``../shared/data/splat/fox`` (instant-ngp transforms.json, 50 of 67 listed photos
exist), box-downscaled by ``--downscale`` (default 16: 67x120 pixels), undistorted at load,
every 8th image held out (7 test views). There are no SfM points, so every run starts from
the same ``--init-points`` random points in the cameras' bounds (seed 0).

Runs, each with the same step budget, capacity and seed:
  none     - no densification (the fixed initial set of Gaussians is optimised)
  default  - 3DGS densification on the accumulated 2D-mean gradient norm
  absgrad  - the same on gsplat's absgrad (threshold 0.0008, as gsplat)
  mcmc     - MCMC relocation strategy, budget growing 5% per refinement
For each: test PSNR/SSIM of the initialisation and after the budget, active Gaussians,
compile time of the (single) step compilation, steps/s excluding it.

Writes benchmarks/results/splat_train_<platform>.json.
Usage: python3 benchmarks/splat_train.py [--steps N] [--downscale K] [--runs none,default,...]
  [--init-points auto|N] [--capacity auto|N] [--eval-every N] [--out FILE]
Default: 500 steps from 1000 random points, about 1.5 minutes per run on a 2-core CPU.
``auto`` takes the ``splat train`` presets (splat/train/presets.py) for this device.
With ``--eval-every`` the test views are evaluated every N steps and the JSON is
rewritten after each evaluation, so a run stopped early still leaves its curve.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_info  # noqa: E402
from splat.datasets import load_scene  # noqa: E402
from splat.train import TrainConfig, Trainer  # noqa: E402
from splat.train import presets  # noqa: E402
from splat.train.presets import make_strategy, schedule_for  # noqa: E402

FOX = ROOT / ".." / "shared" / "data" / "splat" / "fox"


def run(scene, name, args, on_eval=None):
    strategy = {"none": "none", "default": "default", "absgrad": "default", "mcmc": "mcmc"}[name]
    cfg = TrainConfig(steps=args.steps, capacity=args.capacity, sh_degree=args.sh_degree,
                      strategy=make_strategy(strategy, args.steps, absgrad=name == "absgrad"),
                      backend=args.backend,
                      sh_degree_interval=schedule_for(args.steps)["sh_degree_interval"])
    tr = Trainer(scene, cfg)
    state = tr.init_state(seed=0)
    ev0 = tr.evaluate(state)
    t0 = time.perf_counter()
    state, m = tr.step(state)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    evals = []
    eval_s = [0.0]  # time spent in the intermediate evaluations (not training)

    def callback(i, st, m):
        done = i + 2  # the first step ran before fit
        if args.eval_every and done % args.eval_every == 0 and done < args.steps:
            te = time.perf_counter()
            ev_i = tr.evaluate(st)
            eval_s[0] += time.perf_counter() - te
            evals.append(dict(step=done, test_psnr=float(ev_i["psnr"].mean()),
                              test_ssim=float(ev_i["ssim"].mean()), n_active=m["n_active"],
                              train_seconds=time.perf_counter() - t0 - eval_s[0]))
            print(json.dumps(evals[-1]), flush=True)
            if on_eval is not None:
                on_eval(dict(run=name, partial=True, evals=evals))

    state, hist = tr.fit(state, args.steps - 1, log_every=100, callback=callback)
    jax.block_until_ready(state)
    dt = time.perf_counter() - t1 - eval_s[0]
    ev = tr.evaluate(state)
    res = dict(
        run=name, strategy=strategy, absgrad=name == "absgrad",
        init_test_psnr=float(ev0["psnr"].mean()), init_test_ssim=float(ev0["ssim"].mean()),
        test_psnr=float(ev["psnr"].mean()), test_ssim=float(ev["ssim"].mean()),
        test_psnr_per_view=[float(x) for x in ev["psnr"]],
        psnr_gain_db=float(ev["psnr"].mean() - ev0["psnr"].mean()),
        n_active_init=int(m["n_active"]) if strategy != "none" else int(np.asarray(state.active).sum()),
        n_active_final=int(np.asarray(state.active).sum()),
        capacity_denied=int(sum(h["denied"] for h in hist)),
        isect_overflow_steps=int(sum(bool(h["isect_overflow"]) for h in hist)),
        compile_plus_first_step_s=compile_s, steps_per_s=(args.steps - 1) / dt,
        train_seconds=compile_s + dt, intermediate_eval_seconds=eval_s[0], evals=evals,
        step_compilations=tr.compile_count,
        config=json.loads(cfg.to_json()))
    print(json.dumps({k: v for k, v in res.items() if k not in ("config", "test_psnr_per_view")}),
          flush=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--downscale", type=int, default=16)
    ap.add_argument("--init-points", default="1000", help="N or auto")
    ap.add_argument("--capacity", default="16384", help="N or auto")
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--sh-degree", type=int, default=1)
    ap.add_argument("--backend", default="pallas")
    ap.add_argument("--runs", default="none,default,absgrad,mcmc")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not FOX.is_dir():
        sys.exit(f"fox scene not found at {FOX}")
    t = time.perf_counter()
    plat = presets.platform_name()
    scene = load_scene(str(FOX), downscale=args.downscale, n_random_points=1, seed=0)
    args.init_points = presets.default_init_points(scene.width, scene.height, plat) \
        if args.init_points == "auto" else int(args.init_points)
    scene = load_scene(str(FOX), downscale=args.downscale, n_random_points=args.init_points,
                       seed=0)
    load_s = time.perf_counter() - t
    auto_cap = args.capacity == "auto"
    args.capacity = presets.default_gaussian_capacity(
        args.init_points, scene.width, scene.height, args.steps, plat) if auto_cap \
        else int(args.capacity)
    path = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / \
        f"splat_train_{jax.default_backend()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    load = []

    def header():
        return dict(
            benchmark="splat_train", machine=machine_info(),
            load_average_samples=load,
            scene=dict(path="../shared/data/splat/fox", downscale=args.downscale,
                       width=scene.width, height=scene.height, n_train=len(scene.train_idx),
                       n_test=len(scene.test_idx), init_points=args.init_points,
                       points_source=scene.points_source, load_seconds=load_s),
            steps=args.steps, capacity=args.capacity, capacity_auto=auto_cap,
            sh_degree=args.sh_degree, backend=args.backend)

    def on_eval(partial):
        load.append(os.getloadavg())
        path.write_text(json.dumps(dict(header(), runs=[partial]), indent=1))

    load.append(os.getloadavg())
    runs = [run(scene, r, args, on_eval) for r in args.runs.split(",")]
    load.append(os.getloadavg())
    by = {r["run"]: r for r in runs}
    summary = {}
    if "none" in by:
        for k in ("default", "absgrad", "mcmc"):
            if k in by:
                summary[f"{k}_minus_none_psnr_db"] = by[k]["test_psnr"] - by["none"]["test_psnr"]
    out = dict(header(), runs=runs, summary=summary,
               gpu="not run: this task was not lent a GPU; gsplat's simple_trainer "
                   "comparison needs one")
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps(summary), "->", path)


if __name__ == "__main__":
    main()
