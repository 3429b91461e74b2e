"""Labelled comparison images for people: ground truth | render, with the PSNR."""

from __future__ import annotations

import math

import numpy as np

MIN_PANEL_WIDTH = 400  # pixels: small renders are enlarged to at least this width
GAP = 4  # pixels of white between the two panels
BAR = 24  # pixels of label bar above the panels


def to_uint8(img) -> np.ndarray:
    """[H, W, 3] uint8 from uint8 or floats in [0, 1] (NaN -> 0)."""
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a
    return (np.clip(np.nan_to_num(a.astype(np.float64)), 0, 1) * 255 + 0.5).astype(np.uint8)


def upscale_factor(width: int, min_width: int = MIN_PANEL_WIDTH) -> int:
    """Smallest integer factor that makes ``width`` at least ``min_width`` (>= 1)."""
    return max(1, math.ceil(min_width / max(1, int(width))))


def comparison_panel(gt, render, psnr: float, *, min_width: int = MIN_PANEL_WIDTH) -> np.ndarray:
    """[H', W', 3] uint8: ground truth (left) and render (right), each enlarged by
    nearest-neighbour repetition to >= ``min_width`` pixels wide, under a white bar
    labelled "ground truth" and "render  PSNR xx.xx dB".

    gt, render: [H, W, 3] uint8 or floats in [0, 1]; psnr in dB.
    """
    gt, render = to_uint8(gt), to_uint8(render)
    if gt.shape != render.shape or gt.ndim != 3 or gt.shape[2] != 3:
        raise ValueError(f"gt and render must both be [H, W, 3], got {gt.shape}, {render.shape}")
    s = upscale_factor(gt.shape[1], min_width)
    big = [np.repeat(np.repeat(a, s, 0), s, 1) for a in (gt, render)]
    h, w = big[0].shape[:2]
    out = np.full((BAR + h, 2 * w + GAP, 3), 255, np.uint8)
    out[BAR:, :w] = big[0]
    out[BAR:, w + GAP:] = big[1]
    _draw_labels(out, [(4, "ground truth"), (w + GAP + 4, f"render  PSNR {psnr:.2f} dB")])
    return out


def _draw_labels(img: np.ndarray, labels) -> None:
    """Write black text at (x, 4) for each (x, text) into the uint8 image, in place."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=16)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        font = ImageFont.load_default()
    pic = Image.fromarray(img)
    draw = ImageDraw.Draw(pic)
    for x, text in labels:
        draw.text((x, 4), text, fill=(0, 0, 0), font=font)
    img[...] = np.asarray(pic)
