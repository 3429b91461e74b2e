"""Image I/O (PNG writing without dependencies, reading via Pillow) and undistortion."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np


def to_uint8(img) -> np.ndarray:
    """uint8 image from uint8 or floats in [0, 1] (clipped, rounded; NaN -> 0), same shape."""
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a
    return (np.clip(np.nan_to_num(a.astype(np.float64)), 0, 1) * 255 + 0.5).astype(np.uint8)


def write_png(path, img) -> None:
    """Write an image to PNG. img: [H, W, 3] or [H, W] uint8, or floats in [0, 1]."""
    a = to_uint8(img)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"write_png: image must be [H, W], [H, W, 3] or [H, W, 4], got {a.shape}")
    h, w, c = a.shape
    color = {1: 0, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + a[i].tobytes() for i in range(h))

    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 6)))
        f.write(chunk(b"IEND", b""))


class _Refused(Exception):
    """An image that opened but cannot be used as asked (message without the path)."""


def read_image(path, downscale: int = 1, alpha_background=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Read an image as [H', W', 3] uint8, box-downscaled by an integer factor.

    H' = H // downscale, W' = W // downscale. RGBA images are composited onto
    ``alpha_background`` (RGB in [0, 1]); 16-bit grayscale is scaled to 8 bits (65535 -> 255);
    32-bit integer or float images raise ValueError. Needs Pillow.
    """
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover
        raise ImportError("reading images needs Pillow: pip install pillow") from e
    if isinstance(downscale, bool) or int(downscale) != downscale or downscale < 1:
        raise ValueError(f"{path}: downscale must be a positive integer, got {downscale!r}")
    downscale = int(downscale)
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w // downscale < 1 or h // downscale < 1:
                raise _Refused(f"downscale {downscale} is larger than the image ({w}x{h}); at most "
                               f"{min(w, h)}")
            size = (w // downscale, h // downscale)
            if downscale > 1 and im.format == "JPEG":
                im.draft("RGB", size)  # decode at reduced DCT scale: much faster, same size
            if im.mode.startswith("I;16") or (im.mode == "I" and im.format == "PNG"):
                # 16-bit grayscale: convert("RGB") clips every value above 255 to white
                g = np.asarray(im).astype(np.float64)
                im = Image.fromarray((np.clip(g, 0, 65535) / 257 + 0.5).astype(np.uint8), "L")
            elif im.mode in ("I", "F"):
                raise _Refused(f"{im.mode} mode ({'32-bit integer' if im.mode == 'I' else 'floating-point'}) "
                               "pixels are not supported; save the image as 8- or 16-bit PNG or JPEG")
            has_alpha = im.mode in ("RGBA", "LA") or "transparency" in im.info
            im = im.convert("RGBA" if has_alpha else "RGB")
            if im.size != size:
                im = im.resize(size, Image.Resampling.BOX)
            a = np.asarray(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such image file") from None
    except _Refused as e:
        raise ValueError(f"{path}: {e}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        # truncated or corrupt files (PIL raises OSError/SyntaxError), unknown formats
        raise ValueError(f"{path}: cannot read image ({e})") from None
    if has_alpha:
        rgb = a[..., :3].astype(np.float64)
        al = a[..., 3:4].astype(np.float64) / 255
        bg = np.asarray(alpha_background, np.float64) * 255
        a = np.clip(rgb * al + bg * (1 - al) + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a[..., :3])


def distort_points(x, y, dist):
    """OpenCV radial-tangential model on normalised coordinates; dist = (k1, k2, p1, p2)."""
    k1, k2, p1, p2 = (float(d) for d in dist)
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return xd, yd


def undistort_image(img, K, dist) -> np.ndarray:
    """Resample a distorted image onto the ideal pinhole camera with the same K and size.

    img [H, W, C] uint8; K [3, 3] pixels (pixel (i, j) centred at (j + 0.5, i + 0.5));
    dist (k1, k2, p1, p2). Each output pixel's ray is pushed through the distortion model
    and the input is sampled bilinearly there (edges clamped). Returns uint8 [H, W, C].
    """
    img = np.asarray(img)
    h, w = img.shape[:2]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    xd, yd = distort_points((jj - cx) / fx, (ii - cy) / fy, dist)
    u = np.clip(fx * xd + cx - 0.5, 0, w - 1)
    v = np.clip(fy * yd + cy - 0.5, 0, h - 1)
    u0 = np.minimum(np.floor(u).astype(int), w - 2 if w > 1 else 0)
    v0 = np.minimum(np.floor(v).astype(int), h - 2 if h > 1 else 0)
    u1, v1 = np.minimum(u0 + 1, w - 1), np.minimum(v0 + 1, h - 1)
    fu, fv = (u - u0)[..., None], (v - v0)[..., None]
    f = img.astype(np.float64)
    out = ((1 - fv) * ((1 - fu) * f[v0, u0] + fu * f[v0, u1])
           + fv * ((1 - fu) * f[v1, u0] + fu * f[v1, u1]))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
