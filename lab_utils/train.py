"""Training the CVAE: the loop, its history, and its command line.

    python -m lab_utils.train --epochs 10 --out checkpoints/lab.pt

Mini-batches are sliced from in-memory tensors (no ``DataLoader``), and the
loss is computed by ``lab_utils.fast``: the same function of the weights as the
plain model's forward pass up to float32 rounding (``tests/test_fast.py``,
``tests/test_kernels.py``), arranged so that a CPU runs it faster (through the
compiled kernels of ``lab_utils.kernels`` where they build; see
``benchmarks/train_speed.py``), and updated by fused Adam; ``--plain`` runs the
plain forward pass and the plain Adam. ``train(..., step=fn)`` trains with
your own step function instead (the plain route; notebook 05's exercise).
The first ``warmup_steps`` batches ramp the learning rate up from near 0:
without it, the first Adam steps can shut a digit out of the narrow encoder
for good (see ``TrainConfig.warmup_steps`` and ``evaluation.silent_digits``).
Taught in ``05_training.ipynb``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace

import torch
from tqdm.auto import tqdm

from . import fast
from .checkpoints import load_state, read_checkpoint, save_checkpoint
from .data import load_mnist, subset
from .labels import check_labels
from .losses import bce, kl_divergence, loss_function, negative_elbo
from .model import CONFIGS, CVAE, StoredConfig, check_images, eval_mode, get_config
from .runtime import get_device

# Fields added to TrainConfig after models were trained and shipped, with the
# value that reproduces a run made before the field existed.
_ADDED_FIELDS = {"warmup_steps": 0, "fast": False, "init": "pytorch",
                 "beta": 1.0, "binarize": False, "val_size": 0, "kl_warmup_steps": 0}
# Fields removed since, with the one value a stored config may hold for them: the
# value at which the field did nothing (any other value would be silently lost).
_REMOVED_FIELDS = {"decay_epochs": None}
INITS = ("open-relus", "label-neutral", "pytorch")
# The bias the label-neutral and open-relus starts give the layers before the
# narrow ReLUs: small and positive, so every such ReLU passes its input at the start.
NARROW_BIAS = 0.1


@dataclass
class TrainConfig(StoredConfig):
    """How a model is trained. Stored in every checkpoint next to the architecture."""

    model: str = "lab"            # a name from lab_utils.model.CONFIGS
    epochs: int = 10              # total epochs (a resumed run trains up to this many)
    batch_size: int = 128         # as in pytorch/examples vae/main.py
    lr: float = 1e-3              # Adam's peak learning rate
    seed: int = 0                 # initialisation, shuffling and noise
    log_every: int = 10           # record the loss every this many batches (the lab report's Figure 3)
    dataset: str = "mnist"        # or "fashion-mnist"
    train_size: int | None = None # None: the whole training set (60,000)
    test_size: int | None = None  # None: the whole test set (10,000)
    channels_last: bool = True    # plain route only: faster convolutions on a CPU
    lr_schedule: str = "constant" # or "cosine": decay the lr to 0 over the run (short runs end lower)
    # Linear learning-rate warm-up over the first batches. Adam's first steps move
    # every weight by about lr whatever its gradient; at full lr they can push a
    # digit's label bias below zero in the 3- and 1-channel ReLU layers, which
    # then pass nothing for that digit, ever (a silent digit).
    warmup_steps: int = 0
    fast: bool = True             # the lab_utils.fast route (same loss, faster); False: model(x, y)
    # The starting weights (see initialise): "open-relus"; "label-neutral", the
    # default before it, which stalls seed 7 for most of 10 epochs; or "pytorch",
    # the layers' default initialisation alone, which leaves some seeds with a silent digit.
    init: str = "open-relus"
    # The weight of the KL term in the training objective BCE + beta * KL. 1 is
    # the ELBO (the lab report's loss); other values trade rate (KL) against
    # distortion (BCE): the beta-VAE of Higgins et al. 2017, read as a
    # rate-distortion trade-off by Alemi et al. 2018. The test figures stay the
    # negative ELBO whatever beta trained the model.
    beta: float = 1.0
    # Dynamically binarized MNIST: each training batch is drawn as Bernoulli(pixel
    # grey level) afresh every time it is seen, and the validation and test
    # images are binarized once with a fixed seed. Then BCE is the log-likelihood
    # of binary data, and the nats compare with the binarized-MNIST literature.
    binarize: bool = False
    # Images carved from the training set (after train_size) to select on: the
    # validation negative ELBO is measured after every epoch; the test set is
    # only reported, never used to choose.
    val_size: int = 0
    # KL warm-up (Bowman et al. 2016's KL annealing, short): the KL term's weight
    # rises linearly from beta/N to beta over the first N batches (the training
    # loss logged meanwhile is BCE + weight * KL). From the label-neutral start,
    # once seed 7's decoder stops using z, the KL's pull toward the prior closes the
    # encoder's 1-channel ReLU map at about 93% of its positions
    # (benchmarks/results/first_steps.txt, and its --beta 0 rows, where it stays
    # open). Measured with N = 100 from that start (benchmarks/results/
    # seeds_kl_warmup.txt): it saves seed 7 and silences eight digits of seed 19,
    # so it is an option to study, not the default (the open-relus start is the fix).
    # 0 (the default, the recipe of the shipped model): the ELBO from step 0.
    kl_warmup_steps: int = 0

    def __post_init__(self):
        get_config(self.model)  # fails early on an unknown name
        for name in ("epochs", "batch_size", "log_every", "warmup_steps", "kl_warmup_steps"):
            low = 0 if name in ("epochs", "warmup_steps", "kl_warmup_steps") else 1
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be at least {low}, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not self.beta >= 0:
            raise ValueError(f"beta must be 0 or more (the weight of the KL term), got {self.beta}")
        if self.val_size < 0:
            raise ValueError(f"val_size must be 0 or more, got {self.val_size}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """The config a checkpoint stored. Unknown keys are refused (as for the
        architecture); a field added since the checkpoint was written takes the
        value that reproduces how that model was trained (``_ADDED_FIELDS``)."""
        d = dict(d)
        for name, inert in _REMOVED_FIELDS.items():
            if name in d and d.pop(name) != inert:
                raise ValueError(f"this checkpoint was trained with {name}, which this version "
                                 f"of lab_utils no longer has; retrain it or use an older version")
        return super().from_dict({**_ADDED_FIELDS, **d})


@dataclass
class History:
    """What happened during training, for the loss curve and the report."""

    step: list[int] = field(default_factory=list)          # batch index of each logged loss
    loss: list[float] = field(default_factory=list)        # that batch's loss, nats per image
    epoch_train_nelbo: list[float] = field(default_factory=list)  # mean over the epoch
    epoch_test_nelbo: list[float] = field(default_factory=list)   # sampled z, whole test set
    epoch_val_nelbo: list[float] = field(default_factory=list)    # sampled z, the validation split
    epoch_seconds: list[float] = field(default_factory=list)
    # CPU time of the process (all threads): on a busy machine the wall-clock
    # seconds above grow with the other jobs, this stays near the idle figure.
    epoch_cpu_seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown History fields {sorted(unknown)}")
        return cls(**{k: list(v) for k, v in d.items()})


def split_validation(x: torch.Tensor, y: torch.Tensor, val_size: int, seed: int = 0):
    """(x_train, y_train, x_val, y_val): ``val_size`` random training examples held out.

    Seeds, epochs and settings are chosen on these, never on the test set, so
    that the test figure stays an honest estimate of the chosen model.
    """
    if val_size <= 0:
        return x, y, x[:0], y[:0]
    if val_size >= x.shape[0]:
        raise ValueError(f"val_size={val_size} leaves no training images out of {x.shape[0]}; "
                         f"use a smaller val_size")
    g = torch.Generator().manual_seed(10_000 + seed)
    order = torch.randperm(x.shape[0], generator=g)
    train_idx, val_idx = order[val_size:].sort().values, order[:val_size].sort().values
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


def binarize_fixed(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Binary images drawn once as Bernoulli(grey level), reproducibly (a fixed
    binarization of evaluation images, as the binarized-MNIST literature scores)."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    return torch.bernoulli(x, generator=g)


def initialise(model: CVAE, init: str = "open-relus") -> CVAE:
    """Set the starting weights of ``model`` (in place; returns it).

    ``"pytorch"`` keeps the layers' default initialisation. With it, the label
    kernels of the first convolution start random, so each digit starts with
    its own random bias in the 3- and then 1-channel ReLU layers: for some
    seeds a digit's bias is so negative that the 1-channel map is zero for all
    its images before the first step (``evaluation.silent_digits`` at step 0),
    its images then send no gradient into the convolutions, and it stays
    silent. ``"label-neutral"`` changes two things, nothing else:

    * the first convolution's label-channel kernels start at zero, so every
      digit starts from the same features (training then learns the per-digit
      bias from a neutral start), and
    * the encoder convolutions' biases start at ``NARROW_BIAS`` (0.1) instead
      of a random value, so their ReLUs start open. Krizhevsky et al. (2012)
      set some layers' biases to 1 for the same reason ("providing the ReLUs
      with positive inputs"); 0.1 is this lab's choice.

    ``"open-relus"`` (the default) is ``"label-neutral"`` plus the same bias for
    every decoder layer that a ReLU follows: ``Linear(30, 392)``, ``Conv2d(2, 11)``
    and ``Conv2d(11, 3)``. Why: from the layers' default biases, seed 7's first
    Adam steps close the decoder's 3-channel ReLU map (0.00 of its positions, to
    two decimals, at every step recorded from 40 to 200,
    ``benchmarks/results/first_steps.txt``); the decoder's output is then its last
    bias alone, whatever z is, the reconstruction term stops asking z for anything,
    and the KL term closes the encoder's 1-channel map: a stall of seven epochs
    (``benchmarks/results/seeds_kernels.txt``). From the open start the same maps
    still close, to a few percent of positions, but not to 0.00, and have reopened
    by step 320: seed 7 ends healthy, and seeds 0-9 end with an sd of 1.11 nats
    (``benchmarks/results/seeds_open_relus.txt``). The encoder's
    ``Linear(784, 400)`` keeps its default bias: a throw-away run with it at 0.1
    too left two of 20 seeds with silent digits after two epochs.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "pytorch":
        return model
    convs = [m for m in model.encoder.conv if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        if model.config.conditional:
            convs[0].weight[:, 1:].zero_()  # (C, 1 + K, 3, 3): the K label channels
        for conv in convs:
            conv.bias.fill_(NARROW_BIAS)
        if init == "open-relus":
            decoder_convs = [m for m in model.decoder.conv if isinstance(m, torch.nn.Conv2d)]
            # every decoder layer a ReLU follows; the last conv feeds the sigmoid
            for layer in [model.decoder.fc[0], *decoder_convs[:-1]]:
                layer.bias.fill_(NARROW_BIAS)
    return model


def batches(n: int, batch_size: int, generator: torch.Generator | None = None):
    """Index tensors of shuffled mini-batches covering ``range(n)`` once."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return order.split(batch_size)


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate at batch ``step`` of ``total_steps``.

    A linear warm-up over the first ``warmup_steps`` batches (from lr/warmup to
    lr), times the schedule: constant, or a cosine decay from ``config.lr`` to 0.
    A function of the step alone, so a resumed run continues the same curve.
    """
    lr = config.lr
    if config.lr_schedule == "cosine":
        lr *= 0.5 * (1 + math.cos(math.pi * step / total_steps))
    if step < config.warmup_steps:
        lr *= (step + 1) / config.warmup_steps
    return lr


def kl_weight(config: TrainConfig, step: int) -> float:
    """The KL term's weight at batch ``step``: ``beta``, ramped up linearly over the
    first ``kl_warmup_steps`` batches (``(step + 1) / N`` of it at step ``step``). A
    function of the step alone, so a resumed run continues the same ramp."""
    if step < config.kl_warmup_steps:
        return config.beta * (step + 1) / config.kl_warmup_steps
    return config.beta


def lr_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int,
                 start_step: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """:func:`learning_rate` as a ``LambdaLR``, positioned at ``start_step`` (a resumed run)."""
    for group in optimizer.param_groups:
        group["initial_lr"] = config.lr  # LambdaLR multiplies this by the factor below
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate(config, step, total_steps) / config.lr,
        last_epoch=start_step - 1)


