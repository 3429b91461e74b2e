"""gsplat's npz scene layout (as its ``assets/test_garden.npz``), optionally with images."""

from __future__ import annotations

import numpy as np

from ..checks import check_cameras, check_image_size, drop_invalid_points, warn_default
from ..io.files import npz_array, open_npz
from .scene import Scene, scene_extent, split_indices

WHAT = "gsplat npz scene"


def load_npz(path, *, downscale: int = 1, test_every: int = 8, warn=None) -> Scene:
    """Load an npz with means3d [N, 3], colors [N, 3] uint8, viewmats [C, 4, 4]
    (world-to-camera, OpenCV), Ks [C, 3, 3], width, height and optionally images
    [C, H, W, 3] uint8 (absent in gsplat's test_garden: the scene then has images None and
    can be rendered but not trained). ``downscale`` box-averages the images.

    Cameras are checked (finite rigid poses, positive square-pixel focal lengths, see
    :mod:`splat.checks`); points with non-finite coordinates or colours are dropped
    with one warning (``warn``, default :func:`warnings.warn`)."""
    warn = warn or warn_default
    path = str(path)
    z = open_npz(path, WHAT)
    need = ("means3d", "colors", "viewmats", "Ks", "width", "height")
    missing = [k for k in need if k not in z.files]
    if missing:
        raise ValueError(f"{path}: not a {WHAT}, missing {missing} (it has {sorted(z.files)})")
    arr = {k: npz_array(z, k, path, WHAT) for k in need}
    try:
        vm = np.asarray(arr["viewmats"], np.float64)
        Ks = np.asarray(arr["Ks"], np.float64).copy()
        means = np.asarray(arr["means3d"], np.float64)
        cols = np.asarray(arr["colors"])
    except (TypeError, ValueError):
        raise ValueError(f"{path}: viewmats, Ks, means3d and colors must be numeric arrays") \
            from None
    if arr["width"].size != 1 or arr["height"].size != 1:
        raise ValueError(f"{path}: width and height must be scalars, got shapes "
                         f"{arr['width'].shape} and {arr['height'].shape}")
    w, h = check_image_size(arr["width"].item(), arr["height"].item(), path)
    d = int(downscale)
    if d < 1:
        raise ValueError(f"downscale must be a positive integer, got {downscale}")
    if d > min(w, h):
        raise ValueError(f"downscale {d} leaves no pixel of the {w}x{h} images of {path}")
    check_cameras(vm, Ks, w, h, path)
    if means.ndim != 2 or means.shape[1] != 3 or cols.shape != means.shape:
        raise ValueError(f"{path}: means3d and colors must both be [N, 3], got {means.shape} "
                         f"and {cols.shape}")
    images = None
    if "images" in z.files:
        images = npz_array(z, "images", path, WHAT)
        if images.dtype != np.uint8:
            raise ValueError(f"{path}: images must be uint8 (0..255), got {images.dtype}")
        if images.shape != (vm.shape[0], h, w, 3):
            raise ValueError(f"{path}: images {images.shape} do not match {vm.shape[0]} cameras "
                             f"of {w}x{h}: expected {(vm.shape[0], h, w, 3)}")
        if d > 1:
            hh, ww = h // d, w // d
            images = images[:, :hh * d, :ww * d].reshape(-1, hh, d, ww, d, 3).astype(
                np.float64).mean((2, 4))
            images = np.clip(images + 0.5, 0, 255).astype(np.uint8)
    if d > 1:
        Ks[:, :2] *= np.array([[(w // d) / w], [(h // d) / h]])
    tr, te = split_indices(vm.shape[0], test_every)
    cols = cols.astype(np.float64) / 255 if cols.dtype == np.uint8 else cols.astype(np.float64)
    means, cols = drop_invalid_points(means, cols, f"{path}: means3d", warn)
    return Scene(images=images, viewmats=vm, Ks=Ks, names=[f"{i:03d}" for i in range(len(vm))],
                 points=means, point_colors=cols,
                 train_idx=tr, test_idx=te, extent=scene_extent(vm[tr] if len(tr) else vm),
                 points_source="sfm")


def npz_image_size(path, downscale: int = 1) -> tuple[int, int]:
    """(width, height) in pixels of an npz scene's images after ``downscale`` (what
    :func:`load_npz` gives them), also for a scene without images."""
    with open_npz(path, WHAT) as z:
        w, h = (int(npz_array(z, k, path).item()) for k in ("width", "height"))
    return w // downscale, h // downscale
