"""Is training healthy from every seed? The lab CVAE trained from seeds 0-9.

    python benchmarks/seeds.py [--seeds 0-9] [--epochs 10] [--init open-relus] [--threads 1]

Each seed runs ``lab_utils.train.fit`` with the command line's defaults (the
recipe ``python -m lab_utils.train --epochs 10 --seed S`` runs) and reports, on
the whole test set:
  * the test negative ELBO (nats per image, one sampled z, as training reports it);
  * the silent digits (``evaluation.silent_digits``: digits whose images never
    reach z); the smallest digit's feature spread over the median digit's, and
    the median digit's spread itself (small for every digit: the encoder stalled);
  * the test negative ELBO after each epoch (a plateau shows a stall).
Then the mean and sample standard deviation of the test negative ELBO over the
seeds. Lines are printed (and flushed) as each seed ends, so a long run can be
watched; ``--out FILE`` also writes them there. Seeds are only reported here,
never selected: no model is picked by its test figure.
``--init pytorch --plain`` runs the recipe from before the label-neutral start;
``--init label-neutral`` the default before the open-relus start.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch

from lab_utils.evaluation import feature_spread, silent_digits
from lab_utils.train import INITS, TrainConfig, fit, load_data


def seed_list(text: str) -> list[int]:
    """'0-9' or '0,3,5' -> a list of seeds."""
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=seed_list, default=list(range(10)))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--init", default=TrainConfig().init, choices=INITS)
    p.add_argument("--warmup-steps", type=int, default=TrainConfig().warmup_steps)
    p.add_argument("--kl-warmup-steps", type=int, default=TrainConfig().kl_warmup_steps)
    p.add_argument("--plain", action="store_true", help="the plain forward pass")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--train-size", type=int, default=None, help="a subset (a quick try); default all")
    p.add_argument("--out", default=None, help="also write the report to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = open(args.out, "w") if args.out else None

    def say(line: str) -> None:
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    base = TrainConfig(epochs=args.epochs, init=args.init, warmup_steps=args.warmup_steps,
                       kl_warmup_steps=args.kl_warmup_steps,
                       fast=not args.plain, train_size=args.train_size)
    data = load_data(base)  # the same data for every seed (no subsets: the whole sets)
    x_test, y_test = data[2], data[3]
    say(f"lab CVAE, {args.epochs} epochs per seed, init {args.init}, warm-up "
        f"{args.warmup_steps} steps, KL warm-up {args.kl_warmup_steps} steps, "
        f"{'plain' if args.plain else 'fast'} route, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}")
    results = []
    for seed in args.seeds:
        start = time.perf_counter()
        config = TrainConfig(**{**base.__dict__, "seed": seed})
        model, history = fit(config, device="cpu", progress=False, data=data)
        spread = feature_spread(model, x_test, y_test)
        row = {"seed": seed, "test_nelbo": round(history.epoch_test_nelbo[-1], 2),
               "silent": silent_digits(model, x_test, y_test),
               "min_spread_ratio": round((spread.min() / spread.median()).item(), 3),
               "median_spread": round(spread.median().item(), 3),
               "test_by_epoch": [round(v, 1) for v in history.epoch_test_nelbo],
               "minutes": round((time.perf_counter() - start) / 60, 1)}
        results.append(row)
        say(json.dumps(row))
    values = [r["test_nelbo"] for r in results]
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    silent = {r["seed"]: r["silent"] for r in results if r["silent"]}
    say(f"test negative ELBO over seeds {args.seeds[0]}..{args.seeds[-1]}: mean {statistics.mean(values):.2f}"
        f" ± {sd:.2f} (sample sd), range {min(values):.2f}-{max(values):.2f} nats per image")
    say(f"seeds with a silent digit: {silent or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
