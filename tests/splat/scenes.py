"""Scenes shared by all splat tests: Gaussians and cameras in memory (``random_scene``,
``garden_scene``) and tiny scenes and models written to disk for the loader and CLI tests
(``nerf_scene``, ``colmap_scene``, ``npz_scene``, ``ply_model``)."""

import json
from pathlib import Path

import numpy as np
import pytest

from splat.datasets.scene import look_at
from splat.io import write_ply, write_png

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "splat"


def random_scene(n, n_cams=1, width=32, height=24, seed=0, dtype=np.float32, sh_degree=None,
                 d=3, scale=(0.05, 0.4)):
    """N random Gaussians in front of ``n_cams`` cameras looking at the origin."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(-1, 1, (n, 3))
    quats = rng.normal(size=(n, 4))
    scales = rng.uniform(*scale, (n, 3))
    opac = rng.uniform(0.2, 0.95, (n,))
    if sh_degree is None:
        colors = rng.uniform(0, 1, (n, d))
    else:
        colors = rng.normal(0, 0.4, (n, (sh_degree + 1) ** 2, 3))
    vms, ks = [], []
    for k in range(n_cams):
        ang = 0.35 * k
        eye = (3.5 * np.sin(ang), 0.3 * k, -3.5 * np.cos(ang))
        vms.append(look_at(eye, (0, 0, 0)))
        f = 0.9 * width
        ks.append([[f, 0, width / 2 + 0.3 * k], [0, f * 1.02, height / 2 - 0.2 * k], [0, 0, 1]])
    cast = lambda x: np.asarray(x, dtype)  # noqa: E731
    return dict(means=cast(means), quats=cast(quats), scales=cast(scales), opacities=cast(opac),
                colors=cast(colors), viewmats=cast(vms), Ks=cast(ks), width=width,
                height=height)


def garden_scene(n_points=400, downscale=16, seed=0, dtype=np.float32):
    """Isotropic Gaussians from the garden point cloud, seen by a downscaled camera 0.

    Scale = mean distance to the 3 nearest neighbours among all points (as in 3DGS
    initialisation); only points in front of camera 0 and inside its view are kept,
    a random subset of ``n_points`` of them.
    """
    from scipy.spatial import cKDTree

    path = DATA / "test_garden.npz"
    if not path.exists():
        pytest.skip("shared garden data not found")
    z = np.load(path)
    pts = z["means3d"].astype(np.float64)
    cols = z["colors"].astype(np.float64) / 255.0
    vm = z["viewmats"][0].astype(np.float64)
    k = z["Ks"][0].astype(np.float64).copy()
    w, h = int(z["width"]) // downscale, int(z["height"]) // downscale
    k[:2] /= downscale
    cam = pts @ vm[:3, :3].T + vm[:3, 3]
    uv = cam[:, :2] / np.maximum(cam[:, 2:], 1e-9) * np.diag(k)[:2] + k[:2, 2]
    inside = (cam[:, 2] > 0.1) & (uv[:, 0] > -2) & (uv[:, 0] < w + 2) & (uv[:, 1] > -2) & (uv[:, 1] < h + 2)
    idx = np.flatnonzero(inside)
    rng = np.random.default_rng(seed)
    idx = rng.choice(idx, size=min(n_points, idx.size), replace=False)
    dist, _ = cKDTree(pts).query(pts[idx], k=4)
    scale = np.clip(dist[:, 1:].mean(1), 1e-3, None)
    n = idx.size
    cast = lambda x: np.asarray(x, dtype)  # noqa: E731
    quats = np.zeros((n, 4))
    quats[:, 0] = 1
    return dict(means=cast(pts[idx]), quats=cast(quats), scales=cast(np.repeat(scale[:, None], 3, 1)),
                opacities=cast(np.full(n, 0.8)), colors=cast(cols[idx]), viewmats=cast(vm[None]),
                Ks=cast(k[None]), width=w, height=h)


def nerf_scene(folder, *, n=2, w=16, h=12, img_wh=None, fl=(20.0, 20.0), pose=None,
               fmt="png"):
    """A transforms.json scene with n frames at (0, 0, 5 + i) looking at the origin."""
    rng = np.random.default_rng(0)
    iw, ih = img_wh or (w, h)
    frames = []
    for i in range(n):
        name = f"images/{i:03d}.{fmt}"
        pic = rng.integers(0, 255, (ih, iw, 3), dtype=np.uint8)
        (folder / "images").mkdir(parents=True, exist_ok=True)
        if fmt == "png":
            write_png(folder / name, pic)
        else:
            from PIL import Image
            Image.fromarray(pic).save(folder / name, quality=90)
        c2w = np.eye(4)
        c2w[2, 3] = 5.0 + i
        if pose is not None and i == n - 1:
            c2w = pose
        frames.append(dict(file_path=name, transform_matrix=np.asarray(c2w).tolist()))
    meta = dict(fl_x=fl[0], fl_y=fl[1], w=w, h=h, frames=frames)
    (folder / "transforms.json").write_text(json.dumps(meta))
    return folder


def colmap_scene(folder, *, cam="1 PINHOLE 20 10 30 30 10 5", q="1 0 0 0",
                 points="1 0.5 -0.25 2.0 10 20 30 0.5\n", img_hw=(10, 20)):
    """A COLMAP text model with one camera and two images (a.png, b.png)."""
    sparse = folder / "sparse" / "0"
    sparse.mkdir(parents=True)
    (sparse / "cameras.txt").write_text(f"# id model w h params\n{cam}\n")
    (sparse / "images.txt").write_text(
        f"1 1 0 0 0 0 0 3 1 a.png\n\n2 {q} 0 0 4 1 b.png\n\n")
    (sparse / "points3D.txt").write_text(points)
    rng = np.random.default_rng(1)
    for nm in ("a.png", "b.png"):
        write_png(folder / "images" / nm, rng.integers(0, 255, img_hw + (3,), dtype=np.uint8))
    return folder


def npz_scene(path, **override):
    """A gsplat npz scene: 2 cameras of 8x6 looking down +z at 5 points."""
    z = dict(means3d=np.array([[0, 0, 3], [0.2, 0, 3], [0, 0.2, 3], [0.1, 0.1, 4],
                               [-0.2, 0, 3]], np.float32),
             colors=np.full((5, 3), 200, np.uint8),
             viewmats=np.tile(np.eye(4, dtype=np.float32), (2, 1, 1)),
             Ks=np.tile(np.array([[10, 0, 4], [0, 10, 3], [0, 0, 1]], np.float32), (2, 1, 1)),
             width=np.int64(8), height=np.int64(6),
             images=np.full((2, 6, 8, 3), 100, np.uint8))
    z.update(override)
    np.savez(path, **z)
    return path


def ply_model(path, n=6, **override):
    """A 3DGS PLY of n bright, opaque Gaussians around the origin (SH degree 0)."""
    rng = np.random.default_rng(3)
    g = dict(means=rng.normal(scale=0.3, size=(n, 3)),
             quats=np.tile([1.0, 0, 0, 0], (n, 1)),
             log_scales=np.full((n, 3), np.log(0.2)),
             logit_opacities=np.full(n, 4.0),
             sh=np.full((n, 1, 3), 1.5))
    for k, v in override.items():
        g[k] = v
    write_ply(path, **g)
    return path
