"""Loaders: transforms.json (OpenGL -> OpenCV, intrinsics, undistortion, missing files),
COLMAP text and binary, gsplat npz, and the real fox scene."""

import json
import math
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from splat.datasets import load_nerf, load_npz, load_scene, split_indices, write_png
from splat.io.images import distort_points, read_image, undistort_image

pytest.importorskip("PIL")
DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "splat"


def test_split_every_8th():
    tr, te = split_indices(17)
    assert te.tolist() == [0, 8, 16]
    assert sorted(tr.tolist() + te.tolist()) == list(range(17))


def _nerf_scene(tmp_path, frames_exist, dist=None, w=32, h=24):
    rng = np.random.default_rng(0)
    frames = []
    # camera at (0, 0, 5) looking down -z (OpenGL) toward the origin
    c2w = np.eye(4)
    c2w[2, 3] = 5.0
    for i, exists in enumerate(frames_exist):
        name = f"images/{i:03d}"
        if exists:
            write_png(tmp_path / f"{name}.png", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        frames.append(dict(file_path=name, transform_matrix=c2w.tolist()))
    meta = dict(fl_x=40.0, fl_y=42.0, cx=16.0, cy=12.0, w=float(w), h=float(h), frames=frames)
    if dist:
        meta.update(dist)
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    return tmp_path


def test_nerf_conventions_missing_files_and_downscale(tmp_path):
    _nerf_scene(tmp_path, [True, False, True, False, True])
    msgs = []
    sc = load_nerf(tmp_path, downscale=2, n_random_points=50, warn=msgs.append)
    assert msgs == ["2 of 5 listed images are missing and were skipped (first: images/001)"]
    assert sc.images.shape == (3, 12, 16, 3) and sc.images.dtype == np.uint8
    assert sc.names == ["images/000", "images/002", "images/004"]
    np.testing.assert_allclose(sc.Ks[0], [[20, 0, 8], [0, 21, 6], [0, 0, 1]])
    # The world origin is 5 in front of an OpenCV camera at (0, 0, 5) looking at it.
    p_cam = sc.viewmats[0] @ np.array([0, 0, 0, 1.0])
    np.testing.assert_allclose(p_cam[:3], [0, 0, 5], atol=1e-12)
    # World +y (OpenGL up) appears as camera -y (OpenCV down axis points the other way).
    p_cam = sc.viewmats[0] @ np.array([0, 1, 0, 1.0])
    np.testing.assert_allclose(p_cam[:3], [0, -1, 5], atol=1e-12)
    assert sc.points.shape == (50, 3) and sc.points_source == "random"
    assert sc.test_idx.tolist() == [0] and sc.train_idx.tolist() == [1, 2]
    # the random points are visible from the training cameras
    cam = np.einsum("ij,nj->ni", sc.viewmats[1][:3, :3], sc.points) + sc.viewmats[1][:3, 3]
    assert (cam[:, 2] > 0).all()
    # box downscale: pixel (0, 0) is the mean of the 2x2 block
    full = read_image(tmp_path / "images/000.png")
    np.testing.assert_allclose(sc.images[0, 0, 0], full[:2, :2].reshape(4, 3).mean(0), atol=1)
    # the default warning path emits exactly one warning
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        load_nerf(tmp_path, n_random_points=10)
    assert len([r for r in rec if "missing" in str(r.message)]) == 1


def test_undistortion_inverts_the_opencv_model():
    """Image of a smooth pattern taken through a distorting lens, undistorted, equals the
    pattern seen by the ideal pinhole camera."""
    h, w = 40, 60
    K = np.array([[50.0, 0, 30], [0, 50, 20], [0, 0, 1]])
    dist = (0.3, -0.1, 0.004, -0.003)
    pattern = lambda x, y: 127 + 100 * np.sin(20 * x) * np.cos(15 * y)  # noqa: E731

    # distorted image: pixel (u, v) sees the ray whose distorted coords are (u, v):
    # invert the model per pixel by fixed-point iteration (independent of the loader)
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    xd, yd = (jj - 30) / 50, (ii - 20) / 50
    x, y = xd.copy(), yd.copy()
    for _ in range(50):
        fx, fy = distort_points(x, y, dist)
        x, y = x + (xd - fx), y + (yd - fy)
    distorted = np.repeat(pattern(x, y)[..., None], 3, -1)
    out = undistort_image(np.clip(distorted, 0, 255).astype(np.uint8), K, dist)
    ideal = pattern(xd, yd)
    inner = (slice(4, -4), slice(4, -4))
    err = np.abs(out[..., 0].astype(float) - ideal)[inner]
    assert err.max() < 12 and err.mean() < 3  # bilinear resampling + uint8 rounding
    # and without undistortion the error is much larger
    assert np.abs(distorted[..., 0] - ideal)[inner].mean() > 3 * err.mean()


def _write_colmap(folder, binary):
    folder.mkdir(parents=True)
    # camera 1: PINHOLE 20x10; image: rotation 90 deg about z, t = (1, 2, 3)
    q = [math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)]
    pts = [(1, 0.5, -0.25, 2.0, 10, 20, 30), (2, -1.0, 1.0, 3.0, 200, 100, 0)]
    if binary:
        with open(folder / "cameras.bin", "wb") as f:
            f.write(struct.pack("<Q", 1))
            f.write(struct.pack("<iiQQ", 1, 1, 20, 10))
            f.write(struct.pack("<4d", 30, 31, 10, 5))
        with open(folder / "images.bin", "wb") as f:
            f.write(struct.pack("<Q", 2))
            for iid, name in ((7, b"b.png"), (3, b"a.png")):
                f.write(struct.pack("<i4d3di", iid, *q, 1, 2, 3, 1))
                f.write(name + b"\x00")
                f.write(struct.pack("<Q", 1))
                f.write(struct.pack("<ddq", 1.5, 2.5, 1))
        with open(folder / "points3D.bin", "wb") as f:
            f.write(struct.pack("<Q", 2))
            for pid, x, y, z, r, g, b in pts:
                f.write(struct.pack("<Q3d3Bd", pid, x, y, z, r, g, b, 0.5))
                f.write(struct.pack("<Q", 1))
                f.write(struct.pack("<ii", 3, 0))
    else:
        (folder / "cameras.txt").write_text("# comment\n1 PINHOLE 20 10 30 31 10 5\n")
        (folder / "images.txt").write_text(
            "# comment\n"
            f"7 {q[0]} 0 0 {q[3]} 1 2 3 1 b.png\n1.5 2.5 1\n"
            f"3 {q[0]} 0 0 {q[3]} 1 2 3 1 a.png\n\n")
        (folder / "points3D.txt").write_text(
            "".join(f"{p} {x} {y} {z} {r} {g} {b} 0.5 3 0\n" for p, x, y, z, r, g, b in pts))


