"""SSIM against a float64 window-by-window reference; PLY exact round trip and layout."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from splat.io.ply import read_ply, write_ply
from splat.metrics import ssim


def ssim_naive(a, b, win=11, sigma=1.5, L=1.0):
    """Textbook SSIM: every valid window position, weighted statistics, float64."""
    x = np.arange(win) - (win - 1) / 2
    g1 = np.exp(-x ** 2 / (2 * sigma ** 2))
    w = np.outer(g1, g1)
    w /= w.sum()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    h, wd, ch = a.shape
    vals = []
    for c in range(ch):
        for i in range(h - win + 1):
            for j in range(wd - win + 1):
                pa = a[i:i + win, j:j + win, c]
                pb = b[i:i + win, j:j + win, c]
                ma, mb = (w * pa).sum(), (w * pb).sum()
                va = (w * (pa - ma) ** 2).sum()
                vb = (w * (pb - mb) ** 2).sum()
                cov = (w * (pa - ma) * (pb - mb)).sum()
                vals.append((2 * ma * mb + c1) * (2 * cov + c2)
                            / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_naive_float64_and_float32():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(15, 17, 2))
    b = np.clip(a + 0.2 * rng.normal(size=a.shape), 0, 1)
    ref = ssim_naive(a, b)
    got64 = ssim(jnp.asarray(a, jnp.float64), jnp.asarray(b, jnp.float64))
    assert got64.dtype == jnp.float64
    assert abs(float(got64) - ref) < 1e-10
    got32 = ssim(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
    assert got32.dtype == jnp.float32
    assert abs(float(got32) - ref) < 1e-5
    assert float(ssim(jnp.asarray(a, jnp.float32), jnp.asarray(a, jnp.float32))) == \
        pytest.approx(1.0, abs=1e-6)


def test_ssim_gradient_finite_on_constant_images_and_bad_input():
    z = jnp.zeros((12, 12, 3), jnp.float32)
    g = jax.grad(lambda x: ssim(x, z))(z)
    assert np.isfinite(np.asarray(g)).all()
    with pytest.raises(ValueError, match="smaller than"):
        ssim(jnp.zeros((5, 20, 3)), jnp.zeros((5, 20, 3)))
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(jnp.zeros((12, 12, 3)), jnp.zeros((12, 13, 3)))


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_ply_round_trip_exact(tmp_path, degree):
    rng = np.random.default_rng(degree)
    n, k = 37, (degree + 1) ** 2
    p = dict(means=rng.normal(size=(n, 3)).astype(np.float32),
             quats=rng.normal(size=(n, 4)).astype(np.float32),
             log_scales=rng.normal(size=(n, 3)).astype(np.float32),
             logit_opacities=rng.normal(size=n).astype(np.float32),
             sh=rng.normal(size=(n, k, 3)).astype(np.float32))
    path = tmp_path / "g.ply"
    write_ply(path, **p)
    g = read_ply(path)
    for key, v in p.items():
        assert getattr(g, key).dtype == np.float32
        np.testing.assert_array_equal(getattr(g, key), v)


def test_ply_layout_is_3dgs(tmp_path):
    """Header property order and f_rest channel-major layout, read back independently."""
    n = 2
    sh = np.arange(n * 4 * 3, dtype=np.float32).reshape(n, 4, 3)  # degree 1
    path = tmp_path / "g.ply"
    write_ply(path, np.ones((n, 3)), np.tile([1, 0, 0, 0], (n, 1)), np.zeros((n, 3)),
              np.zeros(n), sh)
    raw = path.read_bytes()
    head, body = raw.split(b"end_header\n", 1)
    lines = head.decode().splitlines()
    assert lines[:3] == ["ply", "format binary_little_endian 1.0", "element vertex 2"]
    props = [ln.split()[-1] for ln in lines[3:]]
    assert props[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert props[9:18] == [f"f_rest_{i}" for i in range(9)]
    assert props[18:] == ["opacity", "scale_0", "scale_1", "scale_2",
                          "rot_0", "rot_1", "rot_2", "rot_3"]
    rows = np.frombuffer(body, "<f4").reshape(n, len(props))
    # f_rest_0..2 are red's 3 higher coefficients: sh[:, 1:, 0]
    np.testing.assert_array_equal(rows[:, 9:12], sh[:, 1:, 0])
    np.testing.assert_array_equal(rows[:, 6:9], sh[:, 0, :])


def test_ply_errors(tmp_path):
    p = tmp_path / "x.ply"
    p.write_bytes(b"not a ply\n")
    with pytest.raises(ValueError, match="not a PLY"):
        read_ply(p)
    with pytest.raises(ValueError, match="degree"):
        write_ply(tmp_path / "y.ply", np.zeros((1, 3)), np.zeros((1, 4)), np.zeros((1, 3)),
                  np.zeros(1), np.zeros((1, 2, 3)))
