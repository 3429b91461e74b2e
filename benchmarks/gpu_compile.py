"""Compile the Pallas forward and backward kernels to sm_90 (H100/H200) machine code on a
machine without a GPU, and report each kernel's registers, shared memory and spills; lower
issue 26's programs (pose-opt training step, ``splat.localize``'s solve) for CUDA as well.

Pipeline, all on the CPU:
1. Each program is lowered for the "cuda" platform
   (``.trace(...).lower(lowering_platforms=("cuda",))``) while ``jax.default_backend()``
   reports "gpu" (:func:`traced_as_gpu`): the code chooses its GPU path from that at trace
   time (the Pallas kernels compiled, not interpreted; jaxgraph's device-side choices), so
   the lowered program is the one a GPU process would build. A hook on
   ``lower_jaxpr_to_triton_module`` keeps each kernel's Triton IR (``tt`` dialect, text)
   and the lowered module gives its ``num_warps``/``num_stages`` and every custom-call
   target (host callbacks among them are reported: they would leave the device).
2. Triton's own compiler (``pip install triton``, tested with 3.5.0 and 3.6.0) compiles
   that IR for ``GPUTarget("cuda", 90, 32)``: TTIR -> TTGIR -> LLVM IR -> PTX -> cubin,
   with the ptxas shipped in the wheel. No driver is needed when the target is given.
3. ``ptxas -v`` on the PTX reports registers, spill stores/loads and static shared
   memory; Triton's metadata gives the dynamic shared memory it will request.

The kernels are specialised to the static shapes of the call (tile size, channel count,
intersection capacity, a vmapped batch), so each program is compiled at one size:

- ``train_step_rgb`` / ``render_rgbd_2cams``: ``jax.jit(grad(loss))`` of
  ``splat.rasterization`` (1 camera RGB; 2 cameras RGB+D);
- ``train_step_pose_opt``: the jit-compiled step of ``splat.train.Trainer`` with
  ``pose_opt=True`` on the bundled demo scene;
- ``localize_reverse`` / ``localize_forward``: one pyramid level of ``splat.localize``
  (``splat.tracking.localize.solve_level``: the jaxgraph LM solve with its photometric
  factor) under ``jax.jit``, Jacobian by reverse passes through the Pallas kernels or by
  forward tangents through the Pallas tangent kernel.

The rest of each program (XLA's own GPU code: the solver's loop and linear algebra) is only lowered, not compiled: XLA's GPU compiler is not in
the CPU jaxlib. Each kernel's result, or the exact error, is printed and written to
benchmarks/results/gpu_compile.json.

Usage: python3 benchmarks/gpu_compile.py [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_info  # noqa: E402
import splat  # noqa: E402

ARCH = 90
RASTER_CONFIGS = {
    # name: (cameras, Gaussians, width, height, render_mode, isect_capacity)
    "train_step_rgb": (1, 2000, 240, 135, "RGB", 16384),
    "render_rgbd_2cams": (2, 2000, 240, 135, "RGB+D", 32768),
}
# custom-call targets that run on the host, not the device: JAX's Python callbacks, CPU
# LAPACK and jaxgraph's named XLA:CPU host calls (jaxgraph.runtime.host_call)
HOST_TARGET = re.compile(r"callback|^lapack_|^jaxgraph_")
TRITON_TARGET = "__gpu$xla.gpu.triton"


@contextlib.contextmanager
def traced_as_gpu():
    """Trace as a GPU process would: ``jax.default_backend()`` reports "gpu" inside.

    JAX's trace caches do not key on that answer, so they are cleared on entry (a trace
    made for the CPU, with interpreted kernels, is not reused) and on exit (the GPU trace
    is not run on the CPU later in the process).
    """
    real = jax.default_backend
    jax.clear_caches()
    jax.default_backend = lambda: "gpu"
    try:
        yield
    finally:
        jax.default_backend = real
        jax.clear_caches()


def _scene(c, n, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
    quats = rng.normal(size=(n, 4)).astype(np.float32)
    scales = rng.uniform(0.02, 0.1, (n, 3)).astype(np.float32)
    opac = rng.uniform(0.2, 0.9, (n,)).astype(np.float32)
    colors = rng.uniform(0, 1, (n, 3)).astype(np.float32)
    vms = np.tile(np.eye(4, dtype=np.float32), (c, 1, 1))
    vms[:, 2, 3] = 3.0
    ks = np.tile(np.array([[200, 0, 120], [0, 200, 67], [0, 0, 1]], np.float32), (c, 1, 1))
    return (means, quats, scales, opac, colors), vms, ks


def lower_rasterizer_grad(cameras, gaussians, width, height, render_mode, isect_capacity):
    """``jax.jit(grad(loss))`` of ``splat.rasterization`` (compiled kernels), lowered for
    CUDA: a jax Lowered."""
    params, vms, ks = _scene(cameras, gaussians)

    def loss(params, probes):
        img, alpha, _ = splat.rasterization(
            *params, vms, ks, width, height, render_mode=render_mode, interpret=False,
            isect_capacity=isect_capacity, means2d_probe=probes[0], absgrad_probe=probes[1])
        return jnp.sum(img) + jnp.sum(alpha)

    zeros = jnp.zeros((cameras, gaussians, 2), jnp.float32)
    with traced_as_gpu():
        return jax.jit(jax.grad(loss, argnums=(0, 1))).trace(
            tuple(map(jnp.asarray, params)), (zeros, zeros)).lower(lowering_platforms=("cuda",))


def lower_train_step_pose_opt(downscale=1, capacity=8192):
    """The training step ``Trainer.step`` runs with ``pose_opt=True`` (default strategy,
    SH degree 3) on the bundled demo scene at ``downscale``, lowered for CUDA."""
    from splat.datasets import DEMO_SCENE, load_npz
    from splat.train import TrainConfig, Trainer

    scene = load_npz(DEMO_SCENE, downscale=downscale)
    trainer = Trainer(scene, TrainConfig(steps=1000, capacity=capacity, pose_opt=True))
    state = trainer.init_state()
    with traced_as_gpu():
        return trainer._step.trace(state, trainer.images, trainer.viewmats, trainer.Ks).lower(
            lowering_platforms=("cuda",))


def lower_localize(jacobian, downscale=2, n_gaussians=3000):
    """One level of ``splat.localize`` (its LM solve, 30 trials) for a model of
    ``n_gaussians`` initialised from the demo scene's points (SH degree 3) and a view of the
    demo scene at ``downscale``, under ``jax.jit`` over model, image, K and start; lowered
    for CUDA."""
    from jaxgraph import lie
    from splat.datasets import DEMO_SCENE, load_npz
    from splat.tracking.localize import solve_level
    from splat.train import TrainConfig
    from splat.train.state import init_params

    scene = load_npz(DEMO_SCENE, downscale=downscale)
    cfg = TrainConfig(capacity=min(n_gaussians, len(scene.points)))
    params, _ = init_params(scene.points, scene.point_colors, cfg)
    view = scene.test_idx[0]
    image = jnp.asarray(scene.images[view], jnp.float32) / 255
    row = lie.SE3.from_matrix(jnp.asarray(scene.viewmats[view], jnp.float32)).parameters()

    def level(params, image, K, row):
        return solve_level(params, cfg, image, K, row, robust=None, noise_sigma=1 / 255,
                           jacobian=jacobian, settings=dict(max_iterations=30))

    with traced_as_gpu():
        return jax.jit(level).trace(params, image, jnp.asarray(scene.Ks[view], jnp.float32),
                                    row).lower(lowering_platforms=("cuda",))


# issue 26's programs: name -> (lowering function, its keyword arguments)
POSE_CONFIGS = {
    "train_step_pose_opt": (lower_train_step_pose_opt, dict(downscale=1, capacity=8192)),  # 162x105
    "localize_reverse": (lower_localize, dict(jacobian="reverse", downscale=2, n_gaussians=3000)),
    "localize_forward": (lower_localize, dict(jacobian="forward", downscale=2, n_gaussians=3000)),
}


def custom_call_targets(text: str) -> list:
    """The distinct custom-call targets of a lowered module's text, sorted."""
    return sorted(set(re.findall(r"custom_call @([\w$.]+)\(", text)))


