"""jaxgraph vs Theseus (CPU): forward solve and each backward mode on intel, smallGrid3D, sphere2500.

Same problem for both: the g2o file's edges with their full information matrices (whitening
``chol(Lambda)^T``), the file's initial values, a prior on pose 0 at its initial value with
isotropic sigma 1e-6 (GTSAM's convention), float64, Levenberg-Marquardt with at most 100
iterations and GTSAM's stopping rules (relative or absolute cost decrease below 1e-5).
Differences we cannot remove: Theseus' CHOLMOD solver (``CholmodSparseSolver``, the only
sparse CPU solver of Theseus) supports neither adaptive nor ellipsoidal damping, so Theseus
runs LM with a fixed damping of 1e-5 (GTSAM's initial value) and accepts every step; its
error is ``sum |e|^2`` (twice ours), so its absolute tolerance is 2e-5.

Backward: the loss is the sum of all optimised translations; its gradient with respect to
every edge measurement.  Ours: ``jax.value_and_grad`` of the jitted solve with ``backward``
= implicit / unroll / truncated (10 steps); Theseus: ``TheseusLayer.forward`` + ``backward()``
with ``backward_mode`` = implicit / unroll / truncated (10 steps) / dlm.  Times are steady
state (median of ``--repeats``; ours excludes compilation, reported separately).  Every
Theseus run is a subprocess with a time cap; a capped run is recorded as such.

Differentiated steps differ in ``truncated``: Theseus' gradient loop checks convergence after
each step and stops, so from a converged point it differentiates one step (each Theseus run
records ``differentiated_steps``, the optimizer steps taken with autograd on); ours always
takes ``backward_iterations`` (10) Gauss-Newton steps, whose derivative approaches the implicit
one. ``truncated_1`` is ours with ``backward_iterations=1``, the same differentiated work as
Theseus' truncated run; the speedup ``truncated_equal_steps`` compares those two.

Needs ``pip install torch==2.13.0`` and Theseus (``pip install --no-build-isolation
theseus-ai`` after torch; its dependency scikit-sparse builds from source against
``libsuitesparse-dev`` and Cython < 3.2).  Not a dependency of jaxgraph.

Compile times (issue 25): per mode, the first call of ``jax.jit(jax.value_and_grad(loss))`` less a
steady call (``compile_seconds``), the same through ``jaxgraph.runtime.jit`` (jaxgraph's compiler
options, the program stored in a fresh executable cache: ``compile_seconds_runtime_jit``), and a
new process that loads it from that cache (``warm_process``: its imports and its first step).
``--theseus-json`` reuses Theseus' numbers of an earlier run (recorded as ``theseus_from``).

Usage: python benchmarks/theseus.py [--files intel] [--repeats 3] [--cap 300] [--theseus-json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "posegraph"
sys.path.insert(0, str(ROOT))
FILES = ("intel", "smallGrid3D", "sphere2500")
THESEUS_MODES = ("implicit", "unroll", "truncated", "dlm")
OUR_MODES = ("implicit", "unroll", "truncated")
# ours with one differentiated Gauss-Newton step: the work of Theseus' truncated mode (see above)
EQUAL_STEPS = {"truncated_1": ("truncated", {"backward_iterations": 1})}


def _graph(path):
    """Edges, information matrices and initial values as numpy (our parametrisation)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import jaxgraph

    problem, values = jaxgraph.io.read_g2o(path, dtype=jnp.float64)
    g = problem.group("edges")
    return problem, values, g


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


# ------------------------------------------------------------------------------ ours
def _translations(P, three):
    return P[:, 4:7] if three else P[:, :2]


def make_loss(problem, values, g, mode, extra):
    """The benchmark's loss of the edge measurements through the solve (module level, so that a
    second process builds the same function and ``jaxgraph.runtime.jit`` finds its program)."""
    import jax.numpy as jnp

    import jaxgraph

    three = problem.variables[0].kind == "SE3"

    def loss(meas):
        p = problem.replace_group("edges", g.replace(measurement=meas))
        x, _ = jaxgraph.solve(p, values, backward=mode, **extra)
        return jnp.sum(_translations(x["poses"], three))

    return loss


