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
from lab_utils.labels import expand_labels
from lab_utils.model import CVAE
from lab_utils.train import (INITS, TrainConfig, _optimise, batches, initialise, learning_rate,
                             make_optimizer)


def positive_shares(model: CVAE, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Shares of positive positions of every narrow ReLU map, encoder then decoder.

    The encoder's 3-channel and 1-channel maps; the decoder's Linear(30, 392)
    output, its 11-channel and its 3-channel maps, computed from a sampled z
    (one fixed draw of the noise), as training feeds the decoder.
    """
    with torch.no_grad():
        labels = expand_labels(y, 28, 28, 10).to(x.dtype)  # (N,) -> (N, 10, 28, 28)
        enc3 = model.encoder.conv[:2](torch.cat([x, labels], dim=1))  # (N, 3, 28, 28)
        enc1 = model.encoder.conv[2:](enc3)  # (N, 3, 28, 28) -> (N, 1, 28, 28)
        mu, logvar = model.encoder(x, y)  # (N, 20), (N, 20)
        eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(0))  # (N, 20)
        z = mu + torch.exp(0.5 * logvar) * eps  # (N, 20)
        dec = model.decoder
        h = dec.fc(torch.cat([z, torch.nn.functional.one_hot(y, 10).to(z.dtype)], dim=1))  # (N, 30) -> (N, 392)
        dec11 = dec.conv[:2](h.view(-1, 2, 14, 14))  # (N, 392) -> (N, 2, 14, 14) -> (N, 11, 14, 14)
        dec3 = dec.conv[2:5](dec11)  # upsample, Conv(11, 3), ReLU: (N, 11, 14, 14) -> (N, 3, 28, 28)
    return [(m > 0).float().mean().item() for m in (enc3, enc1, h, dec11, dec3)]


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