@pytest.mark.parametrize("binary", [False, True])
def test_colmap_text_and_binary(tmp_path, binary):
    _write_colmap(tmp_path / "sparse" / "0", binary)
    rng = np.random.default_rng(1)
    for nm in ("a.png", "b.png"):
        write_png(tmp_path / "images" / nm, rng.integers(0, 255, (10, 20, 3), dtype=np.uint8))
    sc = load_scene(tmp_path, test_every=0)
    assert sc.names == ["a.png", "b.png"]  # sorted by name
    rz = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    np.testing.assert_allclose(sc.viewmats[0][:3, :3], rz, atol=1e-12)
    np.testing.assert_allclose(sc.viewmats[0][:3, 3], [1, 2, 3])
    np.testing.assert_allclose(sc.Ks[0], [[30, 0, 10], [0, 31, 5], [0, 0, 1]])
    np.testing.assert_allclose(sc.points, [[0.5, -0.25, 2.0], [-1, 1, 3]])
    np.testing.assert_allclose(sc.point_colors, np.array([[10, 20, 30], [200, 100, 0]]) / 255)
    assert sc.points_source == "sfm"


def test_npz_layout(tmp_path):
    z = dict(means3d=np.zeros((5, 3), np.float32), colors=np.zeros((5, 3), np.uint8),
             viewmats=np.tile(np.eye(4, dtype=np.float32), (2, 1, 1)),
             Ks=np.tile(np.array([[10, 0, 4], [0, 10, 3], [0, 0, 1]], np.float32), (2, 1, 1)),
             width=np.int64(8), height=np.int64(6),
             images=np.arange(2 * 6 * 8 * 3, dtype=np.uint8).reshape(2, 6, 8, 3))
    np.savez(tmp_path / "s.npz", **z)
    sc = load_npz(tmp_path / "s.npz", downscale=2)
    assert sc.images.shape == (2, 3, 4, 3)
    np.testing.assert_allclose(sc.Ks[0], [[5, 0, 2], [0, 5, 1.5], [0, 0, 1]])
    np.testing.assert_allclose(sc.images[1, 0, 0],
                               z["images"][1, :2, :2].reshape(4, 3).mean(0), atol=0.51)
    del z["images"]
    np.savez(tmp_path / "t.npz", **z)
    assert load_npz(tmp_path / "t.npz").images is None


