"""File formats (docs/formats.md): g2o pose graphs and landmark graphs (:func:`read_g2o`,
:func:`write_g2o`), bundle adjustment in BAL (:func:`read_bal`, :func:`write_bal`) and Bundler
(:func:`read_bundler`, :func:`write_bundler`) files, and GTSAM's stereo visual odometry
files (:func:`read_stereo_vo`, :func:`write_stereo_vo`). Every reader raises
:class:`FormatError` (a ``ValueError``; :class:`G2OFormatError` for g2o files) whose message
starts with ``path:line:``."""

from ._text import FormatError, G2OFormatError
from .bal import read_bal, write_bal
from .bundler import read_bundler, write_bundler
from .g2o import PD_FLOOR_RELATIVE, read_g2o, write_g2o
from .stereo import read_stereo_vo, stereo_vo_paths, write_stereo_vo

__all__ = [
           "PD_FLOOR_RELATIVE",
           "FormatError",
           "G2OFormatError",
           "read_bal",
           "read_bundler",
           "read_g2o",
           "read_stereo_vo",
           "stereo_vo_paths",
           "write_bal",
           "write_bundler",
           "write_g2o",
           "write_stereo_vo",
]
