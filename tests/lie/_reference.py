"""Independent float64 numpy references for the tests (closed forms, no jaxgraph code)."""

import numpy as np


def hat(w):
    return np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]], dtype=np.float64)


def vee(m):
    return 0.5 * np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]])


def expm(m, terms=60):
    """Matrix exponential by scaling and squaring of the Taylor series (float64)."""
    m = np.asarray(m, dtype=np.float64)
    scale = max(0, int(np.ceil(np.log2(max(np.abs(m).sum(), 1e-300)))) + 1)
    a = m / 2.0**scale
    out = np.eye(m.shape[0])
    term = np.eye(m.shape[0])
    for k in range(1, terms):
        term = term @ a / k
        out = out + term
    for _ in range(scale):
        out = out @ out
    return out


def rotation(w):
    return expm(hat(w))


def right_jacobian_inverse(w):
    """Jr(w)^-1 in closed form, with its limits at 0 and at pi."""
    theta = np.linalg.norm(w)
    W = hat(w)
    if theta < 1e-5:
        d = 1.0 / 12.0
    elif abs(theta - np.pi) < 1e-12:
        d = 1.0 / np.pi**2
    else:
        d = 1.0 / theta**2 - (1.0 + np.cos(theta)) / (2.0 * theta * np.sin(theta))
    return np.eye(3) + 0.5 * W + d * W @ W


def se3_hat(xi):
    m = np.zeros((4, 4))
    m[:3, :3] = hat(xi[3:])
    m[:3, 3] = xi[:3]
    return m


def se2_hat(xi):
    m = np.zeros((3, 3))
    m[0, 1], m[1, 0] = -xi[2], xi[2]
    m[:2, 2] = xi[:2]
    return m
