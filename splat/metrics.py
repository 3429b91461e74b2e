"""Image quality metrics in JAX: PSNR and SSIM, and both per view of a set of renders.

SSIM uses a Gaussian window, as in Wang et al. 2004 and 3DGS: an 11 x 11 Gaussian
(sigma 1.5) applied separably; only positions where the window fits inside the image
are used ("valid" filtering, as skimage's ``gaussian_weights=True`` mode and
pytorch-msssim do). Constants C1 = (0.01 L)^2, C2 = (0.03 L)^2 with data range L.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


# mean squared errors are floored here so that identical images give 100 dB, not inf
MSE_FLOOR = 1e-10
# SSIM's window side in pixels; smaller images have no SSIM
SSIM_WINDOW = 11


def psnr(mse):
    """PSNR in dB of images in [0, 1] from their mean squared error (any shape; traced
    values allowed): -10 log10(max(mse, 1e-10))."""
    return -10.0 * jnp.log10(jnp.maximum(mse, MSE_FLOOR))


def _gauss_matrix(n: int, size: int, sigma: float, dtype):
    """[n - size + 1, n] banded matrix: row i holds the normalised 1D window at i."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-0.5 * (x / sigma) ** 2)
    g /= g.sum()
    m = np.zeros((n - size + 1, n), np.float64)
    for i in range(n - size + 1):
        m[i, i:i + size] = g
    return jnp.asarray(m, dtype)


def ssim_map(img1, img2, *, data_range: float = 1.0, window_size: int = SSIM_WINDOW,
             sigma: float = 1.5):
    """Per-position SSIM map.

    img1, img2: [..., H, W, C] with H, W >= window_size (float, same dtype).
    Returns [..., H - window_size + 1, W - window_size + 1, C] in img1's dtype.
    """
    img1 = jnp.asarray(img1)
    if not jnp.issubdtype(img1.dtype, jnp.floating):
        img1 = img1.astype(jnp.float32)
    dt = img1.dtype
    img2 = jnp.asarray(img2).astype(dt)
    if img1.shape != img2.shape:
        raise ValueError(f"ssim: shapes differ: {img1.shape} vs {img2.shape}")
    if img1.ndim < 3:
        raise ValueError(f"ssim: images must be [..., H, W, C], got shape {img1.shape}")
    h, w = img1.shape[-3], img1.shape[-2]
    if h < window_size or w < window_size:
        raise ValueError(f"ssim: image {h}x{w} smaller than the {window_size}x{window_size} window")
    gy = _gauss_matrix(h, window_size, sigma, dt)
    gx = _gauss_matrix(w, window_size, sigma, dt)

    def filt(x):
        return jnp.einsum("ih,...hwc,jw->...ijc", gy, x, gx)

    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu1, mu2 = filt(img1), filt(img2)
    s11 = filt(img1 * img1) - mu1 * mu1
    s22 = filt(img2 * img2) - mu2 * mu2
    s12 = filt(img1 * img2) - mu1 * mu2
    num = (2 * mu1 * mu2 + c1) * (2 * s12 + c2)
    den = (mu1 * mu1 + mu2 * mu2 + c1) * (s11 + s22 + c2)
    return num / den


def ssim(img1, img2, *, data_range: float = 1.0, window_size: int = SSIM_WINDOW,
         sigma: float = 1.5):
    """Mean SSIM over positions and channels (and leading batch axes): scalar.

    img1, img2: [..., H, W, C] floats in [0, data_range]. Identical images give 1.
    """
    return jnp.mean(ssim_map(img1, img2, data_range=data_range, window_size=window_size,
                             sigma=sigma))


def image_metrics(images, gts) -> dict:
    """PSNR and SSIM of each render against its ground truth.

    images: [V, H, W, 3] floats in [0, 1]; gts: [V, H, W, 3] uint8. Returns dict(psnr [V]
    float64 dB, ssim [V] float64), numpy; SSIM is NaN for images smaller than its
    11 x 11 window.
    """
    imgs = np.asarray(images, np.float64)
    gts = np.asarray(gts).astype(np.float64) / 255.0
    mse = ((imgs - gts) ** 2).mean(axis=(1, 2, 3))
    ps = np.asarray(psnr(jnp.asarray(mse)), np.float64)
    if min(imgs.shape[1:3]) >= SSIM_WINDOW:
        ss = np.array([float(ssim(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)))
                       for a, b in zip(imgs, gts)])
    else:
        ss = np.full(len(imgs), np.nan)
    return dict(psnr=ps, ssim=ss)