def host_targets(targets) -> list:
    """Those of ``targets`` that run on the host (:data:`HOST_TARGET`)."""
    return [t for t in targets if HOST_TARGET.search(t)]


def lower_kernels(lower):
    """Run ``lower()`` (returns a jax Lowered) keeping each Pallas kernel's Triton IR.

    Returns (list of Triton IR texts in lowering order, list of (num_warps, num_stages),
    the lowered module's text).
    """
    from jax._src.pallas.triton import lowering, pallas_call_registration as reg

    captured = []
    orig = lowering.lower_jaxpr_to_triton_module

    def hook(*args, **kwargs):
        res = orig(*args, **kwargs)
        captured.append(res.module.operation.get_asm(enable_debug_info=False))
        return res

    reg.lowering.lower_jaxpr_to_triton_module = hook
    try:
        text = lower().as_text()
    finally:
        reg.lowering.lower_jaxpr_to_triton_module = orig
    calls = re.findall(r"custom_call @__gpu\$xla\.gpu\.triton\(.*", text)
    launch = []
    for line in calls:
        nw = re.search(r"num_warps = (\d+)", line)
        ns = re.search(r"num_stages = (\d+)", line)
        launch.append((int(nw.group(1)) if nw else 4, int(ns.group(1)) if ns else 3))
    if len(launch) != len(captured):
        raise RuntimeError(f"{len(captured)} Triton modules but {len(launch)} custom calls")
    return captured, launch, text


def kernel_name(ttir: str) -> str:
    m = re.search(r"tt\.func public @(\w+)", ttir)
    return m.group(1) if m else "?"


