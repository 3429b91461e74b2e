"""splat: differentiable Gaussian-splatting rasterisation in JAX + Pallas.

``rasterization`` follows gsplat's argument names; ``value_and_grad_2d`` returns
the loss, parameter gradients, dL/dmeans2d and gsplat's absgrad in one call.
``localize`` (camera tracking with jaxgraph's solver, docs/poses.md) is resolved on first
access, so ``import splat`` loads no solver. See docs/splat.md.
"""

from .rendering import rasterization
from .tiling import default_capacity
from .grad2d import value_and_grad_2d

__all__ = ["rasterization", "value_and_grad_2d", "default_capacity", "localize"]


def __getattr__(name: str):
    if name == "localize":  # the tracking layer (and, when it runs, the solver) on first use
        from .tracking import localize

        globals()["localize"] = localize
        return localize
    raise AttributeError(f"module 'splat' has no attribute {name!r}")
