"""Pictures for people: labelled "ground truth | render" comparisons with the PSNR, the
rendered views as PNG files, and the training curve."""

from __future__ import annotations

import math
import os

import numpy as np

from .io.images import to_uint8, write_png

MIN_PANEL_WIDTH = 400  # pixels: small renders are enlarged to at least this width
GAP = 4  # pixels of white between the two panels
BAR = 24  # pixels of label bar above the panels


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


def training_curve_png(path, history) -> bool:
    """Plot loss, train PSNR (smoothed over ~1/50 of the run) and active Gaussians per
    step of ``history`` (:meth:`splat.train.Trainer.fit`'s per-step metric dicts) into the
    PNG ``path``; False (nothing written) when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    steps = np.arange(1, len(history) + 1)
    loss = np.array([h["loss"] for h in history])
    ps = np.array([h["psnr"] for h in history])
    n = np.array([h["n_active"] for h in history])
    k = max(1, len(history) // 50)
    smooth = lambda x: np.convolve(x, np.ones(k) / k, mode="valid")  # noqa: E731
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.2))
    ax[0].plot(steps[k - 1:], smooth(loss)); ax[0].set_title("loss"); ax[0].set_xlabel("step")
    ax[1].plot(steps[k - 1:], smooth(ps)); ax[1].set_title("train PSNR (dB)")
    ax[1].set_xlabel("step")
    ax[2].plot(steps, n); ax[2].set_title("active Gaussians"); ax[2].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def save_views(out_dir, imgs, gts=None, psnrs=None, prefix: str = "view") -> list:
    """Write each render of imgs [V, H, W, 3] (floats in [0, 1] or uint8) as
    ``out_dir/{prefix}_{i:03d}.png``; with ground truths ``gts`` [V, H, W, 3] uint8 and
    ``psnrs`` [V] (dB), a labelled, enlarged "ground truth | render" comparison
    (:func:`comparison_panel`) instead. Returns the paths written."""
    paths = []
    for i, im in enumerate(imgs):
        pic = im if gts is None else comparison_panel(gts[i], im, float(psnrs[i]))
        p = os.path.join(out_dir, f"{prefix}_{i:03d}.png")
        write_png(p, pic)
        paths.append(p)
    return paths