def ptxas_report(ptxas: str, ptx: str) -> dict:
    """Registers, spills and static shared memory from ``ptxas -v`` for sm_90a."""
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "k.ptx"
        src.write_text(ptx)
        out = subprocess.run([ptxas, "-v", f"-arch=sm_{ARCH}a", str(src), "-o",
                              str(Path(d) / "k.cubin")], capture_output=True, text=True)
    log = out.stdout + out.stderr
    if out.returncode != 0:
        return dict(ptxas_error=log.strip())

    def num(pattern):
        m = re.search(pattern, log)
        return int(m.group(1)) if m else None

    return dict(registers=num(r"Used (\d+) registers"),
                spill_stores_bytes=num(r"(\d+) bytes spill stores"),
                spill_loads_bytes=num(r"(\d+) bytes spill loads"),
                stack_frame_bytes=num(r"(\d+) bytes stack frame"),
                static_smem_bytes=num(r"(\d+) bytes smem") or 0,
                ptxas_log=log.strip())


def ptxas_path() -> str:
    """The ptxas shipped in the Triton wheel for sm_90 (Triton >= 3.6 picks it by arch)."""
    import inspect

    from triton.backends.nvidia.compiler import get_ptxas

    return (get_ptxas(ARCH) if inspect.signature(get_ptxas).parameters else get_ptxas()).path


def compile_kernel(ttir: str, num_warps: int, num_stages: int) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "kernel.ttir"
        path.write_text(ttir)
        t0 = time.perf_counter()
        try:
            k = triton.compile(str(path), target=GPUTarget("cuda", ARCH, 32),
                               options=dict(num_warps=num_warps, num_stages=num_stages))
        except Exception as e:  # the compiler's own message is the result
            return dict(ok=False, error=f"{type(e).__name__}: {e}")
        secs = time.perf_counter() - t0
    res = dict(ok=True, compile_seconds=secs, num_warps=num_warps, num_stages=num_stages,
               triton_shared_bytes=int(k.metadata.shared), cubin_bytes=len(k.asm["cubin"]),
               ptx_lines=k.asm["ptx"].count("\n"))
    res.update(ptxas_report(ptxas_path(), k.asm["ptx"]))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_compile.json"))
    args = ap.parse_args()
    out = dict(benchmark="gpu_compile", machine=machine_info(), target=f"sm_{ARCH}",
               jax=jax.__version__, configs={})
    try:
        import triton
        out["triton"] = triton.__version__
        out["ptxas"] = subprocess.run([ptxas_path(), "--version"], capture_output=True,
                                      text=True).stdout.strip().splitlines()[-1]
    except Exception as e:
        out["error"] = (f"Triton's compiler is not importable ({type(e).__name__}: {e}); "
                        "install it with `pip install triton==3.5.0` (the gpu-compile "
                        "extra; ships ptxas)")
        print(out["error"])
    jobs = {name: (dict(zip(("cameras", "gaussians", "width", "height", "render_mode",
                             "isect_capacity"), cfg)), lambda cfg=cfg: lower_rasterizer_grad(*cfg))
            for name, cfg in RASTER_CONFIGS.items()}
    jobs.update({name: (kw, lambda fn=fn, kw=kw: fn(**kw))
                 for name, (fn, kw) in POSE_CONFIGS.items()})
    rows = []
    for name, (shape, lower) in jobs.items():
        entry = dict(shape=shape, kernels=[])
        out["configs"][name] = entry
        t0 = time.perf_counter()
        try:
            irs, launch, text = lower_kernels(lower)
        except Exception as e:  # the exact error is the result
            entry["lowering_error"] = f"{type(e).__name__}: {e}"
            print(f"{name}: lowering for cuda failed: {entry['lowering_error']}")
            continue
        targets = custom_call_targets(text)
        entry.update(lowering_seconds=time.perf_counter() - t0, triton_calls=len(irs),
                     custom_call_targets=targets,
                     host_targets=host_targets(targets))
        print(f"{name}: lowered for cuda in {entry['lowering_seconds']:.1f} s, {len(irs)} "
              f"Triton kernel(s), custom calls {targets}, host calls {entry['host_targets']}")
        for ttir, (nw, ns) in zip(irs, launch):
            kname = kernel_name(ttir)
            res = dict(kernel=kname)
            if "error" not in out:
                res.update(compile_kernel(ttir, nw, ns))
            entry["kernels"].append(res)
            rows.append((name, kname, res))
    print(f"{'config':20s} {'kernel':18s} {'regs':>5s} {'spill st/ld (B)':>16s} "
          f"{'smem triton/static (B)':>23s} {'cubin (B)':>10s}")
    for name, kname, r in rows:
        if not r.get("ok"):
            print(f"{name:20s} {kname:18s} ERROR: {r.get('error', out.get('error'))}")
            continue
        if "ptxas_error" in r:
            print(f"{name:20s} {kname:18s} ptxas ERROR: {r['ptxas_error']}")
            continue
        print(f"{name:20s} {kname:18s} {r['registers']:>5d} "
              f"{r['spill_stores_bytes']:>7d}/{r['spill_loads_bytes']:<8d} "
              f"{r['triton_shared_bytes']:>11d}/{r['static_smem_bytes']:<11d} "
              f"{r['cubin_bytes']:>10d}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print("->", args.out)


if __name__ == "__main__":
    main()
