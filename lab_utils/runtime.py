"""Seed and device, chosen in one place.

Every notebook's first cell calls :func:`setup`, so a lesson never scatters
``torch.manual_seed`` calls or ``"cuda" if ... else "cpu"`` checks of its own.
Taught in ``00_setup_and_data.ipynb``.
"""
from __future__ import annotations

import os
import random

import torch

DEVICE_ENV = "CVAE_LAB_DEVICE"
QUICK_ENV = "CVAE_LAB_QUICK"
_VALID_DEVICES = ("cpu", "cuda", "mps")


def get_device(device: str | torch.device | None = None) -> torch.device:
    """The device to compute on: explicit argument, else ``$CVAE_LAB_DEVICE``, else
    the best one present (CUDA, then Apple's MPS, then the CPU).

    Students on a laptop get the CPU without configuring anything; a GPU is used
    as soon as one is present.
    """
    choice = device if device is not None else os.environ.get(DEVICE_ENV, "").strip()
    if choice:
        try:
            dev = torch.device(choice)
        except RuntimeError:
            dev = None
        if dev is None or dev.type not in _VALID_DEVICES:
            raise ValueError(
                f"unknown device {choice!r}: use one of {', '.join(_VALID_DEVICES)} "
                f"(set {DEVICE_ENV} or pass device=...)"
            )
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"device {choice!r} was asked for but PyTorch sees no CUDA GPU; "
                f"unset {DEVICE_ENV} or use 'cpu'"
            )
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError(
                f"device {choice!r} was asked for but MPS is not available; "
                f"unset {DEVICE_ENV} or use 'cpu'"
            )
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> None:
    """Seed Python's and PyTorch's generators so a run can be repeated exactly."""
    random.seed(seed)
    torch.manual_seed(seed)


def quick_mode() -> bool:
    """True when ``$CVAE_LAB_QUICK`` is set to a true value (``1``, ``true``, ``yes``).

    Quick mode lets the test suite run the training notebook briefly on a subset;
    a student leaves it unset and gets the full run.
    """
    return os.environ.get(QUICK_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def setup(seed: int = 0, device: str | torch.device | None = None) -> torch.device:
    """The first call of every notebook: seed everything and pick the device."""
    seed_everything(seed)
    return get_device(device)
