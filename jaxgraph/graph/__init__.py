"""Factor-graph problems: variable kinds, factor types, noise models, robust losses, the
problem's structure and normal equations (see docs/architecture.md for the layers)."""

from .factors import Between, Custom, FactorGroup, FactorType, MatrixFactor, Prior
from .kinds import EuclideanKind, GroupKind, Kind, ProductKind, XYThetaKind, kind_of
from .normal_equations import Linearization, values_dtype
from .problem import Problem
from .structure import size_class
from .variables import VariableGroup

__all__ = ["Problem", "VariableGroup", "Linearization", "Kind", "GroupKind", "XYThetaKind", "EuclideanKind",
           "ProductKind", "kind_of", "FactorGroup", "FactorType", "MatrixFactor", "Between", "Prior", "Custom",
           "size_class", "values_dtype"]
