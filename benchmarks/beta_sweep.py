"""Rate against distortion: the lab CVAE trained on BCE + beta * KL for several beta, over seeds.

    python benchmarks/beta_sweep.py [--betas 0.25,0.5,1,2,4] [--seeds 0-1] [--epochs 5]
                                    [--train-size 20000] [--val-size 5000] [--out FILE]

Notebook 07 (section 4) runs one seed of this sweep; one run per beta is an
anecdote, so this script repeats it over seeds and reports mean ± sample sd.
Each model is trained with ``lab_utils.train.fit`` (label-neutral start, fast
route) on ``train_size`` training images, of which ``val_size`` are held out
as a validation split; the rate (KL, nats per image), the distortion (BCE) and
their sum, the negative ELBO, are measured on that validation split with one
sampled z (``lab_utils.evaluation.rate_distortion``). The test set is not used:
nothing here is a test figure. The report is rewritten after every run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

from lab_utils.evaluation import rate_distortion
from lab_utils.train import TrainConfig, fit, load_data, split_validation
from seeds import seed_list  # benchmarks/seeds.py

HERE = os.path.dirname(os.path.abspath(__file__))


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):7.2f} ± {sd:4.2f}"


def summary(rows: list[dict], betas: list[float]) -> list[str]:
    """One line per beta: mean ± sample sd over the seeds run so far."""
    lines = ["beta     rate (KL)        distortion (BCE)   -ELBO            seeds"]
    for beta in betas:
        done = [r for r in rows if r["beta"] == beta]
        if done:
            lines.append(f"{beta:<5g} {mean_sd([r['rate'] for r in done])}  "
                         f"{mean_sd([r['distortion'] for r in done])}  "
                         f"{mean_sd([r['nelbo'] for r in done])}  {len(done)}")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--betas", type=lambda t: [float(b) for b in t.split(",")],
                   default=[0.25, 0.5, 1.0, 2.0, 4.0])
    p.add_argument("--seeds", type=seed_list, default=[0, 1])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--train-size", type=int, default=20_000)
    p.add_argument("--val-size", type=int, default=5_000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="also write the report to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    header = (f"lab CVAE, BCE + beta * KL, {args.epochs} epochs on {args.train_size - args.val_size:,} "
              f"training images, measured on a {args.val_size:,}-image validation split (one sampled z), "
              f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
              f"{platform.processor() or platform.machine()}")
    print(header, flush=True)
    rows: list[dict] = []
    for seed in args.seeds:
        base = TrainConfig(epochs=args.epochs, seed=seed, train_size=args.train_size,
                           val_size=args.val_size)
        x, y, x_test, y_test = load_data(base)
        _, _, x_val, y_val = split_validation(x, y, base.val_size, seed=seed)  # what fit holds out
        for beta in args.betas:
            start = time.perf_counter()
            model, _ = fit(TrainConfig(**{**base.__dict__, "beta": beta}), device="cpu",
                           progress=False, data=(x, y, x_test[:0], y_test[:0]))
            rd = rate_distortion(model, x_val, y_val)
            row = {"beta": beta, "seed": seed, "rate": round(rd["rate"], 2),
                   "distortion": round(rd["distortion"], 2),
                   "nelbo": round(rd["rate"] + rd["distortion"], 2),
                   "minutes": round((time.perf_counter() - start) / 60, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "w") as f:
                    f.write("\n".join([header, *map(json.dumps, rows), *summary(rows, args.betas)]) + "\n")
    print("\n".join(summary(rows, args.betas)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
