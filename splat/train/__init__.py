"""3D Gaussian Splatting training: one jit-compiled step, densification included.

See docs/training.md. Main entry points: :class:`TrainConfig`, :class:`Trainer`
(``init_state``, ``step``, ``fit``, ``evaluate``), the densification strategies
:class:`DefaultStrategy`, :class:`MCMCStrategy`, :class:`NoDensification`,
:func:`save_checkpoint`, :func:`restore_state`, :func:`load_model` and
:func:`render_model` (render a saved model); machine-fitted defaults in
:mod:`splat.train.presets`.
"""

from ..metrics import psnr
from .checkpoint import (checkpoint_cameras, load_model, params_from_checkpoint,
                         restore_state, save_checkpoint, write_model_ply)
from .state import TrainConfig, TrainState, init_params, render
from .strategy import (DefaultStrategy, MCMCStrategy, NoDensification, Strategy,
                       strategy_from_name)
from .trainer import Trainer
from .views import evaluate_views, render_checked, render_model, render_views

__all__ = ["Strategy", "DefaultStrategy", "MCMCStrategy", "NoDensification",
           "strategy_from_name", "TrainConfig", "TrainState", "Trainer", "init_params", "render", "psnr",
           "save_checkpoint", "restore_state", "params_from_checkpoint", "evaluate_views",
           "load_model", "checkpoint_cameras", "write_model_ply", "render_model",
           "render_views", "render_checked"]
