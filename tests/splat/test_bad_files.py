"""Bad scene files and PLYs: each error names the file (and frame, camera, line or
index) and says what was found and what was expected; recoverable problems (non-finite
points or Gaussians) are dropped with one warning that counts them."""

import math
import re

import numpy as np
import pytest

from splat.datasets import load_colmap, load_nerf, load_npz, load_scene
from splat.io.ply import read_ply

from .scenes import colmap_scene, npz_scene, nerf_scene, ply_model

pytest.importorskip("PIL")


def _load_nerf(folder):
    return load_nerf(folder, n_random_points=10, warn=lambda m: None)


# ---------------------------------------------------------------- transforms.json


def test_nerf_good_scene_loads(tmp_path):
    sc = _load_nerf(nerf_scene(tmp_path))
    assert sc.images.shape == (2, 12, 16, 3) and np.isfinite(sc.viewmats).all()


def test_nerf_nan_pose_names_the_frame(tmp_path):
    pose = np.eye(4)
    pose[0, 3] = np.nan
    nerf_scene(tmp_path, pose=pose)
    with pytest.raises(ValueError, match=r"transforms\.json frame 1 \(images/001\.png\) "
                                         r"transform_matrix: camera pose is not finite"):
        _load_nerf(tmp_path)


def test_nerf_non_rotation_pose(tmp_path):
    nerf_scene(tmp_path, pose=np.diag([2.0, 1, 1, 1]))
    with pytest.raises(ValueError, match=r"frame 1 .*not a rotation matrix"):
        _load_nerf(tmp_path)


def test_nerf_invalid_json_names_file_line_column(tmp_path):
    nerf_scene(tmp_path)
    p = tmp_path / "transforms.json"
    p.write_text(p.read_text()[:-5])
    with pytest.raises(ValueError, match=re.escape(str(p)) + r":1:\d+: invalid JSON"):
        load_scene(tmp_path)


@pytest.mark.parametrize("frames", ["[]", "{\"a\": 1}", "[{\"transform_matrix\": []}]"])
def test_nerf_structural_errors(tmp_path, frames):
    (tmp_path / "transforms.json").write_text(f"{{\"w\": 4, \"h\": 4, \"frames\": {frames}}}")
    with pytest.raises(ValueError, match=r"transforms\.json: .*(frames|file_path)"):
        _load_nerf(tmp_path)


def test_nerf_truncated_jpeg_names_the_image(tmp_path):
    nerf_scene(tmp_path, w=64, h=48, fl=(60.0, 60.0), fmt="jpg")
    img = tmp_path / "images" / "001.jpg"
    img.write_bytes(img.read_bytes()[:300])
    with pytest.raises(ValueError, match=re.escape(str(img)) + r": cannot read image"):
        _load_nerf(tmp_path)


def test_nerf_not_an_image(tmp_path):
    nerf_scene(tmp_path)
    img = tmp_path / "images" / "000.png"
    img.write_text("hello")
    with pytest.raises(ValueError, match=re.escape(str(img)) + r": cannot read image"):
        _load_nerf(tmp_path)


def test_nerf_focal_from_the_wrong_side(tmp_path):
    """fl_y = fl_x * h / w (a 4:3 image's aspect in fx/fy) contradicts square pixels."""
    nerf_scene(tmp_path, w=16, h=12, fl=(20.0, 15.0))
    with pytest.raises(ValueError, match=r"frame 0 .*fx/fy = 20/15 = 1\.333 equals the "
                                         r"image's width/height \(16x12\)"):
        _load_nerf(tmp_path)


def test_nerf_image_aspect_contradicts_w_h(tmp_path):
    """A portrait image described as landscape would stretch the intrinsics."""
    nerf_scene(tmp_path, w=16, h=12, img_wh=(12, 16))
    with pytest.raises(ValueError, match=r"image is 12x16 \(aspect 0\.750\) but the camera "
                                         r"says 16x12 \(aspect 1\.333\)"):
        _load_nerf(tmp_path)


def test_nerf_image_of_other_size_same_aspect_is_fine(tmp_path):
    nerf_scene(tmp_path, w=32, h=24, fl=(40.0, 40.0), img_wh=(16, 12))
    sc = _load_nerf(tmp_path)
    np.testing.assert_allclose(sc.Ks[0, 0, 0], 20.0)


