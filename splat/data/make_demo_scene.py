"""Regenerate ``demo_scene.npz`` (the small bundled training scene) from gsplat's
``test_garden.npz`` (Apache-2.0; see README.md here).

    python -m splat.data.make_demo_scene ../shared/data/splat/test_garden.npz splat/data/demo_scene.npz

Ground-truth images: the garden's SfM points become isotropic Gaussians (scale from
the nearest-neighbour distance, opacity 0.9, the point colour) rendered by
``splat.rasterization`` into 16 cameras made by blending and slightly perturbing the three
real camera poses, at 1/4 of the real resolution (162 x 105: the demo's renders show the
table's detail; at 1/8, 81 x 52, they were a few blown-up pixels). The scene's initial points are a random
subset of the SfM points with noise added, so training has something to learn.
"""

from __future__ import annotations

import sys

import numpy as np


def _slerp_rot(r0, r1, t):
    from scipy.spatial.transform import Rotation, Slerp
    return Slerp([0, 1], Rotation.from_matrix(np.stack([r0, r1])))([t]).as_matrix()[0]


def make(src, dst, n_views=16, downscale=4, n_gt=40000, n_init=3000, seed=0):
    import jax.numpy as jnp
    import splat
    from splat.datasets.scene import camera_centers
    from splat.train.state import knn_mean_dist

    rng = np.random.default_rng(seed)
    z = np.load(src)
    pts = z["means3d"].astype(np.float64)
    cols = z["colors"].astype(np.float64) / 255
    vm0 = z["viewmats"].astype(np.float64)
    K0 = z["Ks"].astype(np.float64)
    w, h = int(z["width"]) // downscale, int(z["height"]) // downscale
    # keep the points near the cameras' look-at region (the garden table)
    cen = camera_centers(vm0)
    d = np.linalg.norm(pts - np.median(pts, 0), axis=1)
    near = d < np.percentile(d, 60)
    sel = rng.choice(np.flatnonzero(near), min(n_gt, int(near.sum())), replace=False)
    gp, gc = pts[sel], cols[sel]
    scale = np.clip(knn_mean_dist(gp), 1e-4, None)[:, None].repeat(3, 1)
    vms, Ks = [], []
    for i in range(n_views):
        a, b = i % 3, (i + 1) % 3
        t = (i // 3) / max(1, (n_views - 1) // 3 + 1) + rng.uniform(0, 0.2)
        r = _slerp_rot(vm0[a, :3, :3], vm0[b, :3, :3], t)
        c = (1 - t) * cen[a] + t * cen[b] + rng.normal(0, 0.05, 3) * np.linalg.norm(cen[a] - cen[b])
        vm = np.eye(4)
        vm[:3, :3] = r
        vm[:3, 3] = -r @ c
        vms.append(vm)
        K = K0[a].copy()
        K[:2] *= np.array([[w / int(z["width"])], [h / int(z["height"])]])
        Ks.append(K)
    vms, Ks = np.stack(vms), np.stack(Ks)
    imgs, _, _ = splat.rasterization(
        jnp.asarray(gp, jnp.float32), jnp.tile(jnp.asarray([[1.0, 0, 0, 0]], jnp.float32), (len(gp), 1)),
        jnp.asarray(scale, jnp.float32), jnp.full((len(gp),), 0.9, jnp.float32),
        jnp.asarray(gc, jnp.float32), jnp.asarray(vms, jnp.float32), jnp.asarray(Ks, jnp.float32),
        w, h, backend="pallas")
    images = np.clip(np.asarray(imgs) * 255 + 0.5, 0, 255).astype(np.uint8)
    isel = rng.choice(len(gp), n_init, replace=False)
    init = gp[isel] + rng.normal(0, 1, (n_init, 3)) * scale[isel]
    np.savez_compressed(dst, means3d=init.astype(np.float32),
                        colors=(gc[isel] * 255).astype(np.uint8), viewmats=vms.astype(np.float32),
                        Ks=Ks.astype(np.float32), width=np.int64(w), height=np.int64(h),
                        images=images)
    return images


if __name__ == "__main__":
    make(sys.argv[1], sys.argv[2])
