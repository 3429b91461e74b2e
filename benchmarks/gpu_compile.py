"""Compile the Pallas forward and backward kernels to sm_90 (H100/H200) machine code on a
machine without a GPU, and report each kernel's registers, shared memory and spills.

Pipeline, all on the CPU:
1. ``jax.jit(grad(loss)).trace(...).lower(lowering_platforms=("cuda",))`` runs the
   Pallas-Triton lowering of both kernels (``interpret=False``); a hook on
   ``lower_jaxpr_to_triton_module`` keeps each kernel's Triton IR (``tt`` dialect, text)
   and the lowered module gives its ``num_warps``/``num_stages``.
2. Triton's own compiler (``pip install triton``, tested with 3.5.0) compiles that IR
   for ``GPUTarget("cuda", 90, 32)``: TTIR -> TTGIR -> LLVM IR -> PTX -> cubin, with the
   ptxas shipped in the wheel. No driver is needed when the target is given.
3. ``ptxas -v`` on the PTX reports registers, spill stores/loads and static shared
   memory; Triton's metadata gives the dynamic shared memory it will request.

The kernels are specialised to the static shapes of the call (tile size, channel count,
intersection capacity), so two configurations are compiled: a training step (1 camera,
RGB) and a render with depth (2 cameras, RGB+D). Each kernel's result, or the exact
compiler error, is printed and written to benchmarks/results/gpu_compile.json.

Usage: python3 benchmarks/gpu_compile.py [--out FILE]
"""

from __future__ import annotations

import argparse
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
CONFIGS = {
    # name: (cameras, Gaussians, width, height, render_mode, isect_capacity)
    "train_step_rgb": (1, 2000, 240, 135, "RGB", 16384),
    "render_rgbd_2cams": (2, 2000, 240, 135, "RGB+D", 32768),
}


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


def lower_kernels(cfg):
    """(list of Triton IR texts in lowering order, list of (num_warps, num_stages))."""
    from jax._src.pallas.triton import lowering, pallas_call_registration as reg

    c, n, w, h, mode, cap = cfg
    params, vms, ks = _scene(c, n)
    captured = []
    orig = lowering.lower_jaxpr_to_triton_module

    def hook(*args, **kwargs):
        res = orig(*args, **kwargs)
        captured.append(res.module.operation.get_asm(enable_debug_info=False))
        return res

    def loss(params, probes):
        img, alpha, _ = splat.rasterization(
            *params, vms, ks, w, h, render_mode=mode, interpret=False, isect_capacity=cap,
            means2d_probe=probes[0], absgrad_probe=probes[1])
        return jnp.sum(img) + jnp.sum(alpha)

    zeros = jnp.zeros((c, n, 2), jnp.float32)
    reg.lowering.lower_jaxpr_to_triton_module = hook
    try:
        lowered = jax.jit(jax.grad(loss, argnums=(0, 1))).trace(
            tuple(map(jnp.asarray, params)), (zeros, zeros)).lower(
                lowering_platforms=("cuda",))
    finally:
        reg.lowering.lower_jaxpr_to_triton_module = orig
    text = lowered.as_text()
    calls = re.findall(r"custom_call @__gpu\$xla\.gpu\.triton\(.*", text)
    launch = []
    for line in calls:
        nw = re.search(r"num_warps = (\d+)", line)
        ns = re.search(r"num_stages = (\d+)", line)
        launch.append((int(nw.group(1)) if nw else 4, int(ns.group(1)) if ns else 3))
    if len(launch) != len(captured):
        raise RuntimeError(f"{len(captured)} Triton modules but {len(launch)} custom calls")
    return captured, launch


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


def compile_kernel(ttir: str, num_warps: int, num_stages: int) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas

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
    res.update(ptxas_report(get_ptxas().path, k.asm["ptx"]))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_compile.json"))
    args = ap.parse_args()
    out = dict(benchmark="gpu_compile", machine=machine_info(), target=f"sm_{ARCH}",
               jax=jax.__version__, configs={})
    try:
        import triton
        from triton.backends.nvidia.compiler import get_ptxas
        out["triton"] = triton.__version__
        out["ptxas"] = subprocess.run([get_ptxas().path, "--version"], capture_output=True,
                                      text=True).stdout.strip().splitlines()[-1]
    except Exception as e:
        out["error"] = (f"Triton's compiler is not importable ({type(e).__name__}: {e}); "
                        "install it with `pip install triton==3.5.0` (ships ptxas)")
        print(out["error"])
    rows = []
    for name, cfg in CONFIGS.items():
        entry = dict(shape=dict(zip(("cameras", "gaussians", "width", "height", "render_mode",
                                     "isect_capacity"), cfg)), kernels=[])
        try:
            irs, launch = lower_kernels(cfg)
        except Exception as e:
            entry["lowering_error"] = f"{type(e).__name__}: {e}"
            out["configs"][name] = entry
            print(f"{name}: lowering failed: {entry['lowering_error']}")
            continue
        for ttir, (nw, ns) in zip(irs, launch):
            kname = kernel_name(ttir)
            res = dict(kernel=kname)
            if "error" not in out:
                res.update(compile_kernel(ttir, nw, ns))
            entry["kernels"].append(res)
            rows.append((name, kname, res))
        out["configs"][name] = entry
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
