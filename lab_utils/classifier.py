"""The MNIST classifier that judges digits: generated samples and drawings.

A small CNN, shipped in ``pretrained/classifier.pt``. ``evaluation.label_fidelity``
lets it read digits sampled from a CVAE (does the model draw the digit it was
asked for?) and ``drawing_pad`` lets it read a student's drawing. It is
trained on moved and blurred digits (:func:`augment_batch`), because drawings
are never placed like MNIST digits and VAE samples are blurrier than the data.

    python -m lab_utils.classifier --out lab_utils/pretrained/classifier.pt
    python -m lab_utils.classifier --no-augment --out checkpoints/classifier-plain.pt

retrain the shipped classifier, or one trained on the digits as they are (a
second, independent judge). Taught in ``08_sample_quality.ipynb``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import PRETRAINED_DIR, load_model, save_checkpoint
from .labels import NUM_CLASSES, check_labels
from .model import StoredConfig, check_images, eval_mode

CLASSIFIER_PATH = PRETRAINED_DIR / "classifier.pt"


@dataclass(frozen=True)
class ClassifierConfig(StoredConfig):
    """Architecture of the digit classifier. Stored in its checkpoint."""

    channels: tuple[int, ...] = (16, 32)  # conv widths; each block halves the image
    hidden: int = 64                      # the fully connected layer before the logits
    num_classes: int = NUM_CLASSES
    image_size: int = 28

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(self.channels))
        if self.image_size % 2 ** len(self.channels):
            raise ValueError(
                f"image_size={self.image_size} cannot be halved {len(self.channels)} times"
            )


class Classifier(nn.Module):
    """A small CNN: (B, 1, 28, 28) in [0, 1] -> logits (B, 10).

    Two blocks of Conv3x3 -> BatchNorm -> ReLU -> MaxPool (28 -> 14 -> 7), then
    Linear -> ReLU -> Dropout -> Linear. About 110,000 parameters, over 99% on
    the MNIST test set: enough to judge whether a generated digit is readable.
    """

    #: How the classifier was trained, filled in by :func:`load_classifier`
    #: (``metrics``, ``epochs``, ``train_config``, ``versions``); empty when built.
    checkpoint_info: dict

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config or ClassifierConfig()
        self.checkpoint_info = {}
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in self.config.channels:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        side = self.config.image_size // 2 ** len(self.config.channels)  # 28 -> 7
        self.head = nn.Sequential(
            nn.Flatten(),  # (B, 32, 7, 7) -> (B, 1568)
            nn.Linear(c_in * side * side, self.config.hidden), nn.ReLU(), nn.Dropout(0.25),
            nn.Linear(self.config.hidden, self.config.num_classes),
        )

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, 1, 28, 28) -> (B, 10)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Blur each image of ``x`` (B, 1, H, W) with its own Gaussian width ``sigma`` (B,).

    A separable blur, one kernel per image: a row pass, then a column pass.
    """
    B, _, H, W = x.shape
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)  # (K,)
    sigma = sigma.to(x).clamp_min(1e-3).view(B, 1)  # (B,) -> (B, 1)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)  # (B, K)
    kernel = kernel / kernel.sum(1, keepdim=True)
    h = x.view(1, B, H, W)  # (B, 1, H, W) -> (1, B, H, W): one group per image
    h = F.conv2d(h, kernel.view(B, 1, 1, -1), padding=(0, radius), groups=B)  # rows
    h = F.conv2d(h, kernel.view(B, 1, -1, 1), padding=(radius, 0), groups=B)  # columns
    return h.view(B, 1, H, W)  # (1, B, H, W) -> (B, 1, H, W)


def augment_batch(x: torch.Tensor, generator: torch.Generator | None = None,
                  shift: float = 2.0, scale: float = 0.1, degrees: float = 10.0,
                  blur: float = 1.5) -> torch.Tensor:
    """Small random shifts (pixels), scalings, rotations and blurs of a batch (B, 1, H, W).

    (Named ``augment_batch``, not ``augment``: ``train_classifier``'s switch
    ``augment=False`` has that name.)

    A drawing centred by hand is never placed exactly like an MNIST digit, and
    a VAE's samples are blurrier than the digits it learnt from; training on
    moved and blurred digits keeps the classifier reading the digit's identity,
    not its position or sharpness. Half of the images get a Gaussian blur of
    width uniform in (0, ``blur``) pixels.
    """
    B, _, H, W = x.shape
    rand = torch.rand(B, 6, generator=generator)  # uniform in [0, 1)
    angle = (rand[:, 0] * 2 - 1) * math.radians(degrees)  # (B,)
    s = 1 + (rand[:, 1] * 2 - 1) * scale  # (B,) zoom factor
    tx = (rand[:, 2] * 2 - 1) * shift * 2 / W  # pixels -> grid units ([-1, 1] spans W)
    ty = (rand[:, 3] * 2 - 1) * shift * 2 / H
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([
        torch.stack([cos, -sin, tx], dim=1),
        torch.stack([sin, cos, ty], dim=1),
    ], dim=1).to(x)  # (B, 2, 3): output grid -> input coordinates
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    moved = F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)
    if blur <= 0:
        return moved
    sigma = torch.where(rand[:, 4] < 0.5, rand[:, 5] * blur, torch.zeros(B))  # (B,), 0: no blur
    return gaussian_blur(moved, sigma)


