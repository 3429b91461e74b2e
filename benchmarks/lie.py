"""Batched Lie maps, ours vs jaxlie, forward and forward+backward, in one run.

    python benchmarks/lie.py [--batch 1000000] [--repeats 7] [--dtype float32]

Writes benchmarks/results/lie_<backend>.json. Each function is jit-compiled; timings are the
median of ``repeats`` steady-state calls (after one warm-up), with ``block_until_ready``.
Inputs: random rotations/poses (uniform quaternions, Gaussian translations).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlie

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

from jaxgraph import lie  # noqa: E402


def _time_interleaved(fns: dict, x, repeats: int) -> dict:
    """Median seconds per call of each function, calls interleaved so load drift hits all alike."""
    for fn in fns.values():
        jax.block_until_ready(fn(x))
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(x))
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def _jaxlie_canonical_quaternion(R):
    q = jaxlie.SO3.from_matrix(R).normalize().wxyz
    return jnp.where(q[..., :1] < 0, -q, q)


def _cases():
    """name -> (ours, jaxlie), each a function of one array returning an array."""
    return {
        "so3_log": (lie.so3_log, lambda R: jaxlie.SO3.from_matrix(R).log()),
        "quaternion_from_matrix": (lie.quaternion_from_matrix, lambda R: jaxlie.SO3.from_matrix(R).wxyz),
        # jaxlie returns either sign and does not renormalise; ours promises a unit q with
        # w >= 0. This row gives jaxlie the same output contract.
        "quaternion_from_matrix_same_contract": (lie.quaternion_from_matrix, _jaxlie_canonical_quaternion),
        "se3_log": (lie.se3_log, lambda T: jaxlie.SE3.from_matrix(T).log()),
        # The group classes on their parameters (jaxlie's API on both sides).
        "SE3.log": (lambda P: lie.SE3(P).log(), lambda P: jaxlie.SE3(P).log()),
        "SE3.exp": (lambda xi: lie.SE3.exp(xi).wxyz_xyz, lambda xi: jaxlie.SE3.exp(xi).wxyz_xyz),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.dtype(args.dtype)

    key = jax.random.PRNGKey(0)
    q = jax.random.normal(key, (args.batch, 4), dtype)
    R = lie.matrix_from_quaternion(q)
    t = jax.random.normal(jax.random.PRNGKey(1), (args.batch, 3), dtype)
    T = jnp.zeros((args.batch, 4, 4), dtype).at[:, :3, :3].set(R).at[:, :3, 3].set(t).at[:, 3, 3].set(1.0)
    P = jnp.concatenate([lie.quaternion_from_matrix(R), t], axis=-1)
    xi = jax.random.normal(jax.random.PRNGKey(2), (args.batch, 6), dtype)
    inputs = {
        "so3_log": R, "quaternion_from_matrix": R, "quaternion_from_matrix_same_contract": R, "se3_log": T,
        "SE3.log": P, "SE3.exp": xi,
    }

    load_before = os.getloadavg()
    rows = []
    for name, (ours, theirs) in _cases().items():
        x = inputs[name]
        row = {"function": name}
        for mode in ("forward", "forward+backward"):
            fns = {}
            for who, f in (("ours", ours), ("jaxlie", theirs)):
                if mode == "forward":
                    fns[who] = jax.jit(f)
                else:
                    # A fixed weighted sum, so the backward pass carries a non-trivial cotangent.
                    fns[who] = jax.jit(jax.grad(lambda m, f=f: jnp.sum(f(m) * jnp.arange(1, f(m[:1]).shape[-1] + 1, dtype=m.dtype))))
            timings = _time_interleaved(fns, x, repeats=args.repeats)
            row[mode] = {
                "ours_s": timings["ours"],
                "jaxlie_s": timings["jaxlie"],
                "ratio_ours_over_jaxlie": timings["ours"] / timings["jaxlie"],
            }
            print(f"{name:24s} {mode:17s} ours {timings['ours']*1e3:8.2f} ms  jaxlie {timings['jaxlie']*1e3:8.2f} ms  "
                  f"ratio {timings['ours']/timings['jaxlie']:.3f}", flush=True)
        rows.append(row)

    result = {
        "benchmark": "lie",
        "batch": args.batch,
        "dtype": args.dtype,
        "repeats": args.repeats,
        "statistic": "median seconds per jit-compiled call",
        "jaxlie_version": importlib.metadata.version("jaxlie"),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "machine": machine_info(),
        "results": rows,
    }
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / f"lie_{jax.default_backend()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
