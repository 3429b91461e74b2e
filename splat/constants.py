"""Compositing constants shared by projection, the reference rasteriser and the kernels.

They are 3DGS/gsplat's values; each is defined here only, so that every backend skips,
clamps and terminates at exactly the same thresholds.
"""

# A Gaussian whose alpha at a pixel falls below this is skipped there; the projection
# also culls Gaussians whose (compensated) opacity is below it.
ALPHA_MIN = 1.0 / 255.0
# Alpha is clamped to at most this value (keeps 1 - alpha invertible in the backward pass).
ALPHA_MAX = 0.99
# A pixel stops compositing before the Gaussian that would bring its transmittance to
# <= T_MIN.
T_MIN = 1e-4
# rasterize_mode="antialiased": the opacity compensation sqrt(det(S) / det(S + eps2d I))
# is floored at this value (as gsplat), so that Gaussians far below a pixel keep a trace.
COMPENSATION_MIN = 0.005
# Pixels of one image: pixel indices are int32.
MAX_PIXELS = 2**31 - 1
