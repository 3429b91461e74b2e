"""File formats: g2o pose graphs (:func:`read_g2o`, :func:`write_g2o`)."""

from .g2o import PD_FLOOR_RELATIVE, G2OFormatError, read_g2o, write_g2o

__all__ = ["read_g2o", "write_g2o", "G2OFormatError", "PD_FLOOR_RELATIVE"]
