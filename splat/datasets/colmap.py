"""COLMAP sparse models (cameras, images, points3D; text or binary)."""

from __future__ import annotations

import math
import os
import struct

import numpy as np

from jaxgraph import lie

from ..checks import (check_aspect, check_image_size, check_intrinsics, check_viewmat,
                      drop_invalid_points, warn_default)
from ..io.images import read_image, undistort_image
from .scene import Scene, random_points, scene_extent, split_indices, stack_views, warn_missing

# model id -> (name, number of params)
CAMERA_MODELS = {0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4),
                 3: ("RADIAL", 5), 4: ("OPENCV", 8), 5: ("OPENCV_FISHEYE", 8),
                 6: ("FULL_OPENCV", 12), 7: ("FOV", 5), 8: ("SIMPLE_RADIAL_FISHEYE", 4),
                 9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12)}
_MODEL_IDS = {v[0]: k for k, v in CAMERA_MODELS.items()}


def camera_to_pinhole(model: str, params):
    """(K [3, 3], dist (k1, k2, p1, p2)) of a COLMAP camera; only perspective models
    representable by OpenCV's k1 k2 p1 p2 are supported."""
    p = [float(x) for x in params]
    n_params = {"SIMPLE_PINHOLE": 3, "PINHOLE": 4, "SIMPLE_RADIAL": 4, "RADIAL": 5, "OPENCV": 8}
    if model in n_params and len(p) != n_params[model]:
        raise ValueError(f"COLMAP camera model {model} has {n_params[model]} parameters, "
                         f"got {len(p)}")
    if model == "SIMPLE_PINHOLE":
        f, cx, cy = p
        fx = fy = f
        dist = (0, 0, 0, 0)
    elif model == "PINHOLE":
        fx, fy, cx, cy = p
        dist = (0, 0, 0, 0)
    elif model == "SIMPLE_RADIAL":
        f, cx, cy, k = p
        fx = fy = f
        dist = (k, 0, 0, 0)
    elif model == "RADIAL":
        f, cx, cy, k1, k2 = p
        fx = fy = f
        dist = (k1, k2, 0, 0)
    elif model == "OPENCV":
        fx, fy, cx, cy, k1, k2, p1, p2 = p
        dist = (k1, k2, p1, p2)
    else:
        raise ValueError(f"COLMAP camera model {model} is not supported (use a perspective "
                         "model: SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV)")
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), tuple(float(d) for d in dist)


def _lines(path):
    """[(line number, text)] of the file's non-comment lines."""
    try:
        with open(path, encoding="utf-8") as f:
            return [(i + 1, ln.rstrip("\n")) for i, ln in enumerate(f) if not ln.startswith("#")]
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a COLMAP text file ({e.reason} at byte {e.start})") \
            from None


def _parse(path, lineno, text, fields: str, parse):
    """parse(tokens), turning a malformed line into an error naming file:line."""
    try:
        return parse(text.split())
    except (ValueError, IndexError):
        raise ValueError(f"{path}:{lineno}: malformed line, expected {fields}: {text!r}") \
            from None


def read_cameras_text(path):
    cams = {}
    for no, ln in _lines(path):
        if not ln.split():
            continue
        cid, cam = _parse(path, no, ln, "CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]", lambda t: (
            int(t[0]), dict(model=t[1], width=int(t[2]), height=int(t[3]),
                            params=[float(x) for x in t[4:]])))
        cams[cid] = cam
    return cams


def read_images_text(path):
    """{image_id: dict(qvec, tvec, camera_id, name)}; points2D lines are skipped."""
    lines = _lines(path)
    ims = {}
    i = 0
    fields = "IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME"

    def parse(t):
        if len(t) < 10:
            raise ValueError
        return int(t[0]), dict(qvec=np.array([float(x) for x in t[1:5]]),
                               tvec=np.array([float(x) for x in t[5:8]]),
                               camera_id=int(t[8]), name=" ".join(t[9:]))
    while i < len(lines):
        no, ln = lines[i]
        if not ln.split():
            i += 1
            continue
        iid, im = _parse(path, no, ln, fields, parse)
        if iid in ims:
            raise ValueError(f"{path}:{no}: duplicate IMAGE_ID {iid} (first on {ims[iid]['where']})")
        ims[iid] = dict(im, where=f"{path}:{no}")
        i += 1
        # the next line (possibly empty) lists the 2D points; a file without it (blank lines
        # stripped) must not lose the next image, as skipping two lines blindly did
        if i < len(lines) and _is_points2d(lines[i][1]):
            i += 1
    return ims