def _mode_settings(name):
    if name in OUR_MODES:
        return name, {}
    return EQUAL_STEPS[name]


def run_ours(path, repeats, cache=None):
    """Steady and compile times of the forward solve and of each backward mode.

    Per mode: ``compile_seconds``, the first call of ``jax.jit(jax.value_and_grad(loss))``
    less a steady call (the user's plain jit); ``compile_seconds_runtime_jit``, the same
    through ``jaxgraph.runtime.jit`` (jaxgraph's compiler options; stored in the executable
    cache ``cache``); ``warm_process``, a new process that loads that program: seconds of its
    imports and of its first step (the call, not the g2o reading)."""
    import jax
    import jax.numpy as jnp

    import jaxgraph
    import jaxgraph.runtime

    problem, values, g = _graph(path)
    out = {}
    solve = lambda: jax.block_until_ready(jaxgraph.solve(problem, values))  # noqa: E731
    t0 = time.perf_counter()
    solve()
    first = time.perf_counter() - t0
    (sol, info), steady = _median_time(solve, repeats)
    out["forward"] = {"seconds": steady, "compile_seconds": max(first - steady, 0.0),
                      "cost": float(info.cost), "iterations": int(info.iterations)}
    for name in OUR_MODES + tuple(EQUAL_STEPS):
        mode, extra = _mode_settings(name)
        loss = make_loss(problem, values, g, mode, extra)
        f = jax.jit(jax.value_and_grad(loss))
        t0 = time.perf_counter()
        jax.block_until_ready(f(g.measurement))
        first = time.perf_counter() - t0
        (val, grad), steady = _median_time(lambda: jax.block_until_ready(f(g.measurement)), repeats)
        row = {"seconds": steady, "compile_seconds": max(first - steady, 0.0),
               "loss": float(val), "grad_norm": float(jnp.linalg.norm(grad))}
        if cache is not None:
            ff = jaxgraph.runtime.jit(jax.value_and_grad(make_loss(problem, values, g, mode, extra)))
            t0 = time.perf_counter()
            v2, g2 = jax.block_until_ready(ff(g.measurement))
            first = time.perf_counter() - t0
            _, steady2 = _median_time(lambda: jax.block_until_ready(ff(g.measurement)), repeats)
            row["compile_seconds_runtime_jit"] = max(first - steady2, 0.0)
            row["seconds_runtime_jit"] = steady2
            row["runtime_jit_matches"] = bool(np.allclose(np.asarray(g2), np.asarray(grad), rtol=1e-9, atol=1e-9))
            row["warm_process"] = _warm_process(path, name, cache)
        out[name] = row
        print(f"   ours {name} {row}", flush=True)
    return out


