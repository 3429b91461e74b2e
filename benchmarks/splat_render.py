"""Forward and forward+backward timings of splat.rasterization on the garden scene.

Scene: all 138,766 points of gsplat's ``test_garden.npz`` (Mip-NeRF 360 garden) as
isotropic Gaussians (scale = mean distance to the 3 nearest neighbours, opacity 0.8,
colours from the points), rendered at the real resolution 648x420 from camera 0
(``--cameras 3`` renders all three). Backends: ``reference`` (plain JAX, vectorised over
every intersection x pixel) and ``pallas`` (the kernels; interpret mode on CPU,
compiled on GPU). Each function is jit-compiled once with a fixed intersection
capacity; we report compile time and the median wall time of the timed repetitions.
The loss for forward+backward is a fixed random linear functional of the RGB image and
alpha map; gradients are taken with respect to all Gaussian parameters, plus the
means2d and absgrad probes.

Writes benchmarks/results/splat_render_<platform>.json.

Usage: python3 benchmarks/splat_render.py [--cameras C] [--repeats R] [--points N]

The default run takes about 4 minutes and 13 GiB of memory on a 2-core CPU machine
(the reference's forward+backward dominates both).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import splat  # noqa: E402

DATA = ROOT / ".." / "shared" / "data" / "splat" / "test_garden.npz"


def garden(n_cams: int, n_points: int | None):
    from scipy.spatial import cKDTree

    z = np.load(DATA)
    pts = z["means3d"].astype(np.float32)
    cols = z["colors"].astype(np.float32) / 255.0
    if n_points is not None and n_points < len(pts):
        idx = np.random.default_rng(0).choice(len(pts), n_points, replace=False)
        pts, cols = pts[idx], cols[idx]
    dist, _ = cKDTree(pts).query(pts, k=4)
    scale = np.clip(dist[:, 1:].mean(1), 1e-3, None).astype(np.float32)
    n = len(pts)
    quats = np.zeros((n, 4), np.float32)
    quats[:, 0] = 1
    return dict(means=pts, quats=quats, scales=np.repeat(scale[:, None], 3, 1),
                opacities=np.full(n, 0.8, np.float32), colors=cols,
                viewmats=z["viewmats"][:n_cams].astype(np.float32),
                Ks=z["Ks"][:n_cams].astype(np.float32), width=int(z["width"]),
                height=int(z["height"]))


def timed(fn, args, repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cameras", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions (pallas)")
    ap.add_argument("--ref-repeats", type=int, default=1,
                    help="timed repetitions for the reference (slow and memory-hungry on CPU)")
    ap.add_argument("--points", type=int, default=None, help="random subset of the points")
    ap.add_argument("--backends", default="pallas,reference")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    sc = garden(a.cameras, a.points)
    w, h = sc.pop("width"), sc.pop("height")
    names = ("means", "quats", "scales", "opacities", "colors")
    params = tuple(jnp.asarray(sc[k]) for k in names)
    vms, ks = jnp.asarray(sc["viewmats"]), jnp.asarray(sc["Ks"])
    c, n = vms.shape[0], params[0].shape[0]
    # Measured once outside jit (exact count, rounded to a power of two).
    _, alpha, meta = splat.rasterization(*params, vms, ks, w, h, backend="pallas")
    cap = int(meta["isect_capacity"])
    rng = np.random.default_rng(0)
    wc = jnp.asarray(rng.uniform(size=(c, h, w, 3)), jnp.float32)
    wa = jnp.asarray(rng.uniform(size=(c, h, w, 1)), jnp.float32)
    probes = (jnp.zeros((c, n, 2), jnp.float32), jnp.zeros((c, n, 2), jnp.float32))

    result = dict(
        benchmark="splat_render",
        scene=dict(name="garden (gsplat assets/test_garden.npz)", gaussians=n, cameras=c,
                   width=w, height=h, intersections=int(meta["isect_count"]),
                   isect_capacity=cap, visible=int(jnp.sum(meta["radii"][..., 0] > 0)),
                   mean_alpha=float(alpha.mean())),
        machine=dict(platform=platform.platform(), processor=platform.processor(),
                     cpu_count=os.cpu_count(), python=platform.python_version(),
                     jax=jax.__version__, backend=jax.default_backend(),
                     device=str(jax.devices()[0].device_kind),
                     pallas_mode="interpret" if jax.default_backend() != "gpu" else "compiled",
                     load_average_at_start=os.getloadavg()),
        repeats=dict(pallas=a.repeats, reference=a.ref_repeats),
        note=("wall times on a shared machine; the first call includes jit compilation. "
              "The reference materialises every (intersection, pixel) pair, hence its memory."),
        rows=[],
    )
    images = {}
    for backend in a.backends.split(","):
        def fwd(params, backend=backend):
            img, alpha, _ = splat.rasterization(*params, vms, ks, w, h, backend=backend,
                                                isect_capacity=cap)
            return img, alpha

        def loss(params, probes, backend=backend):
            img, alpha, _ = splat.rasterization(*params, vms, ks, w, h, backend=backend,
                                                isect_capacity=cap, means2d_probe=probes[0],
                                                absgrad_probe=probes[1])
            return jnp.sum(img * wc) + jnp.sum(alpha * wa)

        f_fwd = jax.jit(fwd)
        f_bwd = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        for kind, fn, args in (("forward", f_fwd, (params,)),
                               ("forward+backward", f_bwd, (params, probes))):
            try:
                reps = a.ref_repeats if backend == "reference" else a.repeats
                first, med, times = timed(fn, args, reps)
            except Exception as e:  # e.g. out of memory for the reference at full size
                result["rows"].append(dict(backend=backend, kind=kind, error=repr(e)[:300]))
                print(f"{backend:9s} {kind:17s} failed: {e!r}"[:200], flush=True)
                continue
            out = fn(*args)
            images[(backend, kind)] = out
            row = dict(backend=backend, kind=kind, seconds_median=med, seconds_all=times,
                       first_call_seconds_incl_compile=first)
            result["rows"].append(row)
            print(f"{backend:9s} {kind:17s} median {med:8.3f} s   first call {first:7.2f} s",
                  flush=True)

    by = {(r["backend"], r["kind"]): r for r in result["rows"] if "seconds_median" in r}
    ratios = {}
    for kind in ("forward", "forward+backward"):
        if ("pallas", kind) in by and ("reference", kind) in by:
            ratios[kind + " reference/pallas"] = (by[("reference", kind)]["seconds_median"]
                                                  / by[("pallas", kind)]["seconds_median"])
    result["ratios"] = ratios
    if ("pallas", "forward") in images and ("reference", "forward") in images:
        result["max_abs_diff_image_pallas_vs_reference"] = float(jnp.max(jnp.abs(
            images[("pallas", "forward")][0] - images[("reference", "forward")][0])))
    if ("pallas", "forward+backward") in images and ("reference", "forward+backward") in images:
        gp = jax.tree.leaves(images[("pallas", "forward+backward")][1])
        gr = jax.tree.leaves(images[("reference", "forward+backward")][1])
        result["max_rel_diff_grads_pallas_vs_reference"] = max(
            float(jnp.max(jnp.abs(x - y)) / jnp.maximum(jnp.max(jnp.abs(y)), 1e-30))
            for x, y in zip(gp, gr))
    import resource

    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(ratios, indent=1))
    out = Path(a.out) if a.out else ROOT / "benchmarks" / "results" / (
        f"splat_render_{jax.default_backend()}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