@pytest.mark.parametrize("fl,msg", [((0.0, 0.0), "focal lengths must be > 0"),
                                    ((20.0, 60.0), r"fx/fy = 20/60 = 0\.333"),
                                    ((float("nan"), 20.0), "'fl_x' must be finite")])
def test_nerf_bad_focal(tmp_path, fl, msg):
    nerf_scene(tmp_path, fl=fl)
    with pytest.raises(ValueError, match=msg):
        _load_nerf(tmp_path)


# ---------------------------------------------------------------- COLMAP


def test_colmap_good_scene_loads(tmp_path):
    sc = load_colmap(colmap_scene(tmp_path), test_every=0)
    assert sc.images.shape == (2, 10, 20, 3) and len(sc.points) == 1


@pytest.mark.parametrize("q", ["nan 0 0 0", "0 0 0 0"])
def test_colmap_bad_quaternion_names_file_line_and_image(tmp_path, q):
    colmap_scene(tmp_path, q=q)
    with pytest.raises(ValueError, match=r"images\.txt:3 \(b\.png\): pose must be finite "
                                         r"with a non-zero quaternion"):
        load_colmap(tmp_path)


@pytest.mark.parametrize("cam, message", [
    ("1 PINHOLE twenty 10 30 30 10 5", r"cameras\.txt:2: malformed line, expected CAMERA_ID MODEL WIDTH HEIGHT"),
    ("1 PINHOLE 20 10 30 10 5", r"camera 1: COLMAP camera model PINHOLE has 4 parameters, got 3"),
    ("1 PINHOLE 10 20 30 30 5 10", r"\(a\.png\): image is 20x10 .* camera says 10x20"),
    ("1 PINHOLE 20 10 30 15 10 5", r"fx/fy = 30/15 = 2\.000 equals the image's width/height"),
], ids=["malformed-line", "parameter-count", "aspect-contradicts-image", "focal-contradicts-aspect"])
def test_colmap_bad_camera_names_file_line_and_camera(tmp_path, cam, message):
    colmap_scene(tmp_path, cam=cam)
    with pytest.raises(ValueError, match=message):
        load_colmap(tmp_path)


def test_colmap_non_finite_points_dropped_with_count(tmp_path):
    colmap_scene(tmp_path, points="1 0 0 2 1 2 3 0.5\n2 nan 0 2 1 2 3 0.5\n3 1 1 inf 0 0 0 1\n")
    msgs = []
    sc = load_colmap(tmp_path, warn=msgs.append)
    assert sc.points.tolist() == [[0, 0, 2]]
    assert len(msgs) == 1 and "dropped 2 of 3 points" in msgs[0] and "index 1" in msgs[0]


# ---------------------------------------------------------------- npz


def test_npz_nan_viewmat_names_camera(tmp_path):
    vm = np.tile(np.eye(4, dtype=np.float32), (2, 1, 1))
    vm[1, 2, 3] = np.nan
    p = npz_scene(tmp_path / "s.npz", viewmats=vm)
    with pytest.raises(ValueError, match=re.escape(str(p)) + r" camera 1: camera pose is "
                                                             r"not finite"):
        load_scene(p)


@pytest.mark.parametrize("fx,fy,msg", [(0, 10, "focal lengths must be > 0"),
                                       (10, 7.5, r"fx/fy = 10/7.5 = 1.333 equals the image's width/height \(8x6\)")])
def test_npz_bad_intrinsics(tmp_path, fx, fy, msg):
    K = np.tile(np.array([[fx, 0, 4], [0, fy, 3], [0, 0, 1]], np.float32), (2, 1, 1))
    p = npz_scene(tmp_path / "s.npz", Ks=K)
    with pytest.raises(ValueError, match=r"camera 0: " + msg):
        load_npz(p)


def test_not_an_npz_file_is_named_not_pickled(tmp_path):
    for name, data in (("text.npz", b"hello world\n"), ("arr.npz", None)):
        p = tmp_path / name
        if data is None:
            np.save(open(p, "wb"), np.zeros(3))
        else:
            p.write_bytes(data)
        with pytest.raises(ValueError) as e:
            load_scene(p)
        msg = str(e.value)
        assert msg.startswith(str(p)) and "pickled" not in msg and "npz" in msg, msg


