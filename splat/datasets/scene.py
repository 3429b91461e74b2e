"""The in-memory scene every loader returns, and what all loaders share."""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np


@dataclasses.dataclass
class Scene:
    """Images and cameras of one capture.

    images: [M, H, W, 3] uint8 (undistorted, downscaled) or None (cameras only);
    viewmats: [M, 4, 4] float64 world-to-camera, OpenCV axes (x right, y down, z forward);
    Ks: [M, 3, 3] float64 pinhole intrinsics in pixels of the stored images;
    names: M image names; points [N, 3] float64 and point_colors [N, 3] in [0, 1]: the
    initial point cloud (SfM points, or random ones, see ``points_source``);
    train_idx / test_idx: int arrays (every 8th image, from the first, is a test view);
    extent: scene scale (1.1 x the largest camera distance from the cameras' mean centre).
    """

    images: np.ndarray | None
    viewmats: np.ndarray
    Ks: np.ndarray
    names: list
    points: np.ndarray
    point_colors: np.ndarray
    train_idx: np.ndarray
    test_idx: np.ndarray
    extent: float
    points_source: str = "sfm"

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    @property
    def height(self) -> int:
        return int(self.images.shape[1])


def split_indices(m: int, test_every: int = 8):
    """(train_idx, test_idx): image i is a test view when i % test_every == 0 (3DGS rule).

    With test_every <= 0 every image is a training view and there is no test view; so it
    is when the rule would leave no training view (one image, or test_every 1).
    """
    idx = np.arange(m)
    if test_every <= 0:
        return idx, idx[:0]
    test = idx % test_every == 0
    if test.all():
        test[:] = False
    return idx[~test], idx[test]


def camera_centers(viewmats) -> np.ndarray:
    """[M, 3] world positions of the cameras of world-to-camera matrices [M, 4, 4]."""
    vm = np.asarray(viewmats, np.float64)
    r, t = vm[:, :3, :3], vm[:, :3, 3]
    return -np.einsum("mji,mj->mi", r, t)


def project_points(viewmats, Ks, points):
    """Pinhole projections of world points [N, 3] by world-to-camera matrices [M, 4, 4] with
    intrinsics Ks [M, 3, 3]: (u [M, N], v [M, N]) in pixels and the depths z [M, N] (float64
    numpy; u and v mean nothing, and may be inf or NaN, where z <= 0)."""
    vm = np.asarray(viewmats, np.float64)
    K = np.asarray(Ks, np.float64)
    cam = np.einsum("mij,nj->mni", vm[:, :3, :3], np.asarray(points, np.float64)) \
        + vm[:, None, :3, 3]
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[:, None, 0, 0] * cam[..., 0] / z + K[:, None, 0, 2]
        v = K[:, None, 1, 1] * cam[..., 1] / z + K[:, None, 1, 2]
    return u, v, z


def scene_extent(viewmats) -> float:
    """1.1 x the largest distance of a camera centre from the mean centre (gsplat's rule).

    Args:
      viewmats: world-to-camera matrices, float ``[M, 4, 4]`` (any float dtype).
    Returns:
      The extent as a Python float, in the scene's world units (1.0 for no cameras).
    """
    c = camera_centers(viewmats)
    if len(c) == 0:
        return 1.0
    d = np.linalg.norm(c - c.mean(0), axis=1).max() * 1.1
    return float(d) if d > 0 else 1.0


def look_at(eye, target, up=(0.0, -1.0, 0.0)) -> np.ndarray:
    """World-to-camera matrix ``[4, 4]`` (float64, OpenCV axes: x right, y down, z forward)
    of a camera at ``eye [3]`` looking at ``target [3]`` (world units), with ``up [3]`` the
    world direction that appears upward in the image (default ``-y``: y down in the image)."""
    eye = np.asarray(eye, np.float64)
    fwd = np.asarray(target, np.float64) - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(up, fwd)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    rot = np.stack([right, down, fwd])
    vm = np.eye(4)
    vm[:3, :3] = rot
    vm[:3, 3] = -rot @ eye
    return vm


def orbit_cameras(points, n: int, width: int, height: int, fov_deg: float = 60.0):
    """n cameras on a circle around a point cloud, looking at it: (viewmats [n, 4, 4]
    world-to-camera (OpenCV axes), Ks [n, 3, 3] pixels), float64.

    points [N, 3] world. The circle is centred on the points' median, slightly above it
    (0.3 radius along +y), with radius 2.5 x the 90th percentile of the points' distances
    from the median (at least 1e-3 world units); the horizontal field of view is
    ``fov_deg`` degrees, the principal point the image centre of width x height pixels.
    """
    pts = np.asarray(points, np.float64)
    center = np.median(pts, 0)
    radius = max(2.5 * float(np.percentile(np.linalg.norm(pts - center, axis=1), 90)), 1e-3)
    f = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])
    angles = 2 * math.pi * np.arange(n) / n
    vms = [look_at(center + radius * np.array([math.cos(a), 0.3, math.sin(a)]), center) for a in angles]
    return np.stack(vms), np.repeat(K[None], n, axis=0)


