"""3D Gaussian Splatting training: one jit-compiled step, densification included.

See docs/training.md. Main entry points: :class:`TrainConfig`, :class:`Trainer`
(``init_state``, ``step``, ``fit``, ``evaluate``), the densification strategies
:class:`DefaultStrategy`, :class:`MCMCStrategy`, :class:`NoDensification`,
:func:`save_checkpoint`, :func:`restore_state`; machine-fitted defaults in
:mod:`splat.train.presets`.
"""

from .state import TrainConfig, TrainState, init_params, render
from .strategy import (DefaultStrategy, MCMCStrategy, NoDensification, Strategy,
                       strategy_from_name)
from .trainer import (Trainer, evaluate_views, params_from_checkpoint, psnr, restore_state,
                      save_checkpoint)

__all__ = ["Strategy", "DefaultStrategy", "MCMCStrategy", "NoDensification",
           "strategy_from_name", "TrainConfig", "TrainState", "Trainer", "init_params", "render", "psnr",
           "save_checkpoint", "restore_state", "params_from_checkpoint", "evaluate_views"]
