"""Labels as network inputs: one-hot vectors and constant label channels.

The CVAE sees the label twice: the encoder gets it as 10 extra image channels
(one constant 28x28 map per class, all zero except the label's, which is all
one), the decoder gets it as a one-hot vector beside z.
Taught in ``01_label_expansion.ipynb``.
"""
from __future__ import annotations

import torch

NUM_CLASSES = 10


def check_labels(y: torch.Tensor, num_classes: int = NUM_CLASSES) -> None:
    """Raise a clear error unless ``y`` is a 1-D integer tensor of class indices.

    Catching this here beats a cryptic CUDA assert or a silent wrong one-hot later.
    """
    if not isinstance(y, torch.Tensor):
        raise TypeError(
            f"labels must be a torch.Tensor of integers, got {type(y).__name__}; "
            f"use torch.tensor([...]) or torch.as_tensor(...)"
        )
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(
            f"labels must have an integer dtype (e.g. torch.long), got {y.dtype}; "
            f"convert with y.long()"
        )
    if y.dim() != 1:
        raise ValueError(
            f"labels must have shape (B,), one class index per image, got shape "
            f"{tuple(y.shape)}; flatten with y.view(-1)"
        )
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        bad = y[(y < 0) | (y >= num_classes)]
        raise ValueError(
            f"labels must lie in 0..{num_classes - 1}, got {bad[:5].tolist()}"
        )


def one_hot(y: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Class indices (B,) -> float one-hot vectors (B, num_classes).

    Float, because the one-hot is concatenated with float tensors (z, images).
    """
    check_labels(y, num_classes)
    out = torch.zeros(y.shape[0], num_classes, device=y.device)  # (B, 10)
    out.scatter_(1, y.view(-1, 1), 1.0)  # (B,) -> (B, 1) column of indices
    return out


def expand_labels(
    y: torch.Tensor, height: int = 28, width: int = 28, num_classes: int = NUM_CLASSES
) -> torch.Tensor:
    """Class indices (B,) -> label channels (B, num_classes, height, width).

    Channel ``k`` of image ``b`` is all ones if ``y[b] == k`` and all zeros
    otherwise. ``expand`` makes this a *view* of the (B, 10) one-hot: no
    B*10*28*28 copy is allocated (``repeat`` would allocate one).
    """
    y_onehot = one_hot(y, num_classes)  # (B, 10)
    y_map = y_onehot.view(-1, num_classes, 1, 1)  # (B, 10) -> (B, 10, 1, 1)
    return y_map.expand(-1, num_classes, height, width)  # -> (B, 10, H, W), a view
