"""How fast is one training epoch of the lab CVAE? lab_utils.train versus the
pytorch/examples way of feeding it, measured in the same run.

    python benchmarks/train_speed.py [--train-size N] [--repeats R]

Both ways train the same model (same initial weights, batch size 128, Adam,
lr 1e-3) for one epoch:
  * pytorch/examples: torchvision.datasets.MNIST(transform=ToTensor()) and
    DataLoader(batch_size=128, shuffle=True), contiguous memory format;
  * lab_utils.train: mini-batches sliced from in-memory tensors, channels_last.
Prints both times and their ratio. The ways alternate, R times each, and the
median is reported, so a burst of load on the machine hits both alike.
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch
import torchvision
from torch.utils.data import DataLoader, Subset
from torchvision import transforms

from lab_utils.data import data_root, load_mnist
from lab_utils.losses import loss_function
from lab_utils.model import CVAE
from lab_utils.train import TrainConfig, train


def epoch_pytorch_examples(model: CVAE, train_size: int | None) -> float:
    """One epoch as pytorch/examples vae/main.py feeds it: DataLoader + ToTensor."""
    ds = torchvision.datasets.MNIST(str(data_root()), train=True, download=True,
                                    transform=transforms.ToTensor())
    if train_size:
        ds = Subset(ds, range(train_size))
    loader = DataLoader(ds, batch_size=128, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    start = time.perf_counter()
    for x, y in loader:
        x_hat, mu, logvar = model(x, y)
        loss = loss_function(x_hat, x, mu, logvar)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def epoch_lab_utils(model: CVAE, x: torch.Tensor, y: torch.Tensor) -> float:
    """One epoch of lab_utils.train (in-memory tensors, channels_last)."""
    history = train(model, x, y, TrainConfig(epochs=1), progress=False, verbose=False)
    return history.epoch_seconds[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-size", type=int, default=None, help="default: all 60,000 images")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    x, y = load_mnist("train")
    if args.train_size:
        x, y = x[: args.train_size], y[: args.train_size]
    torch.manual_seed(0)
    initial = CVAE("lab")
    print(f"lab CVAE, one epoch of {x.shape[0]} images, batch 128, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}")
    times = {"pytorch/examples (DataLoader + ToTensor)": [], "lab_utils.train": []}
    for r in range(args.repeats):
        t_dl = epoch_pytorch_examples(copy.deepcopy(initial), args.train_size)
        t_lab = epoch_lab_utils(copy.deepcopy(initial), x, y)
        times["pytorch/examples (DataLoader + ToTensor)"].append(t_dl)
        times["lab_utils.train"].append(t_lab)
        print(f"  repeat {r + 1}: DataLoader {t_dl:6.2f} s   lab_utils {t_lab:6.2f} s   "
              f"ratio {t_lab / t_dl:.2f}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:45s} median {v:6.2f} s per epoch")
    dl, lab = med.values()
    print(f"lab_utils.train / DataLoader = {lab / dl:.2f} ({dl / lab:.2f}x faster)")


if __name__ == "__main__":
    main()
