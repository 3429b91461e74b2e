"""Scene builders shared by the splat tests (imported as a module: ``from splat_scenes import ...``)."""

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "splat"


def look_at(eye, target, up=(0.0, -1.0, 0.0)):
    """World-to-camera matrix (OpenCV axes: x right, y down, z forward)."""
    eye = np.asarray(eye, float)
    fwd = np.asarray(target, float) - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(up, fwd)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    rot = np.stack([right, down, fwd])
    vm = np.eye(4)
    vm[:3, :3] = rot
    vm[:3, 3] = -rot @ eye
    return vm


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
