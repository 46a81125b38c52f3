"""Figures of the series: image grids, the loss curve, the noise-by-label grid.

Every figure has a title and labelled axes, so a saved notebook reads on its own.
Taught throughout; the noise-by-label grid (the lab report's Figure 2) in
``06_exploring.ipynb``.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import torch
from torchvision.utils import make_grid

from .labels import check_labels


def _images(images: torch.Tensor) -> torch.Tensor:
    images = images.detach().float().cpu()
    if images.dim() == 3:  # (B, 28, 28) -> (B, 1, 28, 28)
        images = images.unsqueeze(1)
    if images.dim() != 4:
        raise ValueError(f"images must be (B, 1, H, W) or (B, H, W), got {tuple(images.shape)}")
    return images


def show_images(
    images: torch.Tensor,
    labels: Sequence | None = None,
    nrow: int = 10,
    title: str | None = None,
    ax=None,
    scale: float = 1.0,
):
    """Show a batch (B, 1, 28, 28) as a grid, with each image's label above it if given."""
    images = _images(images)
    n = images.shape[0]
    ncol = min(nrow, n)
    nrows = (n + ncol - 1) // ncol
    if labels is not None:
        fig, axes = plt.subplots(nrows, ncol, figsize=(scale * 1.1 * ncol, scale * 1.3 * nrows),
                                 squeeze=False)
        for i, a in enumerate(axes.flat):
            a.axis("off")
            if i < n:
                a.imshow(images[i, 0], cmap="gray", vmin=0, vmax=1)
                a.set_title(str(labels[i]), fontsize=9)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return fig
    grid = make_grid(images, nrow=ncol, padding=2, pad_value=1.0)  # (3, H', W')
    if ax is None:
        fig, ax = plt.subplots(figsize=(scale * 0.6 * ncol, scale * 0.6 * nrows + 0.6))
    ax.imshow(grid[0], cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax.figure


def plot_loss_curve(history, ax=None, title: str = "Training loss (logged every 10 batches)"):
    """The lab report's Figure 3: batch loss against batch index."""
    h = history if isinstance(history, dict) else history.to_dict()
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(h["step"], h["loss"], lw=1, label="training batch")
    if h.get("epoch_test_nelbo"):
        per_epoch = len(h["step"]) and (h["step"][-1] + 1) / max(len(h["epoch_test_nelbo"]), 1)
        xs = [round(per_epoch * (e + 1)) for e in range(len(h["epoch_test_nelbo"]))]
        ax.plot(xs, h["epoch_test_nelbo"], "o-", ms=4, label="test set, end of epoch")
        ax.legend()
    ax.set_xlabel("batch")
    ax.set_ylabel("negative ELBO (nats per image)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return ax.figure


@torch.inference_mode()
def label_noise_grid(model, z: torch.Tensor, labels: Sequence[int] = range(10)) -> torch.Tensor:
    """Decode every (noise, label) pair: z (K, D) and L labels -> images (K, L, 1, 28, 28).

    Row ``j`` shares the noise ``z[j]``; column ``i`` shares the label ``labels[i]``: the
    orientation of the lab report's Figure 2, of the explorer's row and of 09's sheets.
    """
    y = torch.as_tensor(list(labels), dtype=torch.long)  # (L,)
    check_labels(y, model.config.num_classes)
    images = model.decode_all_labels(z, y)  # (K, D) -> (K, L, 1, 28, 28), L = 1 for a plain VAE
    return images.expand(z.shape[0], y.shape[0], *images.shape[2:]).cpu()  # a plain VAE: L equal columns


def plot_disentanglement(
    model,
    n_noise: int = 8,
    labels: Sequence[int] = range(10),
    temperature: float = 1.0,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    title: str = "Each row shares the noise z, each column a label",
):
    """The lab report's Figure 2: generated digits, one noise per row, the labels along it.

    What it shows is a style-content separation (the label sets the content, z the
    style shared along a row); it is not disentanglement in the sense of Higgins et al.
    (2017), single latent dimensions aligned with independent factors. The name is
    kept for the callers.
    """
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_noise, model.config.latent_dim, generator=g) * temperature  # (K, D)
    grid = label_noise_grid(model, z, labels)  # (K, L, 1, 28, 28)
    K, L = grid.shape[:2]
    image = make_grid(grid.flatten(0, 1), nrow=L, padding=2, pad_value=1.0)[0]  # (H', W')
    fig, ax = plt.subplots(figsize=(0.75 * L + 1.2, 0.75 * K + 0.8))
    ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    step = 30  # 28 px + 2 px padding
    names = class_names or [str(int(v)) for v in labels]
    ax.set_xticks([2 + 14 + step * i for i in range(L)], [names[i] for i in range(L)])
    ax.set_yticks([2 + 14 + step * j for j in range(K)], [f"noise {j + 1}" for j in range(K)])
    ax.set_xlabel("requested label")
    ax.set_ylabel("noise z (shared along each row)")
    ax.set_title(title)
    ax.tick_params(length=0)
    return fig
