"""Training the CVAE: the loop, its history, and its command line.

    python -m lab_utils.train --epochs 10 --out checkpoints/lab.pt

Mini-batches are sliced from in-memory tensors (no ``DataLoader``), and the
model and its input use the ``channels_last`` memory format: on a laptop CPU
both make an epoch markedly faster (``benchmarks/train_speed.py``).
Taught in ``05_training.ipynb``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields

import torch
from tqdm.auto import tqdm

from .checkpoints import load_state, read_checkpoint, save_checkpoint
from .data import load_mnist, subset
from .losses import loss_function, negative_elbo
from .model import CVAE, get_config
from .runtime import get_device


@dataclass
class TrainConfig:
    """How a model is trained. Stored in every checkpoint next to the architecture."""

    model: str = "lab"            # a name from lab_utils.model.CONFIGS
    epochs: int = 10              # total epochs (a resumed run trains up to this many)
    batch_size: int = 128         # as in pytorch/examples vae/main.py
    lr: float = 1e-3              # Adam; 3e-3 can kill the lab model's 1-channel ReLU layer
    # Shuffling, initialisation and noise. Not 0: from seed 0 the narrow ReLU
    # layers of the lab encoder shut the 5s and 8s out of z (123 nats after 10
    # epochs instead of 109); evaluation.silent_digits checks a trained model.
    seed: int = 1
    log_every: int = 10           # record the loss every this many batches (the seed's Figure 3)
    dataset: str = "mnist"        # or "fashion-mnist"
    train_size: int | None = None # None: the whole training set (60,000)
    test_size: int | None = None  # None: the whole test set (10,000)
    channels_last: bool = True    # faster convolutions on CPU
    lr_schedule: str = "constant" # or "cosine": decay the lr to 0 over the run (short runs end lower)

    def __post_init__(self):
        get_config(self.model)  # fails early on an unknown name
        for name in ("epochs", "batch_size", "log_every"):
            if getattr(self, name) < (0 if name == "epochs" else 1):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class History:
    """What happened during training, for the loss curve and the report."""

    step: list[int] = field(default_factory=list)          # batch index of each logged loss
    loss: list[float] = field(default_factory=list)        # that batch's loss, nats per image
    epoch_train_nelbo: list[float] = field(default_factory=list)  # mean over the epoch
    epoch_test_nelbo: list[float] = field(default_factory=list)   # sampled z, whole test set
    epoch_seconds: list[float] = field(default_factory=list)
    # CPU time of the process (all threads): on a busy machine the wall-clock
    # seconds above grow with the other jobs, this stays near the idle figure.
    epoch_cpu_seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        known = {f.name for f in fields(cls)}
        return cls(**{k: list(v) for k, v in d.items() if k in known})


def batches(n: int, batch_size: int, generator: torch.Generator | None = None):
    """Index tensors of shuffled mini-batches covering ``range(n)`` once."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return order.split(batch_size)


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate at batch ``step`` of ``total_steps``: constant, or a cosine
    decay from ``config.lr`` to 0. A function of the step alone, so a resumed run
    continues the same curve."""
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))
    return config.lr


def _prepare(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def train_step(
    model: CVAE, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor | None
) -> float:
    """One optimisation step on a batch; returns its summed negative ELBO (nats).

    The order matters: forward, loss, clear the old gradients, backward, step.
    """
    x_hat, mu, logvar = model(x, y)
    loss = loss_function(x_hat, x, mu, logvar)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


@torch.inference_mode()
def evaluate(
    model: CVAE, x: torch.Tensor, y: torch.Tensor | None, batch_size: int = 1000, seed: int = 0
) -> float:
    """Mean negative ELBO (nats per image) with a sampled z, as the VAE paper reports.

    The noise comes from its own seeded generator, so the figure is repeatable
    and the training run's random stream is untouched.
    """
    was_training = model.training
    model.eval()
    device = model.device
    total = 0.0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for idx in batches(x.shape[0], batch_size):
            xb = x[idx].to(device)
            yb = None if y is None else y[idx].to(device)
            x_hat, mu, logvar = model(xb, yb)
            total += negative_elbo(x_hat, xb, mu, logvar).sum().item()
    model.train(was_training)
    return total / x.shape[0]


def train(
    model: CVAE,
    x: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig,
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    history: History | None = None,
    start_epoch: int = 0,
    progress: bool = True,
    on_epoch_end=None,
    verbose: bool = True,
) -> History:
    """Train ``model`` in place for epochs ``start_epoch .. config.epochs - 1``.

    ``x`` (N, 1, 28, 28) in [0, 1] and ``y`` (N,) stay where they are (CPU);
    each mini-batch moves to the model's device. Every ``log_every`` batches
    the batch loss (nats per image) goes into the history; after each epoch
    the test negative ELBO is measured if a test set is given.
    ``on_epoch_end(epoch, history)`` is called after each epoch (to save).
    ``progress`` shows a tqdm bar per epoch, ``verbose`` prints a line per epoch.
    """
    device = model.device
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=config.lr)
    history = history or History()
    conditional = model.config.conditional
    n = x.shape[0]
    steps_per_epoch = math.ceil(n / config.batch_size)
    for epoch in range(start_epoch, config.epochs):
        # Seed per epoch, so a resumed run sees the same batches as an unbroken one.
        torch.manual_seed(config.seed * 1000 + epoch)
        g = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        model.train()
        start, cpu_start, running = time.perf_counter(), time.process_time(), 0.0
        bar = tqdm(batches(n, config.batch_size, g), total=steps_per_epoch,
                   desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress,
                   leave=False)
        for i, idx in enumerate(bar):
            xb = _prepare(x[idx].to(device, non_blocking=True), config.channels_last)  # (B, 1, 28, 28)
            yb = y[idx].to(device) if conditional else None  # (B,)
            if config.lr_schedule != "constant":
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(config, epoch * steps_per_epoch + i,
                                                config.epochs * steps_per_epoch)
            loss = train_step(model, optimizer, xb, yb)
            per_image = loss / xb.shape[0]
            running += loss
            if i % config.log_every == 0:
                history.step.append(epoch * steps_per_epoch + i)
                history.loss.append(per_image)
                bar.set_postfix(loss=f"{per_image:.1f}")
        history.epoch_seconds.append(time.perf_counter() - start)
        history.epoch_cpu_seconds.append(time.process_time() - cpu_start)
        history.epoch_train_nelbo.append(running / n)
        if x_test is not None:
            history.epoch_test_nelbo.append(
                evaluate(model, x_test, y_test if conditional else None)
            )
        if verbose:
            test = (f", test -ELBO {history.epoch_test_nelbo[-1]:.2f}"
                    if x_test is not None else "")
            print(f"epoch {epoch + 1:3d}/{config.epochs}: train -ELBO "
                  f"{history.epoch_train_nelbo[-1]:.2f}{test} nats/image "
                  f"({history.epoch_seconds[-1]:.1f} s)", flush=True)
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
    return history


def load_data(config: TrainConfig, root=None):
    """Training and test tensors for ``config`` (subsets in quick runs)."""
    x, y = load_mnist("train", root=root, dataset=config.dataset)
    x_test, y_test = load_mnist("test", root=root, dataset=config.dataset)
    if config.train_size:
        x, y = subset(x, y, config.train_size, seed=config.seed)
    if config.test_size:
        x_test, y_test = subset(x_test, y_test, config.test_size, seed=config.seed)
    return x, y, x_test, y_test


def fit(
    config: TrainConfig,
    out: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    data_root=None,
    progress: bool = True,
    data=None,
) -> tuple[CVAE, History]:
    """Build (or resume), train, evaluate and save a model: what the command line does.

    With ``out``, the checkpoint is saved atomically after every epoch, so an
    interrupted run loses at most one epoch and can be resumed with ``resume``.
    ``data`` may pass ``(x, y, x_test, y_test)`` already in memory.
    """
    device = get_device(device)
    torch.manual_seed(config.seed)
    model = CVAE(config.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    history, start_epoch = History(), 0
    if resume is not None:
        ckpt = read_checkpoint(resume, kind="CVAE")
        load_state(model, ckpt, resume)
        if ckpt.get("optimizer"):
            optimizer.load_state_dict(ckpt["optimizer"])
        history = History.from_dict(ckpt.get("history", {}))
        start_epoch = int(ckpt.get("epochs", 0))
        if start_epoch >= config.epochs:
            print(f"{resume} already has {start_epoch} epochs; nothing to do "
                  f"(ask for more with --epochs)")
    x, y, x_test, y_test = data if data is not None else load_data(config, data_root)

    def save(epoch: int, hist: History) -> None:
        if out is None:
            return
        metrics = {"test_nelbo": hist.epoch_test_nelbo[-1]} if hist.epoch_test_nelbo else {}
        metrics["train_seconds"] = sum(hist.epoch_seconds)
        metrics["train_cpu_seconds"] = sum(hist.epoch_cpu_seconds)
        save_checkpoint(out, model, train_config=asdict(config), history=hist.to_dict(),
                        metrics=metrics, optimizer=optimizer, epochs=epoch + 1)

    history = train(model, x, y, config, x_test, y_test, optimizer=optimizer,
                    history=history, start_epoch=start_epoch, progress=progress,
                    on_epoch_end=save)
    model.to(memory_format=torch.contiguous_format)
    return model.eval(), history


def parse_args(argv=None) -> argparse.Namespace:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m lab_utils.train",
        description="Train a CVAE of the lab on MNIST and save a checkpoint.",
    )
    p.add_argument("--epochs", type=int, default=d.epochs, help="total epochs (default %(default)s)")
    p.add_argument("--out", default=None, help="checkpoint path (default checkpoints/<model>.pt)")
    p.add_argument("--model", default=d.model, choices=sorted(__import__("lab_utils.model", fromlist=["CONFIGS"]).CONFIGS))
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--lr-schedule", default=d.lr_schedule, choices=["constant", "cosine"],
                   help="cosine: decay the learning rate to 0 over the run")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--dataset", default=d.dataset, choices=["mnist", "fashion-mnist"])
    p.add_argument("--train-size", type=int, default=None, help="train on a random subset")
    p.add_argument("--test-size", type=int, default=None, help="evaluate on a random test subset")
    p.add_argument("--resume", default=None, help="continue from this checkpoint")
    p.add_argument("--data-root", default=None, help="data folder (default $CVAE_LAB_DATA or ./data)")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: best available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        config = TrainConfig(model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                             lr=args.lr, lr_schedule=args.lr_schedule, seed=args.seed, dataset=args.dataset,
                             train_size=args.train_size, test_size=args.test_size)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or os.path.join("checkpoints", f"{args.model}.pt")
    device = get_device(args.device)
    print(f"training {args.model} on {config.dataset} for {config.epochs} epochs on {device}; "
          f"checkpoint: {out}", flush=True)
    _, history = fit(config, out=out, resume=args.resume, device=device,
                     data_root=args.data_root, progress=not args.no_progress)
    if history.epoch_test_nelbo:
        print(f"final test negative ELBO: {history.epoch_test_nelbo[-1]:.2f} nats per image "
              f"after {len(history.epoch_test_nelbo)} epochs, "
              f"{sum(history.epoch_seconds):.0f} s of training")
    return 0


if __name__ == "__main__":
    sys.exit(main())