def batch_loss(model: CVAE, x: torch.Tensor, y: torch.Tensor | None,
               fast_route: bool = False, beta: float = 1.0) -> torch.Tensor:
    """The training objective of a batch (a scalar tensor): the summed negative
    ELBO, BCE + KL (``beta`` = 1), or BCE + beta * KL; plain forward pass, or
    ``lab_utils.fast``'s route to the same number."""
    if beta == 1.0:  # the ELBO, summed as the lab report sums it
        if fast_route:
            return fast.negative_elbo(model, x, y).sum()
        x_hat, mu, logvar = model(x, y)
        return loss_function(x_hat, x, mu, logvar)
    if fast_route:
        reconstruction, kl = fast.loss_terms(model, x, y)
    else:
        x_hat, mu, logvar = model(x, y)
        reconstruction, kl = bce(x_hat, x), kl_divergence(mu, logvar)
    return reconstruction.sum() + beta * kl.sum()


def _optimise(model, optimizer, x, y, fast_route: bool, beta: float = 1.0) -> torch.Tensor:
    loss = batch_loss(model, x, y, fast_route, beta)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


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
    model: CVAE, x: torch.Tensor, y: torch.Tensor | None, batch_size: int = 1000, seed: int = 0,
    *, fast_route: bool = False,
) -> float:
    """Mean negative ELBO (nats per image) with a sampled z, as the VAE paper reports.

    The noise comes from its own seeded generator, so the figure is repeatable
    and the training run's random stream is untouched. ``fast_route`` computes
    the same number through ``lab_utils.fast`` (as training does).
    """
    device = model.device
    total = torch.zeros((), dtype=torch.float64, device=device)
    fast_route = fast_route and fast.supports(model.config)
    with eval_mode(model), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for idx in batches(x.shape[0], batch_size):
            xb = x[idx].to(device)
            yb = None if y is None else y[idx].to(device)
            if fast_route:
                per_image = fast.negative_elbo(model, xb, yb)
            else:
                x_hat, mu, logvar = model(xb, yb)
                per_image = negative_elbo(x_hat, xb, mu, logvar)
            total += per_image.sum()
    return total.item() / x.shape[0]


