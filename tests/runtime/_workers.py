"""What the runtime tests' worker processes share: the trace counter their scripts start with
(JAX's own event for each function traced, so a program loaded from disk counts 0), and
running a script in a fresh process without the suite's cache settings."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_CACHE_ENV = ("JAXGRAPH_NO_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR", "JAX_COMPILATION_CACHE_MAX_SIZE")


def trace_counter(*names: str) -> str:
    """Script lines (after ``import jax``) that append to ``traces`` the name of every function
    in ``names`` that JAX traces in the worker."""
    return (
        "traces = []\n"
        "jax.monitoring.register_event_duration_secs_listener(\n"
        "    lambda event, duration, fun_name=None, **_: traces.append(fun_name)\n"
        f"    if event == '/jax/core/compile/jaxpr_trace_duration' and fun_name in {names!r} else None)\n"
    )


def run_worker(script: str, *args, env_extra=None, timeout=600) -> dict:
    """Run ``script`` with ``args`` (as strings) in a new Python process, the repository first
    on its path and the persistent-cache variables of the suite removed (plus ``env_extra``);
    its one ``RESULT`` line as a dict. Fails with the end of its stderr when it fails."""
    env = {k: v for k, v in os.environ.items() if k not in _CACHE_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(env_extra or {})
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(line[len("RESULT "):])