def test_garden_npz_loads():
    path = DATA / "test_garden.npz"
    if not path.is_file():
        pytest.skip("shared data absent")
    sc = load_scene(path)
    assert sc.points.shape == (138766, 3) and sc.viewmats.shape == (3, 4, 4)
    assert sc.extent > 0


def test_fox_loads_50_of_67_with_one_warning():
    fox = DATA / "fox"
    if not fox.is_dir():
        pytest.skip("shared data absent")
    msgs = []
    sc = load_scene(fox, downscale=32, n_random_points=100, warn=msgs.append)
    assert len(msgs) == 1 and msgs[0].startswith("17 of 67") and "images/0005.jpg" in msgs[0]
    assert sc.images.shape == (50, 60, 33, 3)
    assert len(sc.test_idx) == 7 and len(sc.train_idx) == 43
    # shared intrinsics scaled by the true size ratio
    np.testing.assert_allclose(sc.Ks[0, 0, 0], 1375.52 * 33 / 1080)
    assert np.isfinite(sc.viewmats).all()


def test_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_scene(tmp_path / "nope")
    with pytest.raises(ValueError, match="neither"):
        load_scene(tmp_path)
    _nerf_scene(tmp_path, [False, False])
    with pytest.raises(ValueError, match="none of the 2"):
        load_nerf(tmp_path, warn=lambda m: None)


def _look_at_viewmat(eye, target):
    """A camera at eye looking at target with world +z up in the image."""
    from splat.datasets.scene import look_at

    return look_at(eye, target, up=(0.0, 0.0, 1.0))


def test_random_points_cover_what_an_arc_of_cameras_looks_at():
    from splat.datasets import random_points
    from splat.datasets.scene import look_at_point

    target = np.array([1.0, 2.0, 0.5])
    ang = np.linspace(0, np.pi / 3, 9)  # a 60 degree arc: its centres' box misses target
    eyes = target + 4 * np.stack([np.cos(ang), np.sin(ang), 0.3 * np.ones_like(ang)], 1)
    vms = np.stack([_look_at_viewmat(e, target) for e in eyes])
    np.testing.assert_allclose(look_at_point(vms), target, atol=1e-9)
    K = np.array([[30.0, 0, 16], [0, 30.0, 12], [0, 0, 1]])
    Ks = np.repeat(K[None], len(vms), 0)
    pts, cols = random_points(vms, Ks, 32, 24, 500, seed=0)
    assert pts.shape == cols.shape == (500, 3)
    assert (np.linalg.norm(pts - target, axis=1) < 1.0).sum() >= 5
    # forward-facing (parallel optical axes): no meeting point, the box of the centres
    fwd = np.stack([_look_at_viewmat(e, e + [0.0, 0.0, -1.0] + [0.1, 0, 0])
                    for e in eyes])
    assert look_at_point(fwd) is None
    # looking away from each other: the meeting point is behind the cameras
    away = np.stack([_look_at_viewmat(e, 2 * e - target) for e in eyes])
    assert look_at_point(away) is None
