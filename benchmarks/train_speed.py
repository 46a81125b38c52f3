"""How fast does the lab CVAE train? lab_utils.train against the pytorch/examples
way of feeding it, and the whole command line against an older version of it,
measured in the same run on the same machine.

    python benchmarks/train_speed.py [--train-size N] [--repeats R] [--device D]
                                     [--process-epochs E] [--baseline REV]

Part 1, one epoch each, the same initial weights, batch 128, Adam, lr 1e-3:
  * pytorch/examples: torchvision.datasets.MNIST(transform=ToTensor()) and
    DataLoader(batch_size=128, shuffle=True), the plain forward pass model(x, y),
    loss.item() every step (as vae/main.py does);
  * lab_utils.train --plain: in-memory tensor batches, channels_last, model(x, y);
  * lab_utils.train, PyTorch route: in-memory batches and lab_utils.fast's
    PyTorch route (the same loss; what runs where the kernels cannot be built,
    or with CVAE_LAB_KERNELS=0);
  * lab_utils.train (default): in-memory batches and lab_utils.fast through the
    compiled kernels of lab_utils.kernels (the same loss).
Both fast routes update with PyTorch's fused Adam (the same update rule).
The ways alternate, R times each, and medians are reported, so a burst of load
on the machine hits them alike. Ratios are what to read: timings on a shared
machine are noisy.

Part 2, whole processes: ``python -m lab_utils.train --epochs E`` of this
checkout, with and without ``--plain``, and (with ``--baseline REV``) the same
command from git revision REV, e.g. the commit before the fast route, extracted
to a temporary folder, all run one after the other here.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader, Subset
from torchvision import transforms

from lab_utils import kernels
from lab_utils.data import data_root, load_mnist
from lab_utils.losses import loss_function
from lab_utils.model import CVAE
from lab_utils.runtime import get_device
from lab_utils.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]


def describe(device: torch.device) -> str:
    """The machine the figures belong to: the GPU's name, or the CPU and its threads."""
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch_pytorch_examples(model: CVAE, train_size: int | None, device: torch.device) -> float:
    """One epoch as pytorch/examples vae/main.py feeds it: DataLoader + ToTensor."""
    ds = torchvision.datasets.MNIST(str(data_root()), train=True, download=True,
                                    transform=transforms.ToTensor())
    if train_size:
        ds = Subset(ds, range(train_size))
    loader = DataLoader(ds, batch_size=128, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    _sync(device)
    start = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        x_hat, mu, logvar = model(x, y)
        loss = loss_function(x_hat, x, mu, logvar)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()  # vae/main.py reads the loss every step (train_loss += loss.item())
    _sync(device)
    return time.perf_counter() - start


def epoch_lab_utils(model: CVAE, x: torch.Tensor, y: torch.Tensor, fast: bool,
                    compiled: bool = True) -> float:
    """One epoch of lab_utils.train, fast route (with or without the compiled
    kernels) or plain (the loop's own timing)."""
    with kernels.switched(compiled):
        history = train(model, x, y, TrainConfig(epochs=1, fast=fast), progress=False, verbose=False)
    return history.epoch_seconds[0]


def run_process(cwd: Path, args: list[str], env: dict) -> float:
    """Wall-clock seconds of one ``python -m lab_utils.train`` process, start to exit."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lab_utils.train", *args], cwd=cwd, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def extract(rev: str, into: Path) -> Path:
    """``lab_utils`` as it was at git revision ``rev``, in a folder of its own."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "lab_utils"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-size", type=int, default=None,
                   help="part 1 only (the processes train on all 60,000 images); default: all")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when present)")
    p.add_argument("--process-epochs", type=int, default=10,
                   help="epochs of the whole-process comparison (0: skip it)")
    p.add_argument("--baseline", default=None,
                   help="git revision whose `python -m lab_utils.train` is timed too")
    args = p.parse_args(argv)
    device = get_device(args.device)
    x, y = load_mnist("train")
    if args.train_size:
        x, y = x[: args.train_size], y[: args.train_size]
    torch.manual_seed(0)
    initial = CVAE("lab").to(device)
    print(f"lab CVAE, one epoch of {x.shape[0]:,} images, batch 128, on {describe(device)}, "
          f"torch {torch.__version__}")
    compiled = device.type == "cpu" and kernels.load() is not None
    print("compiled kernels: " + ("loaded" if compiled else
                                  "not used on " + device.type if device.type != "cpu" else
                                  f"not available ({kernels.why_not()})"))
    ways = {"pytorch/examples (DataLoader + ToTensor)": [], "lab_utils.train --plain": [],
            "lab_utils.train, PyTorch route": [], "lab_utils.train (default)": []}
    for r in range(args.repeats):
        t_dl = epoch_pytorch_examples(copy.deepcopy(initial), args.train_size, device)
        t_plain = epoch_lab_utils(copy.deepcopy(initial), x, y, fast=False)
        t_torch = epoch_lab_utils(copy.deepcopy(initial), x, y, fast=True, compiled=False)
        t_fast = epoch_lab_utils(copy.deepcopy(initial), x, y, fast=True)
        for name, t in zip(ways, (t_dl, t_plain, t_torch, t_fast)):
            ways[name].append(t)
        print(f"  repeat {r + 1}: DataLoader {t_dl:6.2f} s   --plain {t_plain:6.2f} s   "
              f"PyTorch route {t_torch:6.2f} s   default {t_fast:6.2f} s")
    med = {k: statistics.median(v) for k, v in ways.items()}
    for k, v in med.items():
        print(f"{k:42s} median {v:6.2f} s per epoch")
    dl, plain, torch_route, quick = med.values()
    print(f"lab_utils.train / DataLoader                = {quick / dl:.2f} ({dl / quick:.2f}x faster)")
    print(f"lab_utils.train, PyTorch route / DataLoader = {torch_route / dl:.2f}")
    print(f"lab_utils.train --plain / DataLoader         = {plain / dl:.2f}")
    print(f"lab_utils.train / --plain                    = {quick / plain:.2f}")

    if args.process_epochs:
        env = {**os.environ, "PYTHONPATH": ""}
        common = ["--epochs", str(args.process_epochs), "--no-progress",
                  "--device", device.type]
        with tempfile.TemporaryDirectory() as tmp:
            runs = [("this checkout", REPO, []), ("this checkout --plain", REPO, ["--plain"])]
            if args.baseline:
                old = extract(args.baseline, Path(tmp))
                runs.append((f"revision {args.baseline}", old, []))
            print(f"\nwhole process: python -m lab_utils.train --epochs {args.process_epochs}")
            times = {}
            for name, cwd, extra in runs:
                out = Path(tmp) / f"run{len(times)}.pt"
                times[name] = run_process(cwd, [*common, "--out", str(out), *extra], env)
                print(f"  {name:30s} {times[name]:7.1f} s")
            first = times["this checkout"]
            for name, t in times.items():
                if name != "this checkout":
                    print(f"this checkout / {name} = {first / t:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