def _warm_process(path, name, cache):
    r = subprocess.run([sys.executable, __file__, "--warm-worker", str(path), "--mode", name, "--cache", str(cache)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        return {"skipped": "failed: " + (r.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def warm_worker(path, name, cache):
    """A new process on a warm cache: imports, then the first gradient step (prints JSON)."""
    t0 = time.perf_counter()
    import jax

    import jaxgraph
    import jaxgraph.runtime

    jaxgraph.enable_compilation_cache(cache)
    imports = time.perf_counter() - t0
    problem, values, g = _graph(path)
    mode, extra = _mode_settings(name)
    from jaxgraph.runtime import executable_cache as xc

    loaded = []  # whether the executable cache had the step (a jaxgraph source edited since the
    lookup = xc.lookup  # first process changes the key: then this process compiles it again)
    xc.lookup = lambda *a, **k: loaded.append(lookup(*a, **k)) or loaded[-1]
    step = jaxgraph.runtime.jit(jax.value_and_grad(make_loss(problem, values, g, mode, extra)))
    t0 = time.perf_counter()
    jax.block_until_ready(step(g.measurement))
    first = time.perf_counter() - t0
    _, steady = _median_time(lambda: jax.block_until_ready(step(g.measurement)), 1)
    print(json.dumps({"imports_seconds": imports, "first_step_seconds": first, "steady_seconds": steady,
                      "loaded_from_cache": any(x is not None for x in loaded)}))


def warm_only(args) -> int:
    """``--warm-only``: the first training step of a new process on a warm cache, per graph and
    backward mode; ``starts_after_seconds`` = its first step less its steady step (loading the
    compiled step and its first call's overhead)."""
    import tempfile

    from _machine import machine_info

    out = args.out or str(ROOT / "benchmarks" / "results" / "theseus_warm_cpu.json")
    rows = []
    for stem in args.files.split(","):
        path = DATA / f"{stem}.g2o"
        for name in OUR_MODES:
            load = os.getloadavg()[0]
            cache = tempfile.mkdtemp(prefix="theseus-warm-")
            cold = _warm_process(path, name, cache)  # compiles and stores the step
            warm = [_warm_process(path, name, cache) for _ in range(args.repeats)]
            ok = [w for w in warm if "first_step_seconds" in w]
            row = {"file": path.name, "mode": name, "load_average_1min": load, "cold_process": cold, "warm_processes": warm}
            if ok:
                row["median_first_step_seconds"] = float(np.median([w["first_step_seconds"] for w in ok]))
                row["median_starts_after_seconds"] = float(np.median(
                    [w["first_step_seconds"] - w["steady_seconds"] for w in ok]))
            rows.append(row)
            print(f"   {stem} {name}: first step {row.get('median_first_step_seconds', float('nan')):.3f} s, "
                  f"starts after {row.get('median_starts_after_seconds', float('nan')):.3f} s "
                  f"(cold process {cold.get('first_step_seconds', float('nan')):.2f} s)", flush=True)
    doc = {"benchmark": "theseus --warm-only", "machine": {**machine_info(), "load_average_1_5_15min": os.getloadavg()},
           "settings": {"repeats": args.repeats, "dtype": "float64",
                        "measure": "new process, jaxgraph.enable_compilation_cache(cache), jaxgraph.runtime.jit("
                                   "jax.value_and_grad(loss)): seconds of its first call (after imports and reading "
                                   "the graph) and of a steady call; the cold process compiled it into the cache"},
           "results": rows}
    Path(out).write_text(json.dumps(doc, indent=1) + "\n")
    print("wrote", out)
    return 0


# ------------------------------------------------------------------------------ Theseus
def theseus_worker(path, mode, repeats):
    """One Theseus configuration (runs in a subprocess); prints one JSON line."""
    here = Path(__file__).resolve().parent  # this file is theseus.py: keep it from shadowing the package
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    import theseus as th
    import torch

    torch.set_default_dtype(torch.float64)
    problem, values, g = _graph(path)
    three = problem.variables[0].kind == "SE3"
    P = np.asarray(values["poses"])
    idx = g.indices.array
    W = np.asarray(g.noise.prepare().sqrt_information(6 if three else 3))  # W^T W = Lambda, as ours
    Z = np.asarray(g.measurement)
    if three:  # ours: qw qx qy qz x y z; Theseus: x y z qw qx qy qz
        to_th = lambda a: np.concatenate([a[..., 4:7], a[..., 0:4]], -1)  # noqa: E731
        Group = lambda t, name: th.SE3(x_y_z_quaternion=torch.as_tensor(t)[None], name=name)  # noqa: E731
    else:
        to_th = lambda a: a  # noqa: E731
        Group = lambda t, name: th.SE2(x_y_theta=torch.as_tensor(t)[None], name=name)  # noqa: E731

    class SqrtInformation(th.CostWeight):
        """Full-matrix whitening ``W e`` (Theseus ships only scalar and diagonal weights)."""

        def __init__(self, w, name=None):
            super().__init__(name=name)
            self.w = w if isinstance(w, th.Variable) else th.Variable(torch.as_tensor(w)[None])
            self.register_aux_vars(["w"])

        def is_zero(self):
            return torch.zeros(self.w.tensor.shape[0], dtype=torch.bool)

        def weight_error(self, error):
            return (self.w.tensor @ error[..., None])[..., 0]

        def weight_jacobians_and_error(self, jacobians, error):
            return [self.w.tensor @ J for J in jacobians], self.weight_error(error)

        def _copy_impl(self, new_name=None):
            return SqrtInformation(self.w.copy(), name=new_name)

    poses = [Group(to_th(P[k]), f"x{k}") for k in range(P.shape[0])]
    objective = th.Objective()
    meas = []
    for e in range(idx.shape[0]):
        z = Group(to_th(Z[e]), f"z{e}")
        meas.append(z)
        objective.add(th.Between(poses[idx[e, 0]], poses[idx[e, 1]], z, SqrtInformation(W[e])))
    objective.add(th.Difference(poses[0], Group(to_th(P[0]), "prior0"), th.ScaleCostWeight(1e6)))
    optimizer = th.LevenbergMarquardt(objective, linear_solver_cls=th.CholmodSparseSolver, vectorize=True,
                                      max_iterations=100, abs_err_tolerance=2e-5, rel_err_tolerance=1e-5)
    layer = th.TheseusLayer(optimizer, vectorize=True)
    # count the optimizer steps taken with autograd on (the differentiated ones)
    grad_steps = [0]
    step = optimizer._step

    def counted_step(*a, **k):
        grad_steps[0] += int(torch.is_grad_enabled())
        return step(*a, **k)

    optimizer._step = counted_step
    init = {f"x{k}": poses[k].tensor.clone() for k in range(len(poses))}
    kw = {"damping": 1e-5, "verbose": False}

    def forward():
        with torch.no_grad():
            return layer.forward(dict(init), optimizer_kwargs=kw)

    def backward():
        grad_steps[0] = 0
        zs = {z.name: z.tensor.clone().requires_grad_(True) for z in meas}
        sol, _ = layer.forward({**init, **zs}, optimizer_kwargs={
            **kw, "backward_mode": mode, "backward_num_iterations": 10})
        loss = sum(sol[f"x{k}"][..., :, -1].sum() if three else sol[f"x{k}"][..., :2].sum()
                   for k in range(len(poses)))
        loss.backward()
        return float(loss)

    if mode == "forward":
        (sol, info), seconds = _median_time(forward, repeats)
        # cost of Theseus' answer, by our cost function (x y z qw qx qy qz -> ours)
        X = np.stack([np.asarray(sol[f"x{k}"][0]) for k in range(len(poses))])
        if three:
            from scipy.spatial.transform import Rotation

            R, t = X[:, :, :3], X[:, :, 3]
            q = Rotation.from_matrix(R).as_quat()  # x y z w
            X = np.concatenate([q[:, 3:], q[:, :3], t], 1)
        else:
            X = np.stack([X[:, 0], X[:, 1], np.arctan2(X[:, 3], X[:, 2])], 1)
        import jax.numpy as jnp

        cost = float(problem.cost({"poses": jnp.asarray(X)}))
        print(json.dumps({"seconds": seconds, "cost": cost,
                          "iterations": int(info.converged_iter.max()) if info.converged_iter is not None else None}))
    else:
        loss, seconds = _median_time(backward, repeats)
        print(json.dumps({"seconds": seconds, "loss": loss, "differentiated_steps": grad_steps[0]}))


def run_theseus(path, mode, repeats, cap):
    try:
        r = subprocess.run([sys.executable, __file__, "--theseus-worker", str(path), "--mode", mode,
                            "--repeats", str(repeats)], capture_output=True, text=True, timeout=cap)
    except subprocess.TimeoutExpired:
        return {"skipped": f"exceeded the {cap:.0f} s cap"}
    if r.returncode != 0:
        return {"skipped": "failed: " + (r.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", default=",".join(FILES), help=f"comma-separated stems (default {','.join(FILES)})")
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions (default 3)")
    ap.add_argument("--cap", type=float, default=300.0, help="seconds allowed per Theseus run (default 300)")
    ap.add_argument("--out", default="",
                    help="output JSON (default benchmarks/results/theseus_cpu.json; with --warm-only "
                         "theseus_warm_cpu.json)")
    ap.add_argument("--ours-json", default="",
                    help="reuse our numbers from a JSON file {stem: {mode: ...}} measured earlier in the same "
                         "session instead of running (and compiling) them again (default: run)")
    ap.add_argument("--theseus-json", default="",
                    help="reuse Theseus' numbers from an earlier result JSON of this script (its 'theseus' entries) "
                         "instead of running Theseus again (default: run; recorded as theseus_from)")
    ap.add_argument("--no-warm", action="store_true",
                    help="skip jaxgraph.runtime.jit and the warm-cache second process")
    ap.add_argument("--warm-only", action="store_true",
                    help="only the warm start of each backward mode: per mode one process compiles the step "
                         "into a fresh cache, then --repeats new processes load it (first step, its steady "
                         "time, whether it came from the cache); default out theseus_warm_cpu.json")
    ap.add_argument("--theseus-worker", help=argparse.SUPPRESS)
    ap.add_argument("--warm-worker", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="forward", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.theseus_worker:
        theseus_worker(args.theseus_worker, args.mode, args.repeats)
        return 0
    if args.warm_worker:
        warm_worker(args.warm_worker, args.mode, args.cache)
        return 0
    import tempfile

    if args.warm_only:
        return warm_only(args)
    import jax

    jax.config.update("jax_enable_x64", True)
    import jaxgraph

    cache = None if args.no_warm else Path(tempfile.mkdtemp(prefix="theseus-bench-cache-"))
    if cache is not None:
        jaxgraph.enable_compilation_cache(cache)
    earlier = {}
    if args.theseus_json:
        earlier = {Path(r["file"]).stem: r["theseus"] for r in json.loads(Path(args.theseus_json).read_text())["results"]}
    from _machine import machine_info

    rows = []
    for stem in args.files.split(","):
        path = DATA / f"{stem}.g2o"
        print(f"== {stem} (load {os.getloadavg()[0]:.1f})", flush=True)
        ours = (json.loads(Path(args.ours_json).read_text())[stem] if args.ours_json
                else run_ours(path, args.repeats, cache))
        print("   ours", json.dumps(ours), flush=True)
        if stem in earlier:
            theirs = earlier[stem]
        else:
            theirs = {"forward": run_theseus(path, "forward", args.repeats, args.cap)}
            print("   theseus forward", theirs["forward"], flush=True)
            for mode in THESEUS_MODES:
                theirs[mode] = run_theseus(path, mode, args.repeats, args.cap)
                print(f"   theseus {mode}", theirs[mode], flush=True)
        speedup = {m: theirs[m]["seconds"] / ours[m]["seconds"]
                   for m in ("forward",) + OUR_MODES if "seconds" in theirs.get(m, {})}
        for name, (mode, kw) in EQUAL_STEPS.items():
            if name in ours and theirs.get(mode, {}).get("differentiated_steps") == kw["backward_iterations"]:
                speedup[f"{mode}_equal_steps"] = theirs[mode]["seconds"] / ours[name]["seconds"]
        rows.append({"file": path.name, "load_average_1min": os.getloadavg()[0], "jaxgraph": ours,
                     **({"theseus_from": args.theseus_json} if stem in earlier else {}),
                     "theseus": theirs, "speedup_theseus_over_ours": speedup})
        print("   speedup", speedup, flush=True)
    try:
        from importlib.metadata import version

        versions = {"theseus-ai": version("theseus-ai"), "torch": version("torch")}
    except Exception:  # not installed: the fields are simply absent
        versions = {}
    doc = {"benchmark": "theseus", "machine": {**machine_info(), **versions, "load_average_1_5_15min": os.getloadavg()},
           "settings": {"repeats": args.repeats, "cap_seconds": args.cap, "dtype": "float64",
                        "prior": "pose 0 at its initial value, isotropic sigma 1e-6",
                        "theseus": "LevenbergMarquardt, CholmodSparseSolver, vectorize, damping 1e-5 fixed, "
                                   "max 100 iterations, abs 2e-5 / rel 1e-5",
                        "loss": "sum of optimised translations; gradient w.r.t. all edge measurements",
                        "compile": "compile_seconds: first call less a steady call of jax.jit(jax.value_and_grad("
                                   "loss)); compile_seconds_runtime_jit: the same through jaxgraph.runtime.jit "
                                   "(jaxgraph's compiler options, stored in the executable cache); warm_process: "
                                   "a new process loading that program (imports, first step)",
                        "truncated": "ours: backward_iterations 10 (truncated) and 1 (truncated_1); Theseus: "
                                     "backward_num_iterations 10, its gradient loop stopping at convergence "
                                     "(differentiated_steps)"},
           "results": rows}
    out = Path(args.out or ROOT / "benchmarks" / "results" / "theseus_cpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
