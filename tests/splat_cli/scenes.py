"""Tiny scenes and models written to disk for the bad-input tests."""

import json

import numpy as np

from splat.datasets import write_png
from splat.ply import write_ply


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
