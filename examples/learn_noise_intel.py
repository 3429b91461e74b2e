"""Learn the noise of odometry and loop closures from ground truth, on the Intel lab graph.

A Theseus user knows this one as "learning cost weights": the pose graph's factors are fixed
in form, their weights are parameters, and the loss compares the *solved* trajectory with
ground truth. Here the graph is the Intel Research Lab's (``jaxgraph/data/intel.g2o``): its
edges (odometry ``j = i + 1`` and loop closures) on the first ``num_poses`` poses. Ground
truth is the graph's own optimum; the measurements are simulated from it with precise
odometry and poor loop closures (``TRUE_SIGMAS``), and the solver starts out believing both
equally (every sigma 0.1). We learn ``log sigma`` per group and per component (x, y, theta):

    loss(s) = mean_k |t_k(s) - t_k^true|^2,   t(s) = translations of solve(problem(sigmas = exp(s)))

with gradients through ``jaxgraph.solve(..., backward="implicit")``. The gradient step is
``jaxgraph.runtime.jit(jax.value_and_grad(loss))``: jaxgraph's compiler options, and with
``--cache DIR`` the compiled step is kept on disk so that the next run loads it instead of
compiling (the optax update is a separate, tiny ``jax.jit``: an optax optimizer object is not
something the executable cache's key can write out).

    python examples/learn_noise_intel.py [--steps 40] [--poses 400] [--cache DIR] [--out noise_intel.png]

``examples/noise_intel.png`` is the loss curve of the default run (40 steps, 400 poses: the mean
squared position error falls from 0.41 to 0.017 m^2; learned translation sigmas of the loop
closures 4x those of the odometry, theta 7.6x; simulated 20x and 25x).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

jax.config.update("jax_enable_x64", True)

import jaxgraph  # noqa: E402
import jaxgraph.runtime  # noqa: E402
from jaxgraph import factors, noise  # noqa: E402
from jaxgraph.graph import Problem, VariableGroup  # noqa: E402

INTEL = Path(jaxgraph.__file__).resolve().parent / "data" / "intel.g2o"
# standard deviations of the simulated measurements: x, y (m), theta (rad)
TRUE_SIGMAS = {"odometry": np.array([0.01, 0.01, 0.002]), "closures": np.array([0.2, 0.2, 0.05])}
GROUPS = ("odometry", "closures")


def _relative(a, b):
    """``a^-1 b`` for SE(2) poses as (x, y, theta) rows."""
    c, s = np.cos(a[:, 2]), np.sin(a[:, 2])
    dx, dy = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
    dt = np.angle(np.exp(1j * (b[:, 2] - a[:, 2])))
    return np.stack([c * dx + s * dy, -s * dx + c * dy, dt], 1)


def _compose(a, d):
    """``a d`` for SE(2) poses as (x, y, theta) rows."""
    c, s = np.cos(a[:, 2]), np.sin(a[:, 2])
    return np.stack([a[:, 0] + c * d[:, 0] - s * d[:, 1], a[:, 1] + s * d[:, 0] + c * d[:, 1], a[:, 2] + d[:, 2]], 1)


def make_scene(num_poses: int = 400, seed: int = 0):
    """``(problem, initial values, true poses [num_poses, 3])``: intel's edges on its first
    ``num_poses`` poses with simulated measurements, every noise sigma 0.1, a prior on pose 0;
    the initial values are dead reckoning along the odometry."""
    graph, values = jaxgraph.io.read_g2o(INTEL, dtype=jnp.float64)
    truth_full, _ = jaxgraph.solve(graph, values)
    truth = np.asarray(truth_full["poses"])[:num_poses]
    ij = np.asarray(graph.group("edges").indices.array)
    ij = ij[(ij < num_poses).all(1)]
    rng = np.random.default_rng(seed)
    groups, odometry = [], None
    for name, mask in (("odometry", ij[:, 1] == ij[:, 0] + 1), ("closures", ij[:, 1] != ij[:, 0] + 1)):
        i, j = ij[mask, 0], ij[mask, 1]
        z = _relative(truth[i], truth[j]) + rng.normal(size=(len(i), 3)) * TRUE_SIGMAS[name]
        if name == "odometry":
            odometry = dict(zip(i.tolist(), z))
        groups.append(factors.between("poses", i, j, jnp.asarray(z), noise.diagonal(jnp.full((len(i), 3), 0.1)),
                                      name=name))
    groups.append(factors.prior("poses", [0], jnp.asarray(truth[:1]), noise.isotropic(1e-4), name="start"))
    problem = Problem([VariableGroup("poses", "SE2", num_poses)], groups)
    dead = [truth[0]]
    for k in range(num_poses - 1):  # intel's odometry chain is complete: every k -> k + 1 edge exists
        dead.append(_compose(dead[-1][None], odometry[k][None])[0])
    return problem, {"poses": jnp.asarray(np.stack(dead))}, truth


def make_loss(problem, initial, truth):
    """``loss(log_sigmas)``, ``log_sigmas[2, 3]`` (odometry, closures) x (x, y, theta)."""
    target = jnp.asarray(truth[:, :2])

    def loss(log_sigmas):
        p = problem
        for k, name in enumerate(GROUPS):
            g = p.group(name)
            sigmas = jnp.broadcast_to(jnp.exp(log_sigmas[k]), g.measurement.shape)
            p = p.replace_group(name, g.replace(noise=noise.Diagonal(sigmas)))
        values, _ = jaxgraph.solve(p, initial, backward="implicit", max_iterations=30)
        return jnp.mean(jnp.sum((values["poses"][:, :2] - target) ** 2, -1))

    return loss


def train(steps: int = 40, learning_rate: float = 0.15, num_poses: int = 400):
    """``(learned sigmas [2, 3], loss history [steps + 1], seconds of the first step, seconds
    per later step)``."""
    problem, initial, truth = make_scene(num_poses)
    gradient_step = jaxgraph.runtime.jit(jax.value_and_grad(make_loss(problem, initial, truth)))
    optimizer = optax.adam(learning_rate)

    @jax.jit
    def update(params, state, grad):
        updates, state = optimizer.update(grad, state, params)
        return optax.apply_updates(params, updates), state

    params = jnp.full((2, 3), np.log(0.1))
    state = optimizer.init(params)
    history = []
    t0 = time.perf_counter()
    for k in range(steps):
        value, grad = gradient_step(params)
        params, state = update(params, state, grad)
        history.append(float(value))
        if k == 0:
            first, t0 = time.perf_counter() - t0, time.perf_counter()
    per_step = (time.perf_counter() - t0) / max(steps - 1, 1)
    history.append(float(gradient_step(params)[0]))
    return np.exp(np.asarray(params)), np.asarray(history), first, per_step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--poses", type=int, default=400, help="first poses of the Intel graph (at most 1728)")
    parser.add_argument("--cache", default="", help="keep the compiled gradient step in this folder (default: off)")
    parser.add_argument("--out", default="noise_intel.png",
                        help="where to write the loss-curve PNG (default: noise_intel.png in the current folder)")
    args = parser.parse_args(argv)
    folder = Path(args.out).resolve().parent
    if not folder.is_dir():  # said before training, not after
        parser.error(f"--out {args.out}: folder {folder} does not exist")
    if args.cache:
        jaxgraph.enable_compilation_cache(args.cache)
    sigmas, history, first, per_step = train(args.steps, num_poses=args.poses)
    for k, name in enumerate(GROUPS):
        print(f"{name:9s} true sigmas {TRUE_SIGMAS[name]}  learned {np.round(sigmas[k], 4)}")
    print(f"loss {history[0]:.4g} -> {history[-1]:.4g} m^2 in {args.steps} steps "
          f"(first step {first:.2f} s with compilation, then {per_step * 1e3:.1f} ms/step)")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: skipping the plot (pip install matplotlib)")
        return 0
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.semilogy(history)
    ax.set_xlabel("optax step")
    ax.set_ylabel("mean squared position error (m^2)")
    ax.set_title(f"Learning noise sigmas on intel ({args.poses} poses)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
