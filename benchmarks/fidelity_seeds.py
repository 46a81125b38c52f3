"""Does the start move label fidelity, or does one run? Fidelity over seeds, per start.

    python benchmarks/fidelity_seeds.py [--inits open-relus,label-neutral] [--seeds 0-4]
                                        [--epochs 20] [--classifier PATH] [--threads 1]

The shipped ``lab`` models before and after the open-relus start are one
training run each, so a difference of their label fidelity (94.6% against
95.6%, ``results/fidelity_before_after.txt``) cannot say whether the start
caused it. This trains the lab model with ``lab_utils.train.fit`` (the command
line's recipe, ``--epochs`` epochs) from each seed and each start, and reports
per run the test negative ELBO and the label fidelity (``evaluation.label_fidelity``:
1,000 prior samples per digit at temperature 1, read by the shipped classifier
or ``--classifier``), then per start the mean ± sample sd over the seeds, and the
difference of the two starts' means with its standard error. Seeds are only
reported, never selected.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch

from lab_utils.classifier import load_classifier
from lab_utils.evaluation import label_fidelity
from lab_utils.train import INITS, TrainConfig, fit, load_data

from seeds import seed_list  # benchmarks/seeds.py: the same '0-9' / '0,3,5' syntax


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample sd (nan for one value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inits", default="open-relus,label-neutral",
                   help=f"comma-separated starts, from {INITS}")
    p.add_argument("--seeds", type=seed_list, default=list(range(5)))
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--n-per-label", type=int, default=1000)
    p.add_argument("--classifier", default=None, help="a classifier checkpoint (default: the shipped one)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    inits = args.inits.split(",")
    for init in inits:
        if init not in INITS:
            p.error(f"--inits: {init!r} is not one of {INITS}")
    if args.threads:
        torch.set_num_threads(args.threads)
    classifier = load_classifier() if args.classifier is None else load_classifier(path=args.classifier)
    base = TrainConfig(epochs=args.epochs)
    data = load_data(base)
    print(f"lab CVAE, {args.epochs} epochs per run, starts {inits}, seeds {args.seeds}, "
          f"fidelity from {args.n_per_label} samples per digit, classifier "
          f"{args.classifier or 'shipped'}; {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, {platform.processor() or platform.machine()}", flush=True)
    results: dict[str, list[dict]] = {init: [] for init in inits}
    for seed in args.seeds:
        for init in inits:  # alternating, so that a change of load hits both starts alike
            start = time.perf_counter()
            config = TrainConfig(**{**base.__dict__, "seed": seed, "init": init})
            model, history = fit(config, device="cpu", progress=False, data=data)
            fid = label_fidelity(model, classifier, n_per_label=args.n_per_label)
            row = {"init": init, "seed": seed, "test_nelbo": round(history.epoch_test_nelbo[-1], 2),
                   "fidelity": round(fid["overall"], 4),
                   "per_label": [round(v, 3) for v in fid["per_label"]],
                   "minutes": round((time.perf_counter() - start) / 60, 1)}
            results[init].append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for init, rows in results.items():
        fid_m, fid_sd = mean_sd([r["fidelity"] for r in rows])
        nelbo_m, nelbo_sd = mean_sd([r["test_nelbo"] for r in rows])
        summary[init] = (fid_m, fid_sd, len(rows))
        print(f"{init}: label fidelity {100 * fid_m:.2f} ± {100 * fid_sd:.2f}% (mean ± sample sd, "
              f"{len(rows)} seeds), test negative ELBO {nelbo_m:.2f} ± {nelbo_sd:.2f} nats per image")
    if len(inits) == 2:
        (m1, s1, n1), (m2, s2, n2) = summary[inits[0]], summary[inits[1]]
        se = (s1 ** 2 / n1 + s2 ** 2 / n2) ** 0.5
        print(f"{inits[0]} minus {inits[1]}: {100 * (m1 - m2):+.2f} points of fidelity, standard error "
              f"of the difference of means {100 * se:.2f} (from the seed-to-seed sds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
