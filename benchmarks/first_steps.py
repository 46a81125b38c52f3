"""How the lab CVAE's narrow ReLU layers fare in the first steps of training.

    python benchmarks/first_steps.py [--seeds 0,7] [--steps 200] [--every 20] [--warmup-steps 0]
                                     [--beta 1] [--init open-relus]

For each seed, the first ``--steps`` Adam steps of the default recipe, taken as
``lab_utils.train.train`` takes them (the seed, the ``--init`` start, the
epoch's shuffle and noise seeds, the fast route and its fused Adam, the learning
rate of ``learning_rate``), and every ``--every`` steps the share of positions
where each narrow ReLU map is positive, on the first 1,000 test digits: the
encoder's 3-channel and 1-channel maps, then the decoder's Linear(30, 392)
output, its 11-channel and its 3-channel maps (from a sampled z). A decoder
3-channel share of 0 means the decoder's output is its last bias alone, whatever
z and the label are; an encoder 1-channel share far below 1 means what the
encoder passes on to z is mostly zeros (a stall, ``benchmarks/results/
seeds_kernels.txt``'s seed 7), not one silent digit. ``--beta`` weights the KL
term of the loss (``TrainConfig.beta``; 0 drops it): does the KL's pull on the
codes close the map, or the reconstruction's gradient?
"""
from __future__ import annotations

import argparse
import sys

import torch

from lab_utils.data import load_mnist
from lab_utils.model import CVAE
from lab_utils.train import (INITS, TrainConfig, _optimise, batches, initialise, learning_rate,
                             make_optimizer)


def narrow_relus(model: CVAE) -> list[torch.nn.ReLU]:
    """The ReLUs of the narrow layers, in forward order: the encoder's two
    convolutions, then the decoder's Linear(30, 392) and its two convolutions
    (the encoder's wide Linear(784, 400) is left out)."""
    return [m for part in (model.encoder.conv, model.decoder.fc, model.decoder.conv)
            for m in part if isinstance(m, torch.nn.ReLU)]


def positive_shares(model: CVAE, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Shares of positive positions of every narrow ReLU map, encoder then decoder.

    Read with forward hooks during one ``model(x, y)``, so the maps are the
    model's own: the decoder's come from a sampled z (noise seed 0, drawn in a
    forked random state, so the training run's random stream is left as it was).
    """
    shares: list[float] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: shares.append((out > 0).float().mean().item()))
             for m in narrow_relus(model)]
    try:
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(0)
            model(x, y)
    finally:
        for h in hooks:
            h.remove()
    return shares


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,7", help="comma-separated seeds")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--every", type=int, default=20)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--beta", type=float, default=1.0, help="weight of the KL term (1: the ELBO)")
    p.add_argument("--init", default=TrainConfig().init, choices=INITS, help="the starting weights")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    x, y = load_mnist("train")
    x_probe, y_probe = load_mnist("test")
    x_probe, y_probe = x_probe[:1000], y_probe[:1000]
    print(f"lab CVAE, init {args.init}, warm-up {args.warmup_steps} steps, beta {args.beta:g}; share of positive "
          f"positions of each ReLU map on 1,000 test digits")
    for seed in (int(s) for s in args.seeds.split(",")):
        config = TrainConfig(seed=seed, warmup_steps=args.warmup_steps, beta=args.beta, init=args.init)
        torch.manual_seed(config.seed)  # as fit does
        model = initialise(CVAE(config.model), config.init)
        optimizer = make_optimizer(model, config, fast_route=True)
        total = config.epochs * -(-x.shape[0] // config.batch_size)
        torch.manual_seed(config.seed * 1000)  # epoch 0's noise and shuffle, as train seeds them
        g = torch.Generator().manual_seed(config.seed * 1000)
        row = []
        for i, idx in enumerate(batches(x.shape[0], config.batch_size, g)):
            if i % args.every == 0:
                e3, e1, d392, d11, d3 = positive_shares(model, x_probe, y_probe)
                row.append(f"{i}: {e3:.2f} {e1:.2f} | {d392:.2f} {d11:.2f} {d3:.2f}")
            if i >= args.steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, i, total)
            _optimise(model, optimizer, x[idx], y[idx], fast_route=True, beta=config.beta)
        print(f"seed {seed} (step: encoder 3-ch 1-ch | decoder 392 11-ch 3-ch): " + ", ".join(row),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