@torch.inference_mode()
def accuracy(classifier: Classifier, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 1000) -> float:
    """Fraction of ``x`` that ``classifier`` labels as ``y``."""
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        pred, _ = classify(classifier, x[start:start + batch_size])
        correct += (pred.cpu() == y[start:start + batch_size].cpu()).sum().item()
    return correct / x.shape[0]


def train_classifier(
    x: torch.Tensor,
    y: torch.Tensor,
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    *,
    epochs: int = 4,
    batch_size: int = 128,
    lr: float = 3e-3,
    augment: bool = True,
    seed: int = 0,
    config: ClassifierConfig | None = None,
    device: str | torch.device = "cpu",
    verbose: bool = True,
) -> tuple[Classifier, dict]:
    """Train a :class:`Classifier` on ``(x, y)``; returns ``(classifier, metrics)``.

    Adam with a one-cycle learning rate reaches 99% test accuracy in a few
    epochs. ``augment=False`` trains on the digits as they are (no moves, no
    blur): a second judge that shares fewer assumptions with the first.
    ``metrics`` holds the test accuracy (if a test set is given) and the
    training time. The settings after the data are keyword-only, so a call
    reads the same whatever their order.
    """
    check_images(x)
    check_labels(y)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = Classifier(config).to(device)
    steps = epochs * math.ceil(x.shape[0] / batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        running = 0.0
        for idx in torch.randperm(x.shape[0], generator=g).split(batch_size):
            xb, yb = x[idx], y[idx]
            if augment:
                xb = augment_batch(xb, g)
            loss = F.cross_entropy(model(xb.to(device)), yb.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running += loss.item() * idx.shape[0]
        if verbose:
            test = (f", test accuracy {accuracy(model, x_test, y_test):.4f}"  # in eval mode
                    if x_test is not None else "")
            print(f"classifier epoch {epoch + 1}/{epochs}: train loss "
                  f"{running / x.shape[0]:.4f}{test}", flush=True)
    model.eval()
    metrics = {"train_seconds": time.perf_counter() - start}
    if x_test is not None:
        metrics["test_accuracy"] = accuracy(model, x_test, y_test)
    return model, metrics


def load_classifier(device: str | torch.device = "cpu",
                    path: str | os.PathLike = CLASSIFIER_PATH) -> Classifier:
    """The shipped MNIST classifier (``pretrained/classifier.pt``, or the one saved
    at ``path``), in evaluation mode, with its ``checkpoint_info``."""
    model, _ = load_model(path, Classifier, ClassifierConfig, device=device)
    return model


@torch.inference_mode()
def classify(classifier: Classifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 1, 28, 28) in [0, 1] -> predicted digits (B,) long and their
    probabilities (B,) float (the classifier's confidence)."""
    check_images(x, classifier.config.image_size)
    with eval_mode(classifier):
        probs = classifier(x.to(classifier.device)).softmax(dim=1)  # (B, 10)
    confidence, pred = probs.max(dim=1)  # (B,), (B,)
    return pred, confidence


# --------------------------------------------------------------------------
# Command line: retrain the shipped classifier
# --------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lab_utils.classifier",
        description="Train the MNIST classifier used for label fidelity and save it.",
    )
    p.add_argument("--out", default=str(CLASSIFIER_PATH), help="checkpoint path (default %(default)s)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true",
                   help="train on the digits as they are: no shifts, rotations or blur")
    p.add_argument("--data-root", default=None, help="data folder (default $CVAE_LAB_DATA or ./data)")
    args = p.parse_args(argv)
    from .data import load_mnist  # only the command line needs the dataset

    x, y = load_mnist("train", root=args.data_root)
    x_test, y_test = load_mnist("test", root=args.data_root)
    augment = not args.no_augment
    model, metrics = train_classifier(x, y, x_test, y_test, epochs=args.epochs, lr=args.lr,
                                      augment=augment, seed=args.seed)
    train_config = {"epochs": args.epochs, "lr": args.lr, "seed": args.seed,
                    "augment": augment, "batch_size": 128, "dataset": "mnist"}
    save_checkpoint(args.out, model, train_config=train_config, metrics=metrics,
                    epochs=args.epochs)
    print(f"test accuracy {metrics['test_accuracy']:.4f} after {args.epochs} epochs "
          f"({metrics['train_seconds']:.0f} s); saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
