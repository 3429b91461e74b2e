"""Where the compile of ``jit(value_and_grad(loss))`` through the solve goes, per backward mode.

For each graph: the forward solve (``jaxgraph.solver.lower`` + ``.compile()``, the program
``jaxgraph.solve`` runs) and ``jax.jit(jax.value_and_grad(loss))`` for each backward mode,
where ``loss`` is the sum of the optimised translations as a function of every edge
measurement (benchmarks/theseus.py's loss). Each is split into tracing (Python -> jaxpr,
``jit(f).trace``), lowering (jaxpr -> StableHLO) and XLA's compile (HLO passes + LLVM), and
the compiled program's HLO size is recorded. ``--options`` also compiles the user's jit with
jaxgraph's ``COMPILER_OPTIONS`` (what ``jaxgraph.jit`` passes); ``--unoptimised`` with
``UNOPTIMISED_OPTIONS`` (the same without LLVM's optimisation passes, as the compiled GNC
uses), and records each variant's steady time (median of 5 calls of the compiled program),
since what the passes save at compile they may cost at every step.

The machine is shared: every number is the median of ``--repeats`` fresh compiles (JAX's
caches cleared between them), and the load average is recorded. Beside each wall time the
process CPU time of the same phase is recorded (``*_cpu``): XLA compiles on several threads,
so on a loaded machine the wall time waits for cores while the CPU time still counts the
work; compare like with like.

Usage: python benchmarks/backward_compile.py [--files intel,smallGrid3D,sphere2500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "posegraph"
sys.path.insert(0, str(ROOT))
MODES = ("implicit", "unroll", "truncated")


def _phases(jitted, *args, steady=False):
    """(trace, lower, compile) seconds and HLO op count of one fresh compile of ``jitted``;
    with ``steady`` also the median of 5 calls of the compiled program."""
    import jax

    jax.clear_caches()
    t0, c0 = time.perf_counter(), time.process_time()
    traced = jitted.trace(*args)
    t1, c1 = time.perf_counter(), time.process_time()
    lowered = traced.lower()
    t2, c2 = time.perf_counter(), time.process_time()
    compiled = lowered.compile()
    t3, c3 = time.perf_counter(), time.process_time()
    text = compiled.as_text() or ""
    row = {"trace": t1 - t0, "lower": t2 - t1, "compile": t3 - t2, "total": t3 - t0,
           "trace_cpu": c1 - c0, "lower_cpu": c2 - c1, "compile_cpu": c3 - c2, "total_cpu": c3 - c0,
           "hlo_lines": text.count("\n")}
    if steady:
        times = []
        for _ in range(6):  # the first call is a warm-up
            s0 = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            times.append(time.perf_counter() - s0)
        row["steady"] = statistics.median(times[1:])
    return row


def _median(rows):
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def measure(stem, repeats, modes, options, unoptimised=False):
    import jax
    import jax.numpy as jnp

    import jaxgraph
    import jaxgraph.solver
    from jaxgraph.runtime.compile_cache import COMPILER_OPTIONS, UNOPTIMISED_OPTIONS

    problem, values = jaxgraph.io.read_g2o(DATA / f"{stem}.g2o", dtype=jnp.float64)
    g = problem.group("edges")
    three = problem.variables[0].kind == "SE3"
    trans = (lambda P: P[:, 4:7]) if three else (lambda P: P[:, :2])

    def forward():
        lowered, _ = jaxgraph.solver.lower(problem, values)
        return lowered

    out = {}
    rows = []
    for _ in range(repeats):
        jax.clear_caches()
        t0, c0 = time.perf_counter(), time.process_time()
        lowered = forward()
        t1, c1 = time.perf_counter(), time.process_time()
        compiled = lowered.compile()
        t2, c2 = time.perf_counter(), time.process_time()
        rows.append({"trace_and_lower": t1 - t0, "compile": t2 - t1, "total": t2 - t0,
                     "trace_and_lower_cpu": c1 - c0, "compile_cpu": c2 - c1, "total_cpu": c2 - c0,
                     "hlo_lines": (compiled.as_text() or "").count("\n")})
    out["forward"] = _median(rows)
    print(f"  forward {out['forward']}", flush=True)
    for mode in modes:
        def loss(meas, mode=mode):
            p = problem.replace_group("edges", g.replace(measurement=meas))
            x, _ = jaxgraph.solve(p, values, backward=mode)
            return jnp.sum(trans(x["poses"]))

        variants = {"": jax.jit(jax.value_and_grad(loss))}
        if options:
            variants["+options"] = jax.jit(jax.value_and_grad(loss), compiler_options=COMPILER_OPTIONS)
        if unoptimised:
            variants["+unoptimised"] = jax.jit(jax.value_and_grad(loss), compiler_options=UNOPTIMISED_OPTIONS)
        for suffix, f in variants.items():
            out[mode + suffix] = _median([_phases(f, g.measurement, steady=unoptimised) for _ in range(repeats)])
            print(f"  {mode + suffix} {out[mode + suffix]}", flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", default="intel,smallGrid3D,sphere2500")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--options", action="store_true", help="also compile the user's jit with COMPILER_OPTIONS")
    ap.add_argument("--unoptimised", action="store_true",
                    help="also compile the user's jit with UNOPTIMISED_OPTIONS; record steady times")
    ap.add_argument("--out", default="", help="output JSON (default: print only)")
    args = ap.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    from _machine import machine_info

    results = {}
    for stem in args.files.split(","):
        print(f"== {stem} (load {os.getloadavg()})", flush=True)
        results[stem] = {"load_average_1_5_15min": os.getloadavg(),
                         **measure(stem, args.repeats, args.modes.split(","), args.options, args.unoptimised)}
    doc = {"benchmark": "backward_compile", "machine": {**machine_info(), "load_average_1_5_15min": os.getloadavg()},
           "settings": {"repeats": args.repeats, "dtype": "float64",
                        "loss": "sum of optimised translations; gradient w.r.t. all edge measurements"},
           "results": results}
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
