"""CVAE Lab: the one real implementation that the notebooks import.

Start with ``lab_utils.load_pretrained()`` for a trained lab CVAE, or read the
modules in lesson order: data, labels, model, losses, train, checkpoints,
plots, widgets, classifier, evaluation, handwriting.

The names below are imported on first use (PEP 562), not here: ``import
lab_utils`` loads nothing heavy, so ``python -m lab_utils.student`` runs
without torch, and nothing pulls in torchvision before a dataset is loaded.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    "load_checkpoint": "checkpoints", "load_pretrained": "checkpoints",
    "save_checkpoint": "checkpoints",
    "CONFIGS": "model", "CVAE": "model", "CVAEConfig": "model",
    "get_device": "runtime", "setup": "runtime",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:  # what editors and type checkers see
    from .checkpoints import load_checkpoint, load_pretrained, save_checkpoint
    from .model import CONFIGS, CVAE, CVAEConfig
    from .runtime import get_device, setup


def __getattr__(name: str):
    """Import an exported name's module the first time the name is used."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lab_utils' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
