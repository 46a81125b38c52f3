"""Checkpoints: atomic save, checked load, and the shipped pretrained models.

A checkpoint stores the architecture next to the weights (as nanoGPT does), so
loading rebuilds the right model without guessing, plus how it was trained
and how good it is. It holds plain Python types and tensors only, so it is
read with ``torch.load(weights_only=True)``: loading never runs code.
Taught in ``05_training.ipynb`` and ``06_exploring.ipynb``.
"""
from __future__ import annotations

import datetime
import os
import platform
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_write
from .model import CVAE, CVAEConfig, StoredConfig, get_config

FORMAT = "cvae-lab-checkpoint"
FORMAT_VERSION = 1
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, or holds another architecture."""


def library_versions() -> dict[str, str]:
    """Versions that produced a checkpoint, so a reader can tell what made it."""
    from . import __version__

    return {
        "lab_utils": __version__,
        "torch": str(torch.__version__),  # a str subclass that weights_only refuses
        "torchvision": _installed_version("torchvision"),  # without importing it (slow)
        "python": platform.python_version(),
    }


def _installed_version(package: str) -> str:
    """The installed version of ``package``, read from its metadata ("unknown" if absent)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def atomic_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (``atomic.atomic_write``): an interrupted
    save leaves the previous checkpoint intact, never half a file."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    *,
    train_config: dict | None = None,
    history: dict | None = None,
    metrics: dict | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    epochs: int = 0,
) -> Path:
    """Save ``model`` (any module with a ``config`` having ``to_dict()``) atomically.

    ``optimizer`` is stored only when given, for resuming; shipped checkpoints
    leave it out to stay small.
    """
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": type(model).__name__,
        "model_config": model.config.to_dict(),
        "state_dict": state,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "train_config": dict(train_config or {}),
        "history": dict(history or {}),
        "metrics": dict(metrics or {}),
        "epochs": int(epochs),
        "versions": library_versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return atomic_save(ckpt, path)


def read_checkpoint(path: str | os.PathLike, kind: str | None = None) -> dict:
    """Read and validate a checkpoint file; raise :class:`CheckpointError` with
    a clear message if it is missing, not a checkpoint, or of another kind."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}: train one with "
            f"`python -m lab_utils.train --out {path}` or use load_pretrained()"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (corrupt or truncated file?): {exc}"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a CVAE Lab checkpoint (no '{FORMAT}' marker); "
            f"save checkpoints with lab_utils.checkpoints.save_checkpoint"
        )
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer lab_utils (format "
            f"{ckpt['format_version']}); update lab_utils"
        )
    if kind is not None and ckpt.get("kind") != kind:
        raise CheckpointError(f"{path} holds a {ckpt.get('kind')}, not a {kind}")
    return ckpt


def load_state(model: torch.nn.Module, ckpt: dict, path: str | os.PathLike = "checkpoint") -> None:
    """Copy the checkpoint's weights into ``model``, refusing another architecture."""
    saved = ckpt["model_config"]
    have = model.config.to_dict()
    if saved != have:
        diff = {k: (saved.get(k), have.get(k)) for k in set(saved) | set(have)
                if saved.get(k) != have.get(k)}
        raise CheckpointError(
            f"{path} holds another architecture; differing fields "
            f"(checkpoint, model): {diff}. Build the model from the checkpoint "
            f"with load_checkpoint() instead."
        )
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model: {exc}") from exc


INFO_KEYS = ("metrics", "epochs", "train_config", "versions")  # what checkpoint_info holds


def load_model(
    path: str | os.PathLike,
    model_class: type[nn.Module],
    config_class: type[StoredConfig],
    config: StoredConfig | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, dict]:
    """Rebuild the ``model_class`` saved at ``path``; returns ``(model, checkpoint_dict)``.

    The one loading path of the CVAE and the classifier, so both refuse a
    foreign file, another architecture or broken weights with the same
    messages. The checkpoint's ``kind`` must be ``model_class.__name__`` (what
    :func:`save_checkpoint` writes); if ``config`` is given, the checkpoint
    must hold that architecture. The model comes back in evaluation mode on
    ``device``, with ``checkpoint_info`` filled in from the file.
    """
    name = model_class.__name__
    ckpt = read_checkpoint(path, kind=name)
    try:
        saved_config = config_class.from_dict(ckpt["model_config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid {name} configuration: {exc}") from exc
    if config is not None and config != saved_config:
        raise CheckpointError(
            f"{path} holds another architecture than the one asked for: "
            f"{saved_config} vs {config}"
        )
    model = model_class(saved_config)
    load_state(model, ckpt, path)
    model.checkpoint_info = {k: ckpt.get(k) for k in INFO_KEYS}
    return model.to(device).eval(), ckpt


def load_checkpoint(
    path: str | os.PathLike,
    config: CVAEConfig | str | None = None,
    device: str | torch.device = "cpu",
) -> tuple[CVAE, dict]:
    """Rebuild the CVAE saved at ``path``; returns ``(model, checkpoint_dict)``.

    If ``config`` is given, the checkpoint must hold that architecture.
    The model is returned in evaluation mode on ``device``.
    """
    wanted = None if config is None else get_config(config)
    return load_model(path, CVAE, CVAEConfig, config=wanted, device=device)


def pretrained_path(name: str = "lab") -> Path:
    """Where the shipped checkpoint ``name`` lives inside the package."""
    return PRETRAINED_DIR / f"{name}.pt"


def available_pretrained() -> list[str]:
    """Names accepted by :func:`load_pretrained`."""
    return sorted(p.stem for p in PRETRAINED_DIR.glob("*.pt") if p.stem != "classifier")


def load_pretrained(name: str = "lab", device: str | torch.device = "cpu") -> CVAE:
    """The shipped, trained model ``name`` ("lab" by default, or "wide", ...),
    on ``device`` (CPU by default) in evaluation mode. Needs no data and no training."""
    path = pretrained_path(name)
    if not path.is_file():
        raise CheckpointError(
            f"no shipped model named {name!r}; available: {', '.join(available_pretrained())}"
        )
    model, _ = load_checkpoint(path, device=device)
    return model


def ship(src: str | os.PathLike, dst: str | os.PathLike, half: bool = True) -> dict:
    """Copy the training checkpoint ``src`` to ``dst`` the way ``pretrained/`` holds them.

    The optimizer state is dropped (only resuming needs it) and, with ``half``,
    the weights are stored as float16: the file is half the size, and
    :func:`load_checkpoint` copies them back into the float32 model (the test
    negative ELBO moves by well under 0.01 nats). Returns the shipped checkpoint.
    """
    model, ckpt = load_checkpoint(src)
    if half:
        model = model.half()
    save_checkpoint(dst, model, train_config=ckpt["train_config"], history=ckpt["history"],
                    metrics=ckpt["metrics"], epochs=ckpt["epochs"])
    return read_checkpoint(dst)
