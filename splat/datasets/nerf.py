"""NeRF / instant-ngp ``transforms.json`` scenes."""

from __future__ import annotations

import math
import os

import numpy as np

from ..checks import (check_aspect, check_image_size, check_intrinsics, check_viewmat,
                      warn_default)
from ..io.files import read_json
from ..io.images import read_image, undistort_image
from .scene import (Scene, random_points, resolve_image, scene_extent, split_indices,
                    stack_views, warn_missing)

_INTR_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "k2", "p1", "p2",
              "camera_angle_x", "camera_angle_y")


def _number(g: dict, key: str, where: str) -> float:
    try:
        v = float(g[key])
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {key!r} must be a number, got {g[key]!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{where}: {key!r} must be finite, got {v}")
    return v


def _angle(g: dict, key: str, where: str) -> float:
    """A field of view in radians, in (0, pi) (0 gave a ZeroDivisionError, pi or more a
    negative or infinite focal length)."""
    a = float(g[key])
    if not 0 < a < math.pi:
        raise ValueError(f"{where}: {key!r} must be a field of view in (0, pi) radians, got {g[key]!r}")
    return a


def _intrinsics(d: dict, fallback: dict, where: str):
    g = dict(fallback)
    g.update({k: d[k] for k in _INTR_KEYS if k in d})
    if "w" not in g or "h" not in g:
        raise ValueError(f"{where}: image size 'w'/'h' missing")
    w, h = (float(v) for v in check_image_size(g["w"], g["h"], where))
    num = {k: _number(g, k, where) for k in _INTR_KEYS if k in g and k not in ("w", "h")}
    g.update(num)
    if "fl_x" in g:
        fx = float(g["fl_x"])
    elif "camera_angle_x" in g:
        fx = 0.5 * w / math.tan(0.5 * _angle(g, "camera_angle_x", where))
    else:
        raise ValueError(f"{where}: no focal length ('fl_x' or 'camera_angle_x')")
    if "fl_y" in g:
        fy = float(g["fl_y"])
    elif "camera_angle_y" in g:
        fy = 0.5 * h / math.tan(0.5 * _angle(g, "camera_angle_y", where))
    else:
        fy = fx
    cx = float(g.get("cx", w / 2))
    cy = float(g.get("cy", h / 2))
    dist = tuple(float(g.get(k, 0.0)) for k in ("k1", "k2", "p1", "p2"))
    return w, h, np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]]), dist


def _pose(fr: dict, where: str) -> np.ndarray:
    """The frame's camera-to-world 4x4 (a 3x4 gets its last row), checked rigid."""
    if "transform_matrix" not in fr:
        raise ValueError(f"{where}: no 'transform_matrix'")
    try:
        c2w = np.asarray(fr["transform_matrix"], np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: transform_matrix must be a 4x4 list of numbers") from None
    if c2w.shape == (3, 4):
        c2w = np.vstack([c2w, [0, 0, 0, 1]])
    check_viewmat(c2w, f"{where} transform_matrix")
    return c2w


def load_nerf(data_dir, *, downscale: int = 1, test_every: int = 8, n_random_points=20_000,
              seed: int = 0, transforms: str = "transforms.json", max_images: int | None = None,
              alpha_background=(0.0, 0.0, 0.0), warn=None) -> Scene:
    """Load a ``transforms.json`` scene (instant-ngp / NeRF synthetic).

    Camera-to-world matrices are OpenGL (x right, y up, z backward) and are converted to
    OpenCV world-to-camera. Intrinsics may be shared (top level) or per frame (frame keys
    override). Images are box-downscaled by the integer ``downscale`` (intrinsics scaled to
    match) and, when k1, k2, p1, p2 are non-zero, undistorted once here. Listed images that
    do not exist are skipped with one warning. There are no SfM points: the initial cloud
    is ``n_random_points`` random points in the cameras' bounds.
    """
    warn = warn or warn_default
    path = os.path.join(data_dir, transforms)
    meta = read_json(path)
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not frames or not isinstance(frames, list):
        raise ValueError(f"{path}: expected an object with a non-empty 'frames' list")
    shared = {k: meta[k] for k in _INTR_KEYS if k in meta}
    downscale = int(downscale)
    if downscale < 1:
        raise ValueError(f"downscale must be a positive integer, got {downscale}")

    images, viewmats, Ks, names, missing = [], [], [], [], []
    for i, fr in enumerate(frames):
        fp = fr.get("file_path") if isinstance(fr, dict) else None
        if not isinstance(fp, str):
            raise ValueError(f"{path}: frame {i} has no 'file_path' string")
        img_path = resolve_image(data_dir, fp)
        if img_path is None:
            missing.append(fp)
            continue
        if max_images is not None and len(images) >= max_images:
            continue
        where = f"{path} frame {i} ({fp})"
        w, h, K, dist = _intrinsics(fr, shared, where)
        c2w = _pose(fr, where)
        img = read_image(img_path, downscale, alpha_background)
        # intrinsics follow the image actually stored (the file's size may differ from w/h,
        # but not its aspect ratio)
        check_aspect((w, h), (img.shape[1], img.shape[0]), where)
        sx, sy = img.shape[1] / w, img.shape[0] / h
        K = K * np.array([[sx], [sy], [1.0]])
        check_intrinsics(K, img.shape[1], img.shape[0], where)
        if any(dist):
            img = undistort_image(img, K, dist)
        c2w = c2w @ np.diag([1.0, -1.0, -1.0, 1.0])  # OpenGL -> OpenCV camera axes
        images.append(img)
        viewmats.append(np.linalg.inv(c2w))
        Ks.append(K)
        names.append(fp)
    warn_missing(missing, len(frames), warn)
    if not images:
        raise ValueError(f"{path}: none of the {len(frames)} listed images exist")
    images, viewmats, Ks = stack_views(images, viewmats, Ks, path)
    tr, te = split_indices(len(images), test_every)
    h, w = images.shape[1:3]
    pts, cols = random_points(viewmats[tr], Ks[tr], w, h, n_random_points, seed)
    return Scene(images=images, viewmats=viewmats, Ks=Ks, names=names, points=pts,
                 point_colors=cols, train_idx=tr, test_idx=te,
                 extent=scene_extent(viewmats[tr]), points_source="random")
