"""Synthetic data for tests, benchmarks and robustness studies: perturbed copies of a
problem's values, pose graphs corrupted with random false loop closures."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from ..graph import factors as F
from ..graph import noise as N
from ..graph.problem import Problem

__all__ = ["perturbed_copies", "add_random_loop_closures"]


def perturbed_copies(problem, values, batch: int, sigma: float, seed: int):
    """``batch`` copies of ``values`` moved by ``Exp(noise)``, noise ~ N(0, sigma^2) per tangent entry.

    Every variable is perturbed (fixed ones stay put: ``Problem.retract`` leaves them).
    Returns a dict of ``[batch, count, param_dim]`` arrays.
    """
    total, block = problem.structure.num_blocks, problem.structure.block_dim
    dtype = next(iter(values.values())).dtype
    keys = jax.random.split(jax.random.PRNGKey(seed), batch)
    noise = jax.vmap(lambda k: sigma * jax.random.normal(k, (total, block), dtype))(keys)
    return jax.vmap(lambda d: problem.retract(values, d))(noise)


def add_random_loop_closures(problem: Problem, values: dict, fraction: float = 0.1, *, seed: int = 0, group=None):
    """A copy of a pose graph with random false loop closures appended (for robustness tests).

    ``round(fraction * M)`` between factors are added to between group ``group`` (default:
    the first between group; ``M`` its size): random pairs ``(i, j)`` with ``|i - j| > 1``,
    uniformly random relative poses (rotation uniform on SO(n), translation uniform in a box
    as large as the extent of ``values``), each with the information matrix of a randomly
    chosen real loop closure (a non-odometry factor of the group; any factor if there is
    none). The group's noise must be an ``Information`` model.

    Returns ``(problem, outlier)``: the corrupted problem (same variables and other groups)
    and ``bool[M + added]``, True for the added factors.
    """
    groups = [g for g in problem.factors if isinstance(g.type, F.Between)]
    if group is not None:
        groups = [g for g in groups if g.name == group]
    if not groups:
        raise ValueError("add_random_loop_closures: the problem has no between factor group" + (f" {group!r}" if group else ""))
    g = groups[0]
    if not isinstance(g.noise, N.Information):
        raise TypeError(f"add_random_loop_closures: group {g.name!r} needs an Information noise model")
    var = g.variables[0]
    kind = problem.structure.kinds[var]
    n = next(v.count for v in problem.variables if v.name == var)
    rng = np.random.default_rng(seed)
    M = g.count
    k = int(round(fraction * M))
    idx = g.indices.array
    i = rng.integers(0, n, size=4 * k + 16)
    j = rng.integers(0, n, size=4 * k + 16)
    ok = np.abs(i - j) > 1
    i, j = i[ok][:k], j[ok][:k]
    if i.size < k:
        raise ValueError("add_random_loop_closures: the graph is too small for the requested outliers")
    meas = kind.random_rows(rng, k, np.asarray(values[var], np.float64))
    info = np.broadcast_to(np.asarray(g.noise.matrix, np.float64), (M, kind.tangent_dim, kind.tangent_dim))
    loops = np.nonzero(np.abs(idx[:, 0] - idx[:, 1]) != 1)[0]
    pool = loops if loops.size else np.arange(M)
    src = pool[rng.integers(0, pool.size, size=k)]
    dtype = jnp.result_type(g.measurement)
    new = F.between(
        var,
        np.concatenate([idx[:, 0], i]),
        np.concatenate([idx[:, 1], j]),
        jnp.asarray(np.concatenate([np.asarray(g.measurement, np.float64), meas]), dtype),
        N.Information(jnp.asarray(np.concatenate([info, info[src]]), dtype)),
        robust=g.robust,
        name=g.name,
    )
    fs = [new if f is g else f for f in problem.factors]
    corrupted = Problem(problem.variables, fs, anchor=False, metadata=problem.metadata)
    return corrupted, np.concatenate([np.zeros(M, bool), np.ones(k, bool)])


def _angle_axis_to_matrix(w):
    """Rodrigues: rotation matrices ``[n, 3, 3]`` of angle-axis vectors ``[n, 3]`` (numpy)."""
    w = np.asarray(w, np.float64)
    theta = np.linalg.norm(w, axis=-1)[:, None, None]
    small = theta < 1e-12
    k = w[:, :, None] / np.where(small, 1.0, theta)
    K = np.zeros((len(w), 3, 3))
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -k[:, 2, 0], k[:, 1, 0], -k[:, 0, 0]
    K = K - np.transpose(K, (0, 2, 1))
    R = np.eye(3) + np.sin(theta) * K + (1 - np.cos(theta)) * (K @ K)
    return np.where(small, np.eye(3), R)


def _matrix_to_angle_axis(R):
    """Angle-axis vectors ``[n, 3]`` of rotation matrices ``[n, 3, 3]`` (angles in [0, pi])."""
    out = np.zeros((len(R), 3))
    for i, m in enumerate(np.asarray(R, np.float64)):
        c = np.clip((np.trace(m) - 1) / 2, -1.0, 1.0)
        theta = np.arccos(c)
        v = np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]])
        if np.sin(theta) > 1e-6:
            out[i] = theta * v / (2 * np.sin(theta))
        elif theta < 1.0:
            out[i] = v / 2
        else:  # near pi: the axis is the dominant column of (R + I) / 2
            b = (m + np.eye(3)) / 2
            j = int(np.argmax(np.diag(b)))
            axis = b[:, j] / np.sqrt(b[j, j])
            out[i] = theta * axis * (np.sign(axis @ v) or 1.0)
    return out


def snavely_project(cameras, points, camera_index, point_index):
    """Snavely (BAL / Bundler) projection of ``points[point_index]`` by ``cameras[camera_index]``.

    A camera row is ``(w[3], t[3], f, k1, k2)``: world-to-camera ``x_c = R(w) X + t`` with
    ``R(w)`` the rotation of angle-axis ``w``, the camera looking down ``-z``,
    ``p = -x_c[:2] / x_c[2]``, pixel ``f (1 + k1 |p|^2 + k2 |p|^4) p`` (origin at the image
    centre). Returns ``(uv [K, 2], depth [K])`` with ``depth = -x_c[2]`` (> 0 in front).
    """
    cam = np.asarray(cameras, np.float64)[camera_index]
    X = np.asarray(points, np.float64)[point_index]
    xc = np.einsum("kij,kj->ki", _angle_axis_to_matrix(cam[:, :3]), X) + cam[:, 3:6]
    p = -xc[:, :2] / xc[:, 2:3]
    r2 = np.sum(p * p, axis=1, keepdims=True)
    d = 1 + cam[:, 7:8] * r2 + cam[:, 8:9] * r2 * r2
    return cam[:, 6:7] * d * p, -xc[:, 2]


def _write_bal_text(path, cameras, points, camera_index, point_index, observations):
    """The BAL text format: ``ncams npts nobs``, ``cam pt u v`` lines, then 9 numbers per
    camera and 3 per point, one number a line (as the BAL files are written); ``%.17g``."""
    lines = [f"{len(cameras)} {len(points)} {len(observations)}"]
    lines += [f"{c} {p} {u!r} {v!r}" for c, p, (u, v) in
              zip(camera_index.tolist(), point_index.tolist(), observations.tolist())]
    lines += [repr(x) for x in np.asarray(cameras, np.float64).ravel().tolist()]
    lines += [repr(x) for x in np.asarray(points, np.float64).ravel().tolist()]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def _f32(a):
    """``a`` rounded to float32, held as float64."""
    return np.asarray(np.asarray(a, np.float32), np.float64)


def synthetic_bal(num_cameras: int = 40, num_points: int = 8000, *, radius: float = 10.0,
                  box=(8.0, 8.0, 0.5), camera_height: float = 0.5, focal: float = 4000.0,
                  image_size=(640, 480), min_depth: float = 1.0, noise_px: float = 0.5,
                  rotation_sigma: float = 1e-3, translation_sigma: float = 1e-2,
                  point_sigma: float = 1e-2, focal_rel_sigma: float = 1e-3, seed: int = 0,
                  path=None) -> dict:
    """A synthetic bundle-adjustment problem in the BAL camera convention (for benchmarks).

    Scene: ``num_cameras`` cameras evenly spaced on a horizontal ring of ``radius`` at height
    ``camera_height`` (z up), each looking at the origin (image x axis horizontal); points
    uniform in the box ``|x| < box[0], |y| < box[1], |z| < box[2]``. Cameras are
    ``(angle-axis w, t, f, k1, k2)`` as in :func:`snavely_project`: ``f = focal (1 + 0.02 n)``,
    ``k1 = -0.1 + 0.01 n``, ``k2 = 0.05 + 0.005 n`` (``n`` standard normal per camera).
    Camera ``c`` observes point ``j`` when the point lies at depth ``> min_depth`` in front of
    it and projects inside the image (``|u| < image_size[0] / 2``, ``|v| < image_size[1] / 2``,
    BAL pixels are centred). Points seen by fewer than 2 cameras are drawn again, so every
    point has >= 2 observations. At the defaults: 33,511 observations (4.19 per point, the
    telephoto field of view of +-4.6 degrees keeps tracks short, as in real collections;
    points near the centre are seen by up to all 40).
    Observations: the exact projection plus N(0, noise_px^2) per pixel coordinate.

    Start (the perturbed initial values a solver begins from): rotations ``R(w) <- R(w)
    Exp(rotation_sigma n)`` (radians, camera frame), ``t <- t + translation_sigma n``,
    ``f <- f (1 + focal_rel_sigma n)``, ``k1, k2`` at their true values, points
    ``X <- X + point_sigma n`` (scene units; the ring radius is 10): with f = 4000 each
    moves a projection by about 4 px.

    Every number of the problem (true and start values, observations) is rounded to float32
    and held as float64, so a reader parsing the BAL text as float (GTSAM's ``FromBalFile``)
    or as double (Ceres' example) gets the same problem. Deterministic in ``seed``.

    Returns a dict of numpy arrays: ``cameras [C, 9]``, ``points [P, 3]`` (true values),
    ``cameras_init``, ``points_init`` (start), ``camera_index [K]``, ``point_index [K]``
    (observations sorted by camera, then point), ``observations [K, 2]`` (noisy, BAL pixel
    coordinates) and ``observations_clean [K, 2]`` (exact projections of the true values, in
    float64). ``path``: also write the problem (start values, noisy observations) as a BAL file.
    """
    rng = np.random.default_rng(seed)
    C = int(num_cameras)
    ang = 2 * np.pi * np.arange(C) / C
    centres = np.stack([radius * np.cos(ang), radius * np.sin(ang), np.full(C, camera_height)], 1)
    z = centres / np.linalg.norm(centres, axis=1, keepdims=True)  # camera +z points away from the origin
    x = np.cross(np.array([0.0, 0.0, 1.0]), z)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    R = np.stack([x, np.cross(z, x), z], 1)  # rows: camera axes in the world
    w = _f32(_matrix_to_angle_axis(R))
    R = _angle_axis_to_matrix(w)
    t = _f32(-np.einsum("kij,kj->ki", R, centres))
    n = rng.standard_normal((C, 3))
    intr = _f32(np.stack([focal * (1 + 0.02 * n[:, 0]), -0.1 + 0.01 * n[:, 1], 0.05 + 0.005 * n[:, 2]], 1))
    cameras = np.concatenate([w, t, intr], 1)

    half = np.asarray(image_size, np.float64) / 2
    box = np.asarray(box, np.float64)
    kept, seen = [], []
    while sum(len(k) for k in kept) < num_points:
        cand = _f32(rng.uniform(-box, box, (max(2 * (num_points - sum(len(k) for k in kept)), 64), 3)))
        ci, pi = np.meshgrid(np.arange(C), np.arange(len(cand)), indexing="ij")
        uv, depth = snavely_project(cameras, cand, ci.ravel(), pi.ravel())
        vis = ((depth > min_depth) & np.all(np.abs(uv) < half, axis=1)).reshape(C, len(cand))
        ok = vis.sum(0) >= 2
        kept.append(cand[ok])
        seen.append(vis[:, ok])
    points = np.concatenate(kept)[:num_points]
    vis = np.concatenate(seen, 1)[:, :num_points]
    camera_index, point_index = np.nonzero(vis)  # sorted by camera, then point
    clean, _ = snavely_project(cameras, points, camera_index, point_index)
    observations = _f32(clean + noise_px * rng.standard_normal(clean.shape))

    dR = _angle_axis_to_matrix(rotation_sigma * rng.standard_normal((C, 3)))
    w0 = _matrix_to_angle_axis(_angle_axis_to_matrix(w) @ dR)
    t0 = t + translation_sigma * rng.standard_normal((C, 3))
    f0 = intr[:, :1] * (1 + focal_rel_sigma * rng.standard_normal((C, 1)))
    cameras_init = _f32(np.concatenate([w0, t0, f0, intr[:, 1:]], 1))
    points_init = _f32(points + point_sigma * rng.standard_normal(points.shape))
    out = {
        "cameras": cameras, "points": points, "cameras_init": cameras_init, "points_init": points_init,
        "camera_index": camera_index.astype(np.int64), "point_index": point_index.astype(np.int64),
        "observations": observations, "observations_clean": clean,
    }
    if path is not None:
        _write_bal_text(path, cameras_init, points_init, out["camera_index"], out["point_index"], observations)
    return out
