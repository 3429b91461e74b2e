"""Every built-in factor type and builder in one namespace, the public ``jaxgraph.factors``:
the core of :mod:`jaxgraph.graph.factors` (``FactorGroup``, ``between``, ``prior``,
``custom``, ...), point factors of :mod:`jaxgraph.graph.landmark_factors` (``relative_point``,
``bearing_range``) and camera factors of :mod:`jaxgraph.graph.camera_factors`
(``reprojection``, ``snavely_reprojection``, ``stereo``, the kind ``BAL_CAMERA``)."""

from . import factors as _core
from .camera_factors import (
    BAL_CAMERA,
    Reprojection,
    SnavelyReprojection,
    Stereo,
    reprojection,
    snavely_reprojection,
    stereo,
)
from .factors import *  # everything public of the core, whatever it adds
from .landmark_factors import BearingRange, RelativePoint, bearing_range, relative_point

__all__ = [
    "BAL_CAMERA",
    "BearingRange",
    "RelativePoint",
    "Reprojection",
    "SnavelyReprojection",
    "Stereo",
    "bearing_range",
    "relative_point",
    "reprojection",
    "snavely_reprojection",
    "stereo",
]
__all__ += _core.__all__