def test_npz_float_images_rejected(tmp_path):
    p = npz_scene(tmp_path / "s.npz", images=np.full((2, 6, 8, 3), 0.5, np.float32))
    with pytest.raises(ValueError, match=r"images must be uint8 \(0\.\.255\), got float32"):
        load_npz(p)


def test_npz_missing_keys(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match=r"not a gsplat npz scene, missing \['means3d'"):
        load_npz(tmp_path / "x.npz")


def test_npz_nan_points_dropped_with_count(tmp_path):
    m = np.zeros((5, 3), np.float32)
    m[[1, 3], 0] = np.nan
    msgs = []
    sc = load_npz(npz_scene(tmp_path / "s.npz", means3d=m), warn=msgs.append)
    assert len(sc.points) == 3
    assert msgs == [f"{tmp_path / 's.npz'}: means3d: dropped 2 of 5 points with non-finite "
                    "coordinates or colours (first: index 1)"]


def test_scene_path_that_is_another_file(tmp_path):
    p = tmp_path / "scene.json"
    p.write_text("{}")
    with pytest.raises(ValueError, match="a scene is a folder"):
        load_scene(p)


# ---------------------------------------------------------------- PLY


def test_ply_non_finite_and_overflowing_gaussians_dropped(tmp_path):
    n = 6
    means = np.zeros((n, 3))
    means[1, 2] = np.nan
    ls = np.full((n, 3), -3.0)  # negative log-scales: scales 0.05, valid
    ls[3, 0] = 1e30             # a float32 covariance overflow
    op = np.full(n, 7.0)        # logits outside [0, 1]: opacities 0.999, valid
    op[4] = -np.inf
    p = ply_model(tmp_path / "g.ply", n, means=means, log_scales=ls, logit_opacities=op)
    msgs = []
    g = read_ply(p, warn=msgs.append)
    assert len(g.means) == 3 and np.isfinite(g.means).all()
    assert msgs == [f"{p}: dropped 3 of 6 Gaussians with non-finite values or log-scales "
                    "> 44 (first: index 1)"]
    np.testing.assert_array_equal(g.log_scales, -3.0)
    assert len(read_ply(p, drop_invalid=False).means) == 6


def test_ply_all_invalid_is_an_error(tmp_path):
    p = ply_model(tmp_path / "g.ply", 2, means=np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="none of the 2 Gaussians is valid"):
        read_ply(p)


def test_ply_header_and_truncation_errors(tmp_path):
    p = ply_model(tmp_path / "g.ply", 4)
    raw = p.read_bytes()
    bad = tmp_path / "h.ply"
    bad.write_bytes(raw.replace(b"element vertex 4", b"element vertex four"))
    with pytest.raises(ValueError, match=re.escape(str(bad)) + r":3: malformed PLY header "
                                                               r"line 'element vertex four'"):
        read_ply(bad)
    bad.write_bytes(raw[:-10])
    with pytest.raises(ValueError, match=r"file truncated \(\d+ of \d+ data bytes for 4 "
                                         r"vertices\)"):
        read_ply(bad)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.ply"))):
        read_ply(tmp_path / "nope.ply")


def test_ply_ascii_wrong_column_count(tmp_path):
    p = tmp_path / "a.ply"
    names = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1",
             "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    head = "ply\nformat ascii 1.0\nelement vertex 2\n" + "".join(
        f"property float {n}\n" for n in names) + "end_header\n"
    p.write_text(head + " ".join(["0"] * 14) + "\n" + " ".join(["0"] * 13) + "\n")
    with pytest.raises(ValueError, match=re.escape(str(p)) + r": malformed ascii PLY data"):
        read_ply(p)
    p.write_text(head + (" ".join(["0"] * 14) + "\n") * 2)
    g = read_ply(p)
    assert g.means.shape == (2, 3) and g.sh.shape == (2, 1, 3)
    assert math.isclose(float(g.quats[0, 0]), 0.0)
