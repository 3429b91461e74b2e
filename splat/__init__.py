"""splat: differentiable Gaussian-splatting rasterisation in JAX + Pallas.

``rasterization`` follows gsplat's argument names; ``value_and_grad_2d`` returns
the loss, parameter gradients, dL/dmeans2d and gsplat's absgrad in one call.
See docs/splat.md.
"""

from .rendering import rasterization
from .tiling import default_capacity
from .grad2d import value_and_grad_2d

__all__ = ["rasterization", "value_and_grad_2d", "default_capacity"]
