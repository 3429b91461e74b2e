"""Camera tracking: the pose of one image in a trained model by Levenberg-Marquardt through
the rasterizer, with jaxgraph's solver (docs/poses.md).

The problem has one SE(3) variable, the world-to-camera pose ``T_cw`` (jaxgraph's row
``(qw, qx, qy, qz, x, y, z)``, right perturbation ``T_cw Exp(d)``, ``d = (v, w)``), and one
factor per pixel whose residual is the rendered minus the observed colour [3] (so a robust
loss acts per pixel). The factor type renders once per linearisation and takes the
Jacobian of the whole image with respect to the 6 tangent coordinates by 6 forward tangents
(``jax.jacfwd``; through the Pallas backend its tangent kernel,
:mod:`splat.raster.pallas.tangent`), or by a reverse pass per residual (``jax.jacrev``)
through the model's own backend (tests/splat: both match finite differences).

jaxgraph's solver is imported when :func:`localize` first runs: ``import splat`` loads none
of it (tests/splat/test_imports.py).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxgraph import lie

from ..train.poses import JACOBIAN_MODES, tangent_jacobian
from ..train.state import TrainConfig, render


def _as_model(model):
    """(params dict of arrays, TrainConfig) from (params, cfg), a params dict or a path."""
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        from ..train.checkpoint import load_model
        params, cfg, _ = load_model(model)
        return params, cfg
    if isinstance(model, tuple):
        return model
    n = np.shape(model["means"])[0]
    deg = int(round(np.sqrt(np.shape(model["shN"])[1] + 1))) - 1
    return model, TrainConfig(capacity=n, sh_degree=deg)


def render_pose(params, cfg: TrainConfig, viewmat, K, width: int, height: int):
    """Render every Gaussian of ``params`` (N, all active) into one camera: [H, W, 3].

    viewmat [4, 4] world-to-camera; K [3, 3] pixels; the intersection buffer holds
    ``cfg.isect_per_gaussian * N`` entries (static; jit-, jvp- and grad-compatible).
    """
    n = params["means"].shape[0]
    img, _, _ = render(params, jnp.ones((n,), bool), viewmat[None], K[None], width, height,
                       cfg)
    return img[0]


def pose_jacobian(params, cfg: TrainConfig, pose_row, K, width: int, height: int,
                  mode: str = "forward", with_image: bool = False):
    """d(image)/d(d) at ``d = 0`` for the pose ``SE3(pose_row) Exp(d)``: [H, W, 3, 6].

    pose_row [7] jaxgraph's SE3 row (qw, qx, qy, qz, x, y, z) of the world-to-camera pose;
    K [3, 3]; mode "forward": 6 forward tangents through ``cfg.backend`` (Pallas: its
    tangent kernel); "reverse": one reverse pass per image value (``jax.jacrev``, vmapped)
    through ``cfg.backend``. Both are exact derivatives of the same image. ``with_image``:
    return ``(image [H, W, 3], Jacobian)``, the image rendered on the way.
    """
    def image(d, rcfg):
        vm = (lie.SE3(pose_row) @ lie.SE3.exp(d)).as_matrix()
        return render_pose(params, rcfg, vm, K, width, height)

    return tangent_jacobian(image, cfg, pose_row.dtype, mode, with_value=with_image)


def _factor_type():
    """The photometric factor type (a subclass of jaxgraph's FactorType, built on first use
    so that importing this module loads no solver)."""
    from jaxgraph.graph.factors import FactorType

    @dataclasses.dataclass(frozen=True)
    class Photometric(FactorType):
        """Pixel k's residual: rendered minus observed colour [3]; the measurement is
        dict(observed=[M, 3], params=model dict, K=[3, 3]); every factor's slot is the one
        pose, so the image is rendered once for all M pixels."""

        cfg: TrainConfig
        width: int
        height: int
        jacobian: str

        def __str__(self):
            return "photometric"

        def residual_dim(self, kinds):
            return 3

        def absolute(self, slots):
            return True

        def check(self, group, kinds):
            obs = group.measurement["observed"]
            if tuple(obs.shape) != (self.width * self.height, 3):
                raise ValueError(f"factor group {group.name!r}: observed must be "
                                 f"[{self.width * self.height}, 3], got {tuple(obs.shape)}")

        def residual_and_jacobians(self, group, kinds, params, with_jacobians=True):
            m = group.measurement
            row = params[0][0]  # all M factors see the same (only) pose
            if not with_jacobians:
                vm = lie.SE3(row).as_matrix()
                img = render_pose(m["params"], self.cfg, vm, m["K"], self.width, self.height)
                return img.reshape(-1, 3) - m["observed"], None
            # the image the Jacobian's pass renders on the way: one render, not two
            img, J = pose_jacobian(m["params"], self.cfg, row, m["K"], self.width, self.height,
                                   self.jacobian, with_image=True)
            r = img.reshape(-1, 3) - m["observed"]
            return r, (J.reshape(-1, 3, 6).astype(r.dtype),)

    return Photometric


@functools.lru_cache(maxsize=None)
def _photometric_class():
    return _factor_type()


def downsample(image, factor: int):
    """Box-average an [H, W, 3] image by ``factor`` (H, W cropped to multiples)."""
    h, w = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    img = image[:h, :w]
    return img.reshape(h // factor, factor, w // factor, factor, -1).mean((1, 3))


def scale_intrinsics(K, factor: int):
    """Intrinsics of an image downsampled ``factor`` times by :func:`downsample` (pixel
    centres at +0.5: ``c' = c / factor``, ``f' = f / factor``)."""
    K = np.array(K, np.float64)
    K[:2] /= factor
    return K


def solve_level(params, cfg, image, K, row, *, robust, noise_sigma, jacobian, settings):
    """One Levenberg-Marquardt solve at one image size, as :func:`localize` runs each level.

    params: model dict (N Gaussians); image [H, W, 3] float in [0, 1]; K [3, 3]; row [7] the
    starting SE3 row; ``settings`` go to :func:`jaxgraph.solve`. Returns (new row [7],
    SolveInfo). Traceable in params, image, K and row (``jax.jit`` over them gives the
    solve's whole program: benchmarks/gpu_compile.py lowers it for CUDA that way).
    """
    import jaxgraph
    from jaxgraph.graph import FactorGroup, Problem, VariableGroup

    h, w = image.shape[:2]
    dt = row.dtype
    ftype = _photometric_class()(cfg=cfg, width=int(w), height=int(h), jacobian=jacobian)
    meas = dict(observed=jnp.asarray(image, dt).reshape(-1, 3),
                params={k: jnp.asarray(v, dt) for k, v in params.items()},
                K=jnp.asarray(K, dt))
    rob = None if robust is None else jaxgraph.robust.Huber(float(robust))
    group = FactorGroup("photometric", ftype, ("pose",), np.zeros((h * w, 1), np.int64), meas,
                        jaxgraph.noise.isotropic(noise_sigma), rob)
    problem = Problem([VariableGroup("pose", lie.SE3, 1)], [group])
    # "cholesky": the fixed-pattern solver; the size-classed ones pad the factor rows, and
    # this factor's measurement holds the model besides the per-pixel rows
    out, info = jaxgraph.solve(problem, {"pose": row[None]}, linear_solver="cholesky",
                               **settings)
    return out["pose"][0], info


@functools.partial(jax.jit, static_argnames=("cfg", "robust", "noise_sigma", "jacobian", "settings"))
def _solve_level_jit(params, image, K, row, *, cfg, robust, noise_sigma, jacobian, settings):
    """:func:`solve_level` as one ``jax.jit`` program (``settings``: sorted items). Inside a
    jit, jaxgraph's solver compiles with the enclosing program's options, XLA's defaults,
    instead of its own (fusion emitters off: made for factor graphs, where they cut the
    compile for the same run time); the rasterizer's interpreted Pallas kernels run about
    2.5x slower without the emitters (fox downscale 8, the pose Jacobian: 2.95 s against
    1.2 s on one core)."""
    return solve_level(params, cfg, image, K, row, robust=robust, noise_sigma=noise_sigma,
                       jacobian=jacobian, settings=dict(settings))


def localize(model, image, K, initial_viewmat, *, levels: int = 1, robust: float | None = None,
             noise_sigma: float = 1.0 / 255, jacobian: str = "forward",
             max_iterations: int = 30, return_levels: bool = False, **solver_settings):
    """Estimate the world-to-camera pose of ``image`` in a trained model (docs/poses.md).

    Args:
      model: ``(params, cfg)`` (a params dict as ``TrainState.params`` restricted to the
        Gaussians to render, and the :class:`TrainConfig` to render with), a params dict
        (default config at its SH degree) or a path to a checkpoint.npz / .ply.
      image: [H, W, 3] uint8, or float in [0, 1].
      K: [3, 3] intrinsics in pixels of ``image``.
      initial_viewmat: [4, 4] world-to-camera (OpenCV axes) to start from.
      levels: coarse-to-fine pyramid levels: level l solves at 1/2^l of the size (box
        averaged image, scaled K), coarsest first, each starting where the last stopped.
      robust: Huber threshold on a pixel's colour residual (in units of ``noise_sigma``
        after whitening, i.e. the residual / noise_sigma), or None for least squares.
      noise_sigma: standard deviation of a colour value (image units: 1 = full range).
      jacobian: "forward" (6 forward tangents) or "reverse" (see :func:`pose_jacobian`).
      max_iterations: LM trials per level; further ``solver_settings`` go to
        :func:`jaxgraph.solve` (``tolerance``, ``initial_damping``, ...).
      return_levels: also return the list of every level's SolveInfo (coarsest first).

    The dtype of the solve is ``initial_viewmat``'s if floating (float64 needs
    ``jax_enable_x64``), else float32.

    Returns:
      ``(viewmat [4, 4] numpy, info)``: info is the finest level's :class:`jaxgraph.SolveInfo`
      (``info.converged``/``info.status`` of that solve; its iterations count that level),
      and with ``return_levels`` a third item, the list of all levels' infos.
    """
    params, cfg = _as_model(model)
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    if jacobian not in JACOBIAN_MODES:
        raise ValueError(f"jacobian must be one of {JACOBIAN_MODES}, got {jacobian!r}")
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be [H, W, 3], got {img.shape}")
    img = img.astype(np.float64) / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)
    # the solve runs inside one jit, where the solver cannot check its inputs' values
    for name, x in (("image", img), ("K", K), ("initial_viewmat", initial_viewmat)):
        if not np.all(np.isfinite(np.asarray(x, np.float64))):
            raise ValueError(f"localize: {name} has non-finite values")
    vm0 = jnp.asarray(initial_viewmat)
    dt = vm0.dtype if jnp.issubdtype(vm0.dtype, jnp.floating) else jnp.float32
    if np.shape(initial_viewmat) != (4, 4) or np.shape(K) != (3, 3):
        raise ValueError("initial_viewmat must be [4, 4] and K [3, 3]")
    n = int(np.shape(params["means"])[0])
    cfg = dataclasses.replace(cfg, capacity=n)
    row = lie.SE3.from_matrix(jnp.asarray(initial_viewmat, dt)).parameters()
    infos = []
    for level in range(levels - 1, -1, -1):
        f = 2 ** level
        lvl_img = downsample(img, f) if f > 1 else img
        settings = tuple(sorted(dict(solver_settings, max_iterations=max_iterations).items()))
        row, info = _solve_level_jit(params, jnp.asarray(lvl_img, dt),
                                     jnp.asarray(scale_intrinsics(K, f), dt), row, cfg=cfg,
                                     robust=robust, noise_sigma=float(noise_sigma),
                                     jacobian=jacobian, settings=settings)
        infos.append(info)
    vm = np.asarray(lie.SE3(row).as_matrix(), np.float64)
    return (vm, infos[-1], infos) if return_levels else (vm, infos[-1])