def _is_points2d(text: str) -> bool:
    """Whether ``text`` is a POINTS2D line: empty, or numbers in X Y POINT3D_ID triples."""
    toks = text.split()
    if len(toks) % 3:
        return False
    try:
        [float(t) for t in toks]
    except ValueError:
        return False
    return True


def read_points3d_text(path):
    xyz, rgb = [], []
    for no, ln in _lines(path):
        if not ln.split():
            continue
        p, c = _parse(path, no, ln, "POINT3D_ID X Y Z R G B ERROR TRACK[]", lambda t: (
            [float(x) for x in t[1:4]], [int(x) for x in t[4:7]]))
        if len(p) != 3 or len(c) != 3 or not all(0 <= v <= 255 for v in c):
            raise ValueError(f"{path}:{no}: malformed line, expected POINT3D_ID X Y Z R G B "
                             f"(R G B in 0..255) ...: {ln!r}")
        xyz.append(p)
        rgb.append(c)
    return np.array(xyz, np.float64).reshape(-1, 3), np.array(rgb, np.uint8).reshape(-1, 3)


def _read(f, fmt):
    size = struct.calcsize("<" + fmt)
    b = f.read(size)
    if len(b) != size:
        raise ValueError(f"{f.name}: truncated COLMAP binary file")
    return struct.unpack("<" + fmt, b)


def read_cameras_binary(path):
    cams = {}
    with open(path, "rb") as f:
        (n,) = _read(f, "Q")
        for _ in range(n):
            cid, mid, w, h = _read(f, "iiQQ")
            if mid not in CAMERA_MODELS:
                raise ValueError(f"{path}: unknown camera model id {mid}")
            name, k = CAMERA_MODELS[mid]
            cams[cid] = dict(model=name, width=w, height=h, params=list(_read(f, "d" * k)))
    return cams


def _skip(f, path, nbytes: int, what: str) -> None:
    """Seek ``nbytes`` forward, refusing a count that runs past the end of the file (a
    garbage count gave Python's "cannot fit 'int' into an offset-sized integer")."""
    size = os.fstat(f.fileno()).st_size
    if f.tell() + nbytes > size:
        raise ValueError(f"{path}: {what} runs past the end of the file (truncated or not a "
                         "COLMAP binary model)")
    f.seek(nbytes, 1)


def read_images_binary(path):
    ims = {}
    with open(path, "rb") as f:
        (n,) = _read(f, "Q")
        for _ in range(n):
            vals = _read(f, "idddddddi")
            name = b""
            while True:
                c = f.read(1)
                if c in (b"\x00", b""):
                    break
                name += c
            (n2d,) = _read(f, "Q")
            _skip(f, path, 24 * n2d, f"image {vals[0]}'s list of {n2d} 2D points")
            try:
                name = name.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{path}: image {vals[0]} has a name that is not UTF-8: "
                                 f"{name[:40]!r}") from None
            ims[vals[0]] = dict(qvec=np.array(vals[1:5]), tvec=np.array(vals[5:8]),
                                camera_id=vals[8], name=name, where=f"{path} image {vals[0]}")
    return ims


def read_points3d_binary(path):
    xyz, rgb = [], []
    with open(path, "rb") as f:
        (n,) = _read(f, "Q")
        for _ in range(n):
            vals = _read(f, "QdddBBBd")
            xyz.append(vals[1:4])
            rgb.append(vals[4:7])
            (tl,) = _read(f, "Q")
            _skip(f, path, 8 * tl, f"point {vals[0]}'s track of {tl} entries")
    return np.array(xyz, np.float64).reshape(-1, 3), np.array(rgb, np.uint8).reshape(-1, 3)


def find_sparse_dir(data_dir):
    """The folder holding cameras/images/points3D: data_dir/sparse/0, data_dir/sparse or
    data_dir itself."""
    for d in (os.path.join(data_dir, "sparse", "0"), os.path.join(data_dir, "sparse"), data_dir):
        if any(os.path.isfile(os.path.join(d, f"cameras.{e}")) for e in ("bin", "txt")):
            return d
    return None


