"""Scene files, images and sizes that used to be read wrongly without a word, or to fail
with a raw Python error (issue 23); each now gives a correct result or an error naming the
file (and line, frame or image) or the flag. Tiny files; nothing is trained or rendered."""

import json
import struct

import numpy as np
import pytest

from splat.datasets import load_scene, split_indices
from splat.io.images import read_image
from splat.io.ply import read_ply
from splat.train import presets
from splat.train.state import TrainConfig

from .scenes import colmap_scene, nerf_scene, ply_model

PIL = pytest.importorskip("PIL.Image")


def test_16bit_grayscale_png_scaled_not_white(tmp_path):
    g = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    PIL.fromarray(g).save(tmp_path / "g16.png")  # mode I;16: convert("RGB") made it all 255
    img = read_image(tmp_path / "g16.png")
    assert img.shape == (3, 4, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[..., 0], np.round(g / 257).astype(np.uint8))
    assert (img[..., 0] == img[..., 2]).all()


def test_float_image_refused(tmp_path):
    PIL.fromarray(np.ones((3, 4), np.float32)).save(tmp_path / "f.tiff")
    with pytest.raises(ValueError, match=r"f\.tiff: F mode \(floating-point\) pixels are not supported"):
        read_image(tmp_path / "f.tiff")


def test_downscale_larger_than_the_image_refused_small_images_warned(tmp_path):
    nerf_scene(tmp_path)  # 16 x 12 images
    with pytest.raises(ValueError, match=r"images/000\.png: downscale 1000 is larger than the image \(16x12\); "
                                         r"at most 12"):
        load_scene(tmp_path, downscale=1000, n_random_points=5)
    warned = []
    sc = load_scene(tmp_path, downscale=4, n_random_points=5, warn=warned.append)
    assert sc.images.shape[1:3] == (3, 4)
    assert any("images are only 4x3 pixels after downscale 4" in w for w in warned)


def test_colmap_images_without_points2d_lines_all_loaded(tmp_path):
    colmap_scene(tmp_path)
    # four images, no POINTS2D line after any (blank lines stripped): the reader used to
    # skip every second image (2 of 4 loaded)
    (tmp_path / "sparse" / "0" / "images.txt").write_text(
        "1 1 0 0 0 0 0 3 1 a.png\n2 1 0 0 0 0 0 4 1 b.png\n3 1 0 0 0 0 0 5 1 a.png\n4 1 0 0 0 0 0 6 1 b.png\n")
    sc = load_scene(tmp_path, n_random_points=5, warn=lambda m: None)
    assert len(sc.images) == 4
    # with POINTS2D lines (empty or not) the same four
    (tmp_path / "sparse" / "0" / "images.txt").write_text(
        "1 1 0 0 0 0 0 3 1 a.png\n1.5 2.5 7 3.0 4.0 -1\n2 1 0 0 0 0 0 4 1 b.png\n\n"
        "3 1 0 0 0 0 0 5 1 a.png\n\n4 1 0 0 0 0 0 6 1 b.png\n\n")
    assert len(load_scene(tmp_path, n_random_points=5, warn=lambda m: None).images) == 4


def test_colmap_duplicate_image_id_named(tmp_path):
    colmap_scene(tmp_path)
    (tmp_path / "sparse" / "0" / "images.txt").write_text(
        "1 1 0 0 0 0 0 3 1 a.png\n\n1 1 0 0 0 0 0 4 1 b.png\n\n")
    with pytest.raises(ValueError, match=r"images\.txt:3: duplicate IMAGE_ID 1 \(first on .*images\.txt:1\)"):
        load_scene(tmp_path, n_random_points=5)


def test_colmap_binary_count_past_the_end_named(tmp_path):
    colmap_scene(tmp_path)
    sparse = tmp_path / "sparse" / "0"
    (sparse / "images.txt").unlink()
    # one image whose 2D-point count is garbage (Python: "cannot fit 'int' into an offset-sized integer")
    data = struct.pack("<Q", 1) + struct.pack("<idddddddi", 1, 1, 0, 0, 0, 0, 0, 3, 1) + b"a.png\x00"
    (sparse / "images.bin").write_bytes(data + struct.pack("<Q", 2**62))
    with pytest.raises(ValueError, match=r"images\.bin: image 1's list of 4611686018427387904 2D points runs "
                                         r"past the end of the file"):
        load_scene(tmp_path, n_random_points=5)


@pytest.mark.parametrize("angle", [0, -0.5, 3.2])
def test_nerf_field_of_view_outside_zero_pi_named(tmp_path, angle):
    nerf_scene(tmp_path)
    meta = json.loads((tmp_path / "transforms.json").read_text())
    del meta["fl_x"], meta["fl_y"]
    meta["camera_angle_x"] = angle  # 0 was a ZeroDivisionError
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"transforms\.json frame 0 .*'camera_angle_x' must be a field of view in "
                                         r"\(0, pi\) radians"):
        load_scene(tmp_path, n_random_points=5)


def test_one_frame_capture_is_a_training_view(tmp_path):
    sc = load_scene(nerf_scene(tmp_path, n=1), n_random_points=5)
    assert sc.train_idx.tolist() == [0] and sc.test_idx.tolist() == []
    assert [a.tolist() for a in split_indices(3, 1)] == [[0, 1, 2], []]
    assert [a.tolist() for a in split_indices(9)] == [[1, 2, 3, 4, 5, 6, 7], [0, 8]]


def test_ply_with_zero_vertices_named(tmp_path):
    ply_model(tmp_path / "z.ply", n=0)  # writing an empty model works; reading one is refused
    with pytest.raises(ValueError, match=r"z\.ply: 'element vertex 0': the PLY holds no Gaussians"):
        read_ply(tmp_path / "z.ply")


def test_capacity_and_initial_points_beyond_memory_refused_up_front(monkeypatch):
    monkeypatch.setattr(presets, "available_memory_bytes", lambda: 8 * 2**30)
    import splat.checks
    monkeypatch.setattr(splat.checks, "available_memory_bytes", lambda: 8 * 2**30)
    # 2**26 Gaussians of SH degree 3: parameters, gradients and Adam moments alone are 59 GiB, the projection 4 GiB more
    cfg = TrainConfig(capacity=2**26, sh_degree=3)
    with pytest.raises(ValueError, match=r"training with --backend pallas at --capacity 67108864 needs at least "
                                         r"63\.0 GiB, only 8\.0 GiB available; lower --capacity"):
        presets.check_training_memory(cfg, 64, 48)
    presets.check_training_memory(TrainConfig(capacity=100_000, sh_degree=3), 64, 48)
    with pytest.raises(ValueError, match=r"--init-points 1000000000 needs at least \d+\.\d GiB, only 8\.0 GiB "
                                         r"available; lower --init-points"):
        presets.check_init_points(10**9)
    presets.check_init_points(10**6)


def test_capacity_below_the_initial_points_is_said(tmp_path):
    sc = load_scene(nerf_scene(tmp_path), n_random_points=50)
    log = []
    assert presets.fit_to_machine(sc, steps=10, capacity=1, init_points=50, log=log.append) == 1
    assert any("--capacity 1 is below the 50 initial points: training starts from a random 1 of them" in m
               for m in log)
