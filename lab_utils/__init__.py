"""CVAE Lab: the one real implementation that the notebooks import.

Start with ``lab_utils.load_pretrained()`` for a trained lab CVAE, or read the
modules in lesson order: data, labels, model, losses, train, checkpoints,
plots, widgets, evaluation, handwriting.
"""
__version__ = "0.1.0"

from .checkpoints import load_checkpoint, load_pretrained, save_checkpoint  # noqa: E402
from .model import CONFIGS, CVAE, CVAEConfig  # noqa: E402
from .runtime import get_device, setup  # noqa: E402

__all__ = [
    "CONFIGS", "CVAE", "CVAEConfig", "get_device", "load_checkpoint",
    "load_pretrained", "save_checkpoint", "setup", "__version__",
]