def read_model(sparse_dir):
    """(cameras, images, (xyz, rgb)) from binary files if present, else text."""
    def pick(stem):
        for ext in ("bin", "txt"):
            p = os.path.join(sparse_dir, f"{stem}.{ext}")
            if os.path.isfile(p):
                return p, ext
        raise FileNotFoundError(f"{sparse_dir}: no {stem}.bin or {stem}.txt")

    (pc, ec), (pi, ei) = pick("cameras"), pick("images")
    cams = read_cameras_binary(pc) if ec == "bin" else read_cameras_text(pc)
    ims = read_images_binary(pi) if ei == "bin" else read_images_text(pi)
    try:
        pp, ep = pick("points3D")
        pts = read_points3d_binary(pp) if ep == "bin" else read_points3d_text(pp)
    except FileNotFoundError:
        pts = (np.zeros((0, 3)), np.zeros((0, 3), np.uint8))
    return cams, ims, pts


def load_colmap(data_dir, *, downscale: int = 1, test_every: int = 8, images_dir: str = "images",
                n_random_points: int = 20_000, seed: int = 0, max_images: int | None = None,
                warn=None) -> Scene:
    """Load a COLMAP scene: ``data_dir/sparse[/0]/{cameras,images,points3D}.{bin,txt}``
    and images in ``data_dir/images``. Images are sorted by name, box-downscaled by
    ``downscale`` and undistorted when the camera model has distortion. The SfM points
    initialise the Gaussians (random points in the cameras' bounds if there are none).
    """
    warn = warn or warn_default
    sparse = find_sparse_dir(data_dir)
    if sparse is None:
        raise FileNotFoundError(f"{data_dir}: no COLMAP model (sparse/0/cameras.bin|txt)")
    cams, ims, (xyz, rgb) = read_model(sparse)
    entries = sorted(ims.values(), key=lambda e: e["name"])
    images, viewmats, Ks, names, missing = [], [], [], [], []
    for e in entries:
        p = os.path.join(data_dir, images_dir, e["name"])
        if not os.path.isfile(p):
            missing.append(e["name"])
            continue
        if max_images is not None and len(images) >= max_images:
            continue
        where = f"{e['where']} ({e['name']})"
        cam = cams.get(e["camera_id"])
        if cam is None:
            raise ValueError(f"{where}: unknown camera {e['camera_id']} (cameras: "
                             f"{sorted(cams)})")
        cam_where = f"{sparse}: camera {e['camera_id']}"
        try:
            K, dist = camera_to_pinhole(cam["model"], cam["params"])
        except ValueError as err:
            raise ValueError(f"{cam_where}: {err}") from None
        cw, ch = check_image_size(cam["width"], cam["height"], cam_where)
        if not (np.isfinite(e["qvec"]).all() and np.isfinite(e["tvec"]).all()
                and np.linalg.norm(e["qvec"]) > 1e-6):
            raise ValueError(f"{where}: pose must be finite with a non-zero quaternion, got "
                             f"q={e['qvec'].tolist()} t={e['tvec'].tolist()}")
        img = read_image(p, int(downscale))
        check_aspect((cw, ch), (img.shape[1], img.shape[0]), where)
        K = K * np.array([[img.shape[1] / cw], [img.shape[0] / ch], [1.0]])
        check_intrinsics(K, img.shape[1], img.shape[0], f"{where} with {cam_where}")
        if any(dist):
            if not all(math.isfinite(d) for d in dist):
                raise ValueError(f"{cam_where}: distortion is not finite: {dist}")
            img = undistort_image(img, K, dist)
        vm = np.eye(4)
        vm[:3, :3] = np.asarray(lie.matrix_from_quaternion(e["qvec"]))
        vm[:3, 3] = e["tvec"]
        check_viewmat(vm, where)
        images.append(img)
        viewmats.append(vm)
        Ks.append(K)
        names.append(e["name"])
    warn_missing(missing, len(entries), warn)
    if not images:
        raise ValueError(f"{data_dir}: none of the {len(entries)} registered images exist")
    images, viewmats, Ks = stack_views(images, viewmats, Ks, data_dir)
    tr, te = split_indices(len(images), test_every)
    if len(xyz):
        pts, cols = drop_invalid_points(xyz, rgb.astype(np.float64) / 255,
                                        f"{sparse}: points3D", warn)
        src = "sfm"
    else:
        pts, cols = random_points(viewmats[tr], Ks[tr], images.shape[2], images.shape[1],
                                  n_random_points, seed)
        src = "random"
    return Scene(images=images, viewmats=viewmats, Ks=Ks, names=names, points=pts,
                 point_colors=cols, train_idx=tr, test_idx=te,
                 extent=scene_extent(viewmats[tr]), points_source=src)
