"""The ``splat`` argument parser: every subcommand, flag, default and help text."""

from __future__ import annotations

import argparse
import math

# `splat demo` writes here unless --out says otherwise
DEMO_OUT = "splat_demo"


def _version() -> str:
    """The installed distribution's version (splat ships in the ``jaxgraph`` distribution)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jaxgraph")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"


def _int_type(lo: int, what: str):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be {what}, got {v}")
        return v
    parse.__name__ = "integer"
    return parse


positive_int = _int_type(1, "a positive integer (>= 1)")
nonnegative_int = _int_type(0, "a non-negative integer (>= 0)")


def positive_float(text: str) -> float:
    """A finite number > 0 (argparse type)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return v


def nonnegative_float(text: str) -> float:
    """A finite number >= 0 (argparse type)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return v


class _HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: ...)" to every flag's help unless the help already states it
    (flags whose default is computed say so in words); on/off flags default to off."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or not action.option_strings or action.default is argparse.SUPPRESS:
            return text
        if action.nargs == 0 and action.const is True:  # store_true
            return text + " (default: off)"
        return text + " (default: %(default)s)"


def _train_args(p, steps, out_default=None):
    if out_default is None:
        p.add_argument("--out", required=True, help="output folder (created; required)")
    else:
        p.add_argument("--out", default=out_default, help="output folder (created)")
    p.add_argument("--steps", type=positive_int, default=steps, help="optimiser steps")
    p.add_argument("--strategy", choices=("default", "mcmc", "none"), default="default",
                   help="densification: 3DGS clone/split/prune, MCMC relocation, or none")
    p.add_argument("--absgrad", action="store_true",
                   help="densify on gsplat's absgrad instead of the 2D-mean gradient")
    p.add_argument("--capacity", type=positive_int, default=None,
                   help="maximum number of Gaussians (a static array size; default: sized "
                   "from the image size, the initial points and --steps for this device, "
                   "see docs/training.md)")
    p.add_argument("--sh-degree", type=int, choices=range(4), default=None,
                   help="spherical-harmonics degree of the colours (default: 1 for demo, "
                   "3 for train)")
    p.add_argument("--backend", choices=("pallas", "reference"), default="pallas",
                   help="rasterizer: Pallas kernels or the plain-JAX reference")
    p.add_argument("--seed", type=int, default=0, help="random seed (initial points, views)")
    p.add_argument("--log-every", type=nonnegative_int, default=25,
                   help="print a progress line every N steps (0: never)")
    p.add_argument("--resume", default=None,
                   help="checkpoint.npz to continue training from (default: start afresh)")
    p.add_argument("--pose-opt", action="store_true",
                   help="refine each training camera's pose with an SE(3) correction learnt "
                   "with the model (docs/poses.md); the refined poses go into the checkpoint "
                   "(refined_viewmats) and metrics.json")
    p.add_argument("--lr-pose", type=float, default=3e-3,
                   help="with --pose-opt: Adam rate of the rotation (rad); translation: this "
                   "times the scene extent")
    p.add_argument("--pose-weight-decay", type=float, default=0.0,
                   help="with --pose-opt: L2 decay of the corrections (gsplat's pose_opt_reg)")
    p.add_argument("--pose-opt-start", type=nonnegative_int, default=300,
                   help="with --pose-opt: steps before the poses move, while the model forms "
                   "(its gradients point anywhere before; docs/poses.md)")
    p.add_argument("--pose-optimizer", choices=("adam", "gauss_newton"), default="adam",
                   help="with --pose-opt: how a drawn camera's correction moves: a per-camera "
                   "Adam step on the loss's gradient, or one Levenberg-Marquardt step on the "
                   "view's photometric residual (6x6 normal equations, exact Jacobian from "
                   "6 forward tangents of the renderer: about 3x the cost of a step; "
                   "docs/poses.md)")
    p.add_argument("--pose-gn-damping", type=nonnegative_float, default=0.1,
                   help="with --pose-optimizer gauss_newton: Marquardt's lambda (times the "
                   "diagonal of J^T J)")
    p.add_argument("--pose-gn-max-step-deg", type=positive_float, default=0.25,
                   help="with --pose-optimizer gauss_newton: largest turn of a camera per "
                   "step (degrees); its move is capped at that angle in radians times the "
                   "scene extent")


def build_parser() -> argparse.ArgumentParser:
    """The ``splat`` argument parser (every flag has help text and a default)."""
    fmt = dict(formatter_class=_HelpFormatter)
    ap = argparse.ArgumentParser(prog="splat", description="3D Gaussian Splatting in JAX", **fmt)
    ap.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                    help="print the installed version and exit")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train on a scene folder (transforms.json or COLMAP) or npz",
                       **fmt)
    t.add_argument("data", help="scene: folder with transforms.json or COLMAP sparse/0, "
                   "or a gsplat .npz")
    _train_args(t, 3000)
    t.add_argument("--downscale", type=positive_int, default=1,
                   help="divide the image size by this integer")
    t.add_argument("--init-points", type=positive_int, default=None,
                   help="initial random points when the scene has no point cloud, else the "
                   "most point-cloud points used (default: for this device: CPU about one "
                   "per 8 pixels of an image, 1000 to 10000, all of a point cloud up to "
                   "10000; GPU 100000 and the whole point cloud)")
    r = sub.add_parser("render", help="render a checkpoint.npz or a 3DGS .ply to PNGs", **fmt)
    r.add_argument("model", help="checkpoint.npz of 'splat train' or a 3DGS .ply")
    r.add_argument("--out", required=True, help="output folder for the PNGs (created; required)")
    r.add_argument("--data", default=None,
                   help="take the cameras (test views) from this scene (default: the "
                   "checkpoint's test cameras, or an orbit for a .ply)")
    r.add_argument("--downscale", type=positive_int, default=1,
                   help="with --data: divide the image size by this integer")
    r.add_argument("--views", type=positive_int, default=8,
                   help="orbit views for a .ply without --data")
    r.add_argument("--size", type=positive_int, default=None,
                   help="image size in pixels: an orbit's width and height (default 256), or the "
                   "longer side of the checkpoint's or --data's cameras, intrinsics scaled to match "
                   "(default: their own size)")
    e = sub.add_parser("eval", help="PSNR/SSIM per test view", **fmt)
    e.add_argument("model", help="checkpoint.npz of 'splat train' or a 3DGS .ply")
    e.add_argument("--data", default=None,
                   help="scene with the test views (default: the one named in the checkpoint)")
    e.add_argument("--downscale", type=positive_int, default=None,
                   help="divide the image size by this integer (default: the checkpoint's, "
                   "else 1)")
    e.add_argument("--out", default=None, help="write eval.json into this folder "
                   "(default: print only)")
    lo = sub.add_parser("localize", help="estimate the camera pose of an image in a trained "
                        "model (Levenberg-Marquardt through the rasterizer, docs/poses.md)", **fmt)
    lo.add_argument("model", help="checkpoint.npz of 'splat train'")
    lo.add_argument("image", help="the photograph (PNG/JPEG) at the checkpoint's image size")
    lo.add_argument("--init", default=None,
                    help="initial world-to-camera pose (OpenCV axes): a .npy or text file of a "
                    "4x4 matrix (default: the pose of the --view camera)")
    lo.add_argument("--view", type=nonnegative_int, default=0,
                    help="index into the checkpoint's cameras (all views) whose intrinsics, and "
                    "without --init pose, to start from")
    lo.add_argument("--levels", type=positive_int, default=2,
                    help="coarse-to-fine pyramid levels (1: full resolution only)")
    lo.add_argument("--max-iterations", type=positive_int, default=30,
                    help="Levenberg-Marquardt iterations per level")
    lo.add_argument("--robust", type=positive_float, default=None,
                    help="Huber threshold on a pixel's colour error (default: plain least squares)")
    lo.add_argument("--out", default=None, help="write pose.json (and pose.npy) into this folder "
                    "(default: print only)")
    d = sub.add_parser("demo", help="train briefly on the bundled scene and write labelled "
                       "test renders", **fmt)
    _train_args(d, 250, out_default=DEMO_OUT)
    return ap