def look_at_point(viewmats, min_spread: float = 0.05):
    """The point closest (least squares) to all cameras' optical axes: what an inward-
    facing capture looks at, or None.

    None when the axes are too close to parallel to meet (smallest eigenvalue of
    sum_i (I - f_i f_i^T) below ``min_spread`` x the number of cameras, as in a
    forward-facing capture), or when the point is behind at least half the cameras.
    """
    vm = np.asarray(viewmats, np.float64)
    if len(vm) < 2:
        return None
    c = camera_centers(vm)
    f = vm[:, 2, :3]  # optical axes (third row of the rotation) in world coordinates
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    proj = np.eye(3)[None] - f[:, :, None] * f[:, None, :]
    a, b = proj.sum(0), np.einsum("mij,mj->i", proj, c)
    if not np.all(np.isfinite(a)) or np.linalg.eigvalsh(a)[0] < min_spread * len(vm):
        return None
    x = np.linalg.solve(a, b)
    if np.mean(np.einsum("mi,mi->m", x[None] - c, f) > 0) <= 0.5:
        return None
    return x


def random_points(viewmats, Ks, width, height, n: int, seed: int = 0):
    """n random points in the cameras' bounds: uniform in the axis-aligned box of the
    camera centres and the point the cameras look at (:func:`look_at_point`, if they
    converge), padded by 5% (a unit box if it is a single point), kept if at least one
    camera sees them in front of it. Colours are uniform random. Returns (points [n, 3],
    colors [n, 3])."""
    rng = np.random.default_rng(seed)
    c = camera_centers(viewmats)
    lo, hi = c.min(0), c.max(0)
    # Cameras on an arc or a hemisphere cap (fox: 43 views from one side) look at an object
    # outside the box of their centres, and with a short run's means learning rate
    # (at most ~2% of the extent in 500 steps) Gaussians started there cannot move onto
    # it: the box also includes the point the optical axes converge on. Cameras all
    # around an object already enclose it (no change); forward-facing ones have no such
    # point (None).
    target = look_at_point(viewmats)
    if target is not None:
        lo, hi = np.minimum(lo, target), np.maximum(hi, target)
    side = float((hi - lo).max())
    # all cameras at one place: search a unit box around them instead
    pad = 0.05 * side if side > 1e-9 else 1.0
    lo, hi = lo - pad, hi + pad
    out = []
    total = 0
    for _ in range(100):
        cand = rng.uniform(lo, hi, size=(max(4 * n, 1024), 3))
        u, v, z = project_points(viewmats, Ks, cand)
        seen = ((z > 1e-3) & (u >= 0) & (u < width) & (v >= 0) & (v < height)).any(0)
        out.append(cand[seen])
        total += int(seen.sum())
        if total >= n:
            break
    pts = np.concatenate(out)[:n]
    if len(pts) < n:  # cameras see almost nothing of their own box: fall back to the box
        pts = np.concatenate([pts, rng.uniform(lo, hi, size=(n - len(pts), 3))])
    return pts, rng.uniform(size=(n, 3))


def stack_views(images, viewmats, Ks, where):
    """(images [M, H, W, 3], viewmats [M, 4, 4], Ks [M, 3, 3]) stacked from per-view
    lists; all images must have one size (after downscaling), else ValueError naming
    ``where``."""
    sizes = {im.shape for im in images}
    if len(sizes) > 1:
        raise ValueError(f"{where}: images have different sizes after downscaling: "
                         f"{sorted(sizes)}")
    return np.stack(images), np.stack(viewmats), np.stack(Ks)


def warn_missing(missing: list, total: int, warn):
    """One warning naming how many listed images are missing and the first of them."""
    if missing:
        warn(f"{len(missing)} of {total} listed images are missing and were skipped "
             f"(first: {missing[0]})")


def resolve_image(base: str, file_path: str):
    """Path of an image listed as ``file_path`` (extension optional), or None if absent."""
    p = os.path.join(base, file_path)
    if os.path.isfile(p):
        return p
    for ext in (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG"):
        if os.path.isfile(p + ext):
            return p + ext
    return None