def takes_fast_route(model: CVAE, config: TrainConfig, step=None) -> bool:
    """Whether training computes the loss through ``lab_utils.fast``: asked for
    (``config.fast``), a shape it handles, and no step function of one's own
    (which computes its own loss with ``model(x, y)``)."""
    return config.fast and fast.supports(model.config) and step is None


def make_optimizer(model: CVAE, config: TrainConfig, fast_route: bool) -> torch.optim.Adam:
    """Adam at ``config.lr``. On the fast route, PyTorch's fused Adam: the same
    update rule in one pass over each tensor instead of one pass per elementwise
    operation. The plain route keeps the plain Adam, so that it stays the
    reference it is."""
    return torch.optim.Adam(model.parameters(), lr=config.lr, fused=fast_route or None)


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The whole data set on an accelerator (no copy per batch); on the CPU, as it is."""
    return x if device.type == "cpu" else x.to(device)


def train(
    model: CVAE,
    x: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig,
    *,
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    x_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    history: History | None = None,
    start_epoch: int = 0,
    progress: bool = True,
    on_epoch_end=None,
    verbose: bool = True,
    step=None,
) -> History:
    """Train ``model`` in place for epochs ``start_epoch .. config.epochs - 1``.

    ``x`` (N, 1, 28, 28) in [0, 1] and ``y`` (N,) are checked once here (not
    every batch); on a GPU they move to it once. Every ``log_every`` batches
    the batch loss (nats per image) goes into the history; after each epoch
    the test negative ELBO is measured if a test set is given.
    ``on_epoch_end(epoch, history)`` is called after each epoch (to save).
    ``progress`` shows a tqdm bar per epoch, ``verbose`` prints a line per epoch.
    With ``x_val``, the validation negative ELBO is measured after each epoch too
    (``history.epoch_val_nelbo``: what to select on). With ``config.binarize``
    each batch is binarized afresh (the evaluation sets must be binary already).
    ``step(model, optimizer, xb, yb) -> float`` replaces the built-in step (a
    student's :func:`train_step`): it computes its own loss, so the loop runs
    the plain route (``config.fast`` is ignored, the test set is evaluated the
    plain way) and reads one float per batch; a correct step trains exactly as
    ``config.fast=False`` does. None (the default): the built-in step.
    """
    device = model.device
    check_images(x, model.config.image_size)
    check_labels(y, model.config.num_classes)
    if step is not None and config.beta != 1.0:
        raise ValueError(f"a step function computes its own loss, so beta={config.beta} would be "
                         f"ignored: train with beta=1 or without step=")
    if step is not None and config.kl_warmup_steps:
        raise ValueError(f"a step function computes its own loss, so kl_warmup_steps="
                         f"{config.kl_warmup_steps} would be ignored: train with 0 or without step=")
    if x_val is not None and x_val.shape[0] == 0:  # no validation split: nothing to measure
        x_val = y_val = None
    if x_test is not None and x_test.shape[0] == 0:
        x_test = y_test = None
    fast_route = takes_fast_route(model, config, step)
    if config.channels_last and not fast_route:
        model.to(memory_format=torch.channels_last)
    optimizer = optimizer or make_optimizer(model, config, fast_route)
    history = history or History()
    conditional = model.config.conditional
    x, y = _to_device(x, device), _to_device(y, device)
    n = x.shape[0]
    steps_per_epoch = math.ceil(n / config.batch_size)
    scheduler = lr_scheduler(optimizer, config, config.epochs * steps_per_epoch,
                             start_step=start_epoch * steps_per_epoch)
    for epoch in range(start_epoch, config.epochs):
        # Seed per epoch, so a resumed run sees the same batches as an unbroken one.
        torch.manual_seed(config.seed * 1000 + epoch)
        g = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        model.train()
        start, cpu_start = time.perf_counter(), time.process_time()
        running = torch.zeros((), dtype=torch.float64, device=device)
        logged: list[torch.Tensor] = []  # read back once per epoch: no host sync per step
        bar = tqdm(batches(n, config.batch_size, g), total=steps_per_epoch,
                   desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress,
                   leave=False)
        for i, idx in enumerate(bar):
            idx = idx.to(device, non_blocking=True)
            xb = x[idx]  # (B, 1, 28, 28)
            if config.channels_last and not fast_route:
                xb = xb.contiguous(memory_format=torch.channels_last)
            if config.binarize:  # dynamic binarization: a fresh binary draw of each image
                xb = torch.bernoulli(xb)
            yb = y[idx] if conditional else None  # (B,)
            if step is None:
                loss = _optimise(model, optimizer, xb, yb, fast_route,
                                 kl_weight(config, epoch * steps_per_epoch + i))
            else:  # a float: as a float32 tensor, like the built-in step's loss
                loss = torch.as_tensor(step(model, optimizer, xb, yb), dtype=torch.float32,
                                       device=device)
            scheduler.step()
            running += loss
            if i % config.log_every == 0:
                history.step.append(epoch * steps_per_epoch + i)
                logged.append(loss / xb.shape[0])
                if progress:
                    bar.set_postfix(loss=f"{logged[-1].item():.1f}")
        history.loss.extend(torch.stack(logged).tolist())
        history.epoch_train_nelbo.append(running.item() / n)
        history.epoch_seconds.append(time.perf_counter() - start)
        history.epoch_cpu_seconds.append(time.process_time() - cpu_start)
        if x_val is not None:
            history.epoch_val_nelbo.append(
                evaluate(model, x_val, y_val if conditional else None, fast_route=fast_route))
        if x_test is not None:
            history.epoch_test_nelbo.append(
                evaluate(model, x_test, y_test if conditional else None, fast_route=fast_route)
            )
        if verbose:
            test = (f", validation -ELBO {history.epoch_val_nelbo[-1]:.2f}"
                    if x_val is not None else "")
            test += (f", test -ELBO {history.epoch_test_nelbo[-1]:.2f}"
                     if x_test is not None else "")
            print(f"epoch {epoch + 1:3d}/{config.epochs}: train -ELBO "
                  f"{history.epoch_train_nelbo[-1]:.2f}{test} nats/image "
                  f"({history.epoch_seconds[-1]:.1f} s)", flush=True)
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
    return history


def load_data(config: TrainConfig, root=None):
    """Training and test tensors for ``config`` (subsets in quick runs; the test
    images binarized once, with a fixed seed, when ``config.binarize``)."""
    x, y = load_mnist("train", root=root, dataset=config.dataset)
    x_test, y_test = load_mnist("test", root=root, dataset=config.dataset)
    if config.train_size:
        x, y = subset(x, y, config.train_size, seed=config.seed)
    if config.test_size:
        x_test, y_test = subset(x_test, y_test, config.test_size, seed=config.seed)
    if config.binarize:
        x_test = binarize_fixed(x_test, seed=1)
    return x, y, x_test, y_test


def fit(
    config: TrainConfig,
    *,
    out: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    data_root=None,
    progress: bool = True,
    data=None,
    step=None,
) -> tuple[CVAE, History]:
    """Build (or resume), train, evaluate and save a model: what the command line does.

    With ``out``, the checkpoint is saved atomically after every epoch, so an
    interrupted run loses at most one epoch and can be resumed with ``resume``.
    ``data`` may pass ``(x, y, x_test, y_test)`` already in memory. ``step``
    trains with that step function (see :func:`train`); the checkpoint then
    records ``fast=False``, the route such a run takes.
    """
    device = get_device(device)
    torch.manual_seed(config.seed)
    model = initialise(CVAE(config.model), config.init).to(device)
    optimizer = make_optimizer(model, config, takes_fast_route(model, config, step))
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
    x, y, x_val, y_val = split_validation(x, y, config.val_size, seed=config.seed)
    if config.binarize:
        x_val = binarize_fixed(x_val, seed=2)

    def save(epoch: int, hist: History) -> None:
        if out is None:
            return
        metrics = {"test_nelbo": hist.epoch_test_nelbo[-1]} if hist.epoch_test_nelbo else {}
        metrics["train_seconds"] = sum(hist.epoch_seconds)
        metrics["train_cpu_seconds"] = sum(hist.epoch_cpu_seconds)
        stored = asdict(config if step is None else replace(config, fast=False))
        save_checkpoint(out, model, train_config=stored, history=hist.to_dict(),
                        metrics=metrics, optimizer=optimizer, epochs=epoch + 1)

    history = train(model, x, y, config, x_test=x_test, y_test=y_test,
                    x_val=x_val, y_val=y_val, optimizer=optimizer,
                    history=history, start_epoch=start_epoch, progress=progress,
                    on_epoch_end=save, step=step)
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
    p.add_argument("--model", default=d.model, choices=sorted(CONFIGS))
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--lr-schedule", default=d.lr_schedule, choices=["constant", "cosine"],
                   help="cosine: decay the learning rate to 0 over the run")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps,
                   help="linear learning-rate warm-up over this many batches (default %(default)s)")
    p.add_argument("--init", default=d.init, choices=INITS,
                   help="starting weights: open-relus (default), label-neutral (the default "
                        "before it) or pytorch (the layers' defaults, which leave some seeds "
                        "with a silent digit)")
    p.add_argument("--plain", action="store_true",
                   help="compute the loss with the plain forward pass model(x, y) instead of "
                        "lab_utils.fast (the same function, slower)")
    p.add_argument("--kl-warmup-steps", type=int, default=d.kl_warmup_steps,
                   help="ramp the KL term's weight up linearly over this many batches "
                        "(default %(default)s: the ELBO from the first step)")
    p.add_argument("--beta", type=float, default=d.beta,
                   help="weight of the KL term: train on BCE + beta * KL (default %(default)s: the ELBO)")
    p.add_argument("--binarize", action="store_true",
                   help="dynamically binarized MNIST (test images binarized once): nats comparable "
                        "with the binarized-MNIST literature")
    p.add_argument("--val-size", type=int, default=d.val_size,
                   help="hold out this many training images as a validation split (default %(default)s)")
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
                             train_size=args.train_size, test_size=args.test_size,
                             warmup_steps=args.warmup_steps, fast=not args.plain, init=args.init,
                             beta=args.beta, binarize=args.binarize, val_size=args.val_size,
                             kl_warmup_steps=args.kl_warmup_steps)
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
