"""Time the documented ``splat train`` command with every other setting at its default.

Runs ``splat train DATA --out TMP --downscale D --steps S`` in a subprocess (the way a user
runs it), records the wall time, the test PSNR/SSIM from ``metrics.json``, the log lines and
the machine's load average before and after, and writes ``benchmarks/results/<name>.json``.
The issue-12 target for ``--downscale 16 --steps 500`` on fox: under 5 minutes on a 2-core
CPU with a test PSNR of at least 16.7 dB.

Usage: python benchmarks/splat_train_cli.py [--downscale 16] [--steps 500] [--extra "..."]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._machine import machine_info  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "splat" / "fox"), help="scene folder")
    ap.add_argument("--downscale", type=int, default=16, help="image downscale factor (default 16)")
    ap.add_argument("--steps", type=int, default=500, help="training steps (default 500)")
    ap.add_argument("--extra", default="", help="further CLI flags, e.g. '--seed 1' (default none)")
    ap.add_argument("--name", default=None, help="result name (default splat_train_cli_fox_ds<D>_cpu)")
    args = ap.parse_args()
    name = args.name or f"splat_train_cli_fox_ds{args.downscale}_cpu"
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run")
        cmd = [sys.executable, "-m", "splat.cli", "train", args.data, "--out", out,
               "--downscale", str(args.downscale), "--steps", str(args.steps), *shlex.split(args.extra)]
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        load_after = os.getloadavg()
        child = resource.getrusage(resource.RUSAGE_CHILDREN)
        log = [line for line in proc.stdout.splitlines() if line.strip()]
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, sep="\n")
            raise SystemExit(f"splat train exited {proc.returncode}")
        with open(os.path.join(out, "metrics.json")) as f:
            metrics = json.load(f)
    result = {
        "benchmark": "splat_train_cli_default",
        "machine": machine_info(),
        "command": "splat train " + " ".join(shlex.quote(c) for c in cmd[4:]).replace(out, "DIR"),
        "wall_seconds_total": round(wall, 2),
        "cpu_seconds_user_plus_system": round(child.ru_utime + child.ru_stime, 2),
        "max_rss_mb": round(child.ru_maxrss / 1024, 1),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "metrics": {k: v for k, v in metrics.items() if k != "history"},
        "log": log[-12:],
    }
    path = ROOT / "benchmarks" / "results" / f"{name}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    m = result["metrics"]
    print(f"wall {wall:.1f} s, test PSNR {m.get('test_psnr')}, written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
