"""gsplat's npz scene layout (as its ``assets/test_garden.npz``), optionally with images."""

from __future__ import annotations

import numpy as np

from .scene import Scene, scene_extent, split_indices


def load_npz(path, *, downscale: int = 1, test_every: int = 8) -> Scene:
    """Load an npz with means3d [N, 3], colors [N, 3] uint8, viewmats [C, 4, 4]
    (world-to-camera, OpenCV), Ks [C, 3, 3], width, height and optionally images
    [C, H, W, 3] uint8 (absent in gsplat's test_garden: the scene then has images None and
    can be rendered but not trained). ``downscale`` box-averages the images."""
    z = np.load(path)
    need = ("means3d", "colors", "viewmats", "Ks", "width", "height")
    missing = [k for k in need if k not in z.files]
    if missing:
        raise ValueError(f"{path}: not a gsplat npz scene, missing {missing}")
    vm = np.asarray(z["viewmats"], np.float64)
    Ks = np.asarray(z["Ks"], np.float64).copy()
    w, h = int(z["width"]), int(z["height"])
    d = int(downscale)
    if d < 1:
        raise ValueError(f"downscale must be a positive integer, got {downscale}")
    images = None
    if "images" in z.files:
        images = np.asarray(z["images"], np.uint8)
        if images.shape[:3] != (vm.shape[0], h, w):
            raise ValueError(f"{path}: images {images.shape} do not match {vm.shape[0]} cameras "
                             f"of {w}x{h}")
        if d > 1:
            hh, ww = h // d, w // d
            images = images[:, :hh * d, :ww * d].reshape(-1, hh, d, ww, d, 3).astype(
                np.float64).mean((2, 4))
            images = np.clip(images + 0.5, 0, 255).astype(np.uint8)
    if d > 1:
        Ks[:, :2] *= np.array([[(w // d) / w], [(h // d) / h]])
    tr, te = split_indices(vm.shape[0], test_every)
    cols = np.asarray(z["colors"])
    cols = cols.astype(np.float64) / 255 if cols.dtype == np.uint8 else cols.astype(np.float64)
    return Scene(images=images, viewmats=vm, Ks=Ks, names=[f"{i:03d}" for i in range(len(vm))],
                 points=np.asarray(z["means3d"], np.float64), point_colors=cols,
                 train_idx=tr, test_idx=te, extent=scene_extent(vm[tr] if len(tr) else vm),
                 points_source="sfm")
