"""Does the start move label fidelity, or does one run? Fidelity over seeds, per start.

    python benchmarks/fidelity_seeds.py [--inits open-relus,label-neutral] [--seeds 0-4]
                                        [--epochs 20] [--classifier PATH ...] [--threads 1]
                                        [--save-dir DIR]
    python benchmarks/fidelity_seeds.py --summarise RESULTS [RESULTS ...]

The shipped ``lab`` models before and after the open-relus start are one
training run each, so a difference of their label fidelity (94.6% against
95.6%, ``results/fidelity_before_after.txt``) cannot say whether the start
caused it. This trains the lab model with ``lab_utils.train.fit`` (the command
line's recipe, ``--epochs`` epochs) from each seed and each start, and reports
per run the test negative ELBO and the label fidelity (``evaluation.label_fidelity``:
1,000 prior samples per digit at temperature 1, read by the shipped classifier
or by each ``--classifier`` given, the same samples for every classifier), then
per start and classifier the mean ± sample sd over the seeds, and the difference
of the two starts' means with its standard error. ``--save-dir`` keeps each
run's model (saved atomically, with its training config) to read again later.
Seeds are only reported, never selected.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
import os
import platform
import statistics
import sys
import time

import torch

from lab_utils.checkpoints import save_checkpoint
from lab_utils.classifier import load_classifier
from lab_utils.evaluation import label_fidelity
from lab_utils.train import INITS, TrainConfig, fit, load_data

from seeds import seed_list  # benchmarks/seeds.py: the same '0-9' / '0,3,5' syntax


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample sd (nan for one value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def summarise(results: dict[str, list[dict]], names: list[str]) -> None:
    """Print per start the mean ± sample sd of test -ELBO and of each classifier's
    fidelity, and for two starts the difference of their means with its standard error."""
    for init, rows in results.items():
        nelbo_m, nelbo_sd = mean_sd([r["test_nelbo"] for r in rows])
        print(f"{init}: test negative ELBO {nelbo_m:.2f} ± {nelbo_sd:.2f} nats per image "
              f"(mean ± sample sd, {len(rows)} seeds)")
    for name in names:
        key = "fidelity" if name == names[0] else f"fidelity {name}"
        summary = {}
        for init, rows in results.items():
            rows = [r for r in rows if key in r]  # files may differ in their classifiers
            if not rows:
                continue
            fid_m, fid_sd = mean_sd([r[key] for r in rows])
            summary[init] = (fid_m, fid_sd, len(rows))
            print(f"{init}, classifier {name}: label fidelity {100 * fid_m:.2f} ± {100 * fid_sd:.2f}% "
                  f"(mean ± sample sd, {len(rows)} seeds)")
        if len(summary) == 2:
            (m1, s1, n1), (m2, s2, n2) = summary.values()
            se = (s1 ** 2 / n1 + s2 ** 2 / n2) ** 0.5
            first, second = summary
            print(f"{first} minus {second}, classifier {name}: {100 * (m1 - m2):+.2f} points of "
                  f"fidelity, standard error of the difference of means {100 * se:.2f} "
                  f"(from the seed-to-seed sds)")


def summarise_files(paths: list[str]) -> int:
    """The summary of rows printed earlier (one JSON object per line) in ``paths``."""
    results: dict[str, list[dict]] = {}
    names: list[str] = []
    epochs: set = set()
    for path in paths:
        with open(path) as f:
            for line in f:
                if "classifier(s) " in line and not names:  # the header names them, first one first
                    names = line.split("classifier(s) ", 1)[1].split(";", 1)[0].split(", ")
                if not line.startswith("{"):
                    continue
                row = json.loads(line)
                results.setdefault(row["init"], []).append(row)
                epochs.add(row.get("epochs", "unrecorded"))
                names = names or ["shipped" if k == "fidelity" else k.split(" ", 1)[1]
                                  for k in row if k.startswith("fidelity")]
    if not results:
        print(f"no result rows in {paths}: give the files a run of this script printed")
        return 2
    if len(epochs) > 1:
        print(f"the files mix runs of different lengths ({sorted(map(str, epochs))} epochs): "
              f"give files of one --epochs")
        return 2
    summarise(results, names)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inits", default="open-relus,label-neutral",
                   help=f"comma-separated starts, from {INITS}")
    p.add_argument("--seeds", type=seed_list, default=list(range(5)))
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--n-per-label", type=int, default=1000)
    p.add_argument("--classifier", action="append", default=None, metavar="PATH",
                   help="a classifier checkpoint; repeat it to read the same samples with several "
                        "(default: the shipped one)")
    p.add_argument("--summarise", nargs="+", default=None, metavar="RESULTS",
                   help="train nothing: read the JSON rows of earlier runs' output files "
                        "(e.g. one process per start) and print their summary")
    p.add_argument("--save-dir", default=None,
                   help="save each run's model here as <init>-seed<seed>.pt")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if args.summarise:
        return summarise_files(args.summarise)
    inits = args.inits.split(",")
    for init in inits:
        if init not in INITS:
            p.error(f"--inits: {init!r} is not one of {INITS}")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.classifier or ["shipped"]
    classifiers = {}
    for name in names:
        if name != "shipped" and not os.path.isfile(name):
            p.error(f"--classifier: no file {name!r}; train one with python -m lab_utils.classifier "
                    f"(--no-augment --out {name} for one without augmentation)")
        classifiers[name] = load_classifier() if name == "shipped" else load_classifier(path=name)
    base = TrainConfig(epochs=args.epochs)
    data = load_data(base)
    print(f"lab CVAE, {args.epochs} epochs per run, starts {inits}, seeds {args.seeds}, "
          f"fidelity from {args.n_per_label} samples per digit, classifier(s) "
          f"{', '.join(names)}; {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, {platform.processor() or platform.machine()}", flush=True)
    results: dict[str, list[dict]] = {init: [] for init in inits}
    for seed in args.seeds:
        for init in inits:  # alternating, so that a change of load hits both starts alike
            start = time.perf_counter()
            config = TrainConfig(**{**base.__dict__, "seed": seed, "init": init})
            model, history = fit(config, device="cpu", progress=False, data=data)
            minutes = (time.perf_counter() - start) / 60
            if args.save_dir:
                save_checkpoint(os.path.join(args.save_dir, f"{init}-seed{seed}.pt"), model,
                                train_config=asdict(config), history=history.to_dict(),
                                metrics={"test_nelbo": history.epoch_test_nelbo[-1]},
                                epochs=config.epochs)
            row = {"init": init, "seed": seed, "epochs": config.epochs, "test_nelbo": round(history.epoch_test_nelbo[-1], 2)}
            for name, classifier in classifiers.items():
                fid = label_fidelity(model, classifier, n_per_label=args.n_per_label)
                key = "" if name == names[0] else f" {name}"  # the first classifier keeps the plain keys
                row["fidelity" + key] = round(fid["overall"], 4)
                row["per_label" + key] = [round(v, 3) for v in fid["per_label"]]
            row["minutes"] = round(minutes, 1)
            results[init].append(row)
            print(json.dumps(row), flush=True)
    summarise(results, names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
