"""Camera tracking through the rasterizer (docs/poses.md): :func:`localize` estimates one
camera's world-to-camera pose by Levenberg-Marquardt with jaxgraph's solver, which it
imports on first use."""

from .localize import downsample, localize, pose_jacobian, render_pose, scale_intrinsics

__all__ = ["localize", "pose_jacobian", "render_pose", "downsample", "scale_intrinsics"]
