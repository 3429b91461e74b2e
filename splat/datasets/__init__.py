"""Scene loaders: NeRF/instant-ngp transforms.json, COLMAP sparse models, gsplat npz.

All return a :class:`Scene` with undistorted, downscaled uint8 images, OpenCV
world-to-camera matrices, pinhole intrinsics, an initial point cloud and a train/test
split (every 8th image is a test view). :func:`load_scene` picks the loader.
"""

from __future__ import annotations

import os

from .colmap import find_sparse_dir, load_colmap
from ..io.images import read_image, undistort_image, write_png
from .nerf import load_nerf
from ..data import path as _data_path
from ..checks import warn_default
from .npz import load_npz, npz_image_size
from .scene import (Scene, camera_centers, look_at, orbit_cameras, random_points, scene_extent,
                    split_indices)

# The small scene bundled with the package (`splat demo`; see splat/data/README.md).
DEMO_SCENE = str(_data_path("demo_scene.npz"))


def load_scene(path, **kwargs) -> Scene:
    """Load ``path``: an .npz file, a folder with transforms.json, or a COLMAP folder.

    kwargs go to the loader (downscale, test_every, ...).
    """
    scene = _load(str(path), kwargs)
    downscale = kwargs.get("downscale", 1)
    if scene.images is not None and downscale > 1 and min(scene.width, scene.height) < SMALL_IMAGE:
        (kwargs.get("warn") or warn_default)(
            f"{path}: images are only {scene.width}x{scene.height} pixels after downscale {downscale}; "
            "too small to show detail (a smaller downscale keeps more)")
    return scene


#: Images smaller than this (pixels, either side) after downscaling are warned about.
SMALL_IMAGE = 16


def _load(path: str, kwargs: dict) -> Scene:
    if os.path.isfile(path):
        if not path.endswith(".npz"):
            raise ValueError(f"{path}: a scene is a folder (transforms.json or COLMAP "
                             "sparse/0) or a gsplat .npz file, not this file")
        kw = {k: v for k, v in kwargs.items() if k in ("downscale", "test_every", "warn")}
        return load_npz(path, **kw)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such scene folder or .npz file")
    if os.path.isfile(os.path.join(path, "transforms.json")):
        return load_nerf(path, **kwargs)
    if find_sparse_dir(path) is not None:
        kwargs = {k: v for k, v in kwargs.items() if k != "alpha_background"}
        return load_colmap(path, **kwargs)
    raise ValueError(f"{path}: found neither transforms.json nor a COLMAP model (sparse/0)")


__all__ = ["Scene", "load_scene", "load_nerf", "load_colmap", "load_npz", "npz_image_size",
           "split_indices", "scene_extent", "camera_centers", "random_points",
           "look_at", "orbit_cameras", "read_image", "write_png", "undistort_image", "DEMO_SCENE"]
