"""Does the label buy nats? The lab CVAE against the same network without labels, over seeds.

    python benchmarks/lab_vs_vae.py [--seeds 0-2] [--epochs 10] [--init open-relus]
                                    [--threads 1] [--lab SEEDS_REPORT] [--out FILE]

Notebook 07 (section 3) compares the lab model with ``lab-vae`` (the same
encoder and decoder, no label channels). One run of each is an anecdote: the
lab model's test negative ELBO after 10 epochs varies by 1-2 nats (sample sd)
over seeds 0-9 (``benchmarks/results/seeds*.txt``). This script trains
``lab-vae`` with the same recipe as ``seeds.py`` (``lab_utils.train.fit`` with
the command line's defaults: 10 epochs, fast route, the start ``--init``) for
each seed, and reports the test negative ELBO on the whole test set (nats per
image, one sampled z, as training reports it), then mean ± sample sd over the
seeds beside the lab model's figures read from ``seeds.py``'s report for the
same start (``seeds_open_relus.txt`` for open-relus, ``seeds.txt`` for
label-neutral, or ``--lab``); a report from another start or length is refused,
so the two are always compared like for like. The report is
rewritten after every seed (with the summary so far), so a run cut short still
leaves a usable file. Seeds are only reported, never selected.
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

from lab_utils.train import INITS, TrainConfig, fit, load_data
from seeds import seed_list  # benchmarks/seeds.py

HERE = os.path.dirname(os.path.abspath(__file__))


LAB_REPORTS = {"open-relus": "seeds_open_relus.txt", "label-neutral": "seeds.txt"}


def lab_figures(path: str, init: str, epochs: int) -> list[float]:
    """The lab model's per-seed test negative ELBO from seeds.py's report (why: the
    same recipe and epochs, so the two are compared like for like). The report's
    header must name the same start and number of epochs; otherwise this raises."""
    values = []
    with open(path) as f:
        header = f.readline()
        wanted = (f"{epochs} epochs per seed", f"init {init},")
        if not all(w in header for w in wanted):
            raise SystemExit(
                f"{path} is not a seeds.py report of {epochs} epochs from the {init} start "
                f"(its header: {header.strip()!r}); run python benchmarks/seeds.py --init {init} "
                f"--epochs {epochs} --threads 1 and pass its report with --lab")
        for line in f:
            if line.startswith("{"):
                values.append(json.loads(line)["test_nelbo"])
    return values


def summary(name: str, values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return (f"{name}: test negative ELBO over {len(values)} seeds: mean {statistics.mean(values):.2f}"
            f" ± {sd:.2f} (sample sd), range {min(values):.2f}-{max(values):.2f} nats per image")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=seed_list, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--init", default=TrainConfig.init, choices=INITS,
                   help="the start of every run (default: training's default)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the seeds reports used 1)")
    p.add_argument("--lab", default=None,
                   help="seeds.py's report for the lab model (default: the results file of --init)")
    p.add_argument("--out", default=None, help="also write the report to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.lab is None:
        if args.init not in LAB_REPORTS:
            p.error(f"no lab report is recorded for --init {args.init}: run benchmarks/seeds.py "
                    f"--init {args.init} and pass its report with --lab")
        args.lab = os.path.join(HERE, "results", LAB_REPORTS[args.init])
    base = TrainConfig(model="lab-vae", epochs=args.epochs, init=args.init)
    data = load_data(base)  # the whole training and test sets, the same for every seed
    header = (f"lab-vae (the lab network without labels), {args.epochs} epochs per seed, init "
              f"{base.init}, warm-up {base.warmup_steps} steps, {'fast' if base.fast else 'plain'} "
              f"route, {torch.get_num_threads()} threads, torch {torch.__version__}, "
              f"{platform.processor() or platform.machine()}")
    print(header, flush=True)
    rows = []
    lab = lab_figures(args.lab, base.init, args.epochs)
    for seed in args.seeds:
        start = time.perf_counter()
        config = TrainConfig(**{**base.__dict__, "seed": seed})
        _, history = fit(config, device="cpu", progress=False, data=data)
        row = {"seed": seed, "test_nelbo": round(history.epoch_test_nelbo[-1], 2),
               "minutes": round((time.perf_counter() - start) / 60, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        vae = [r["test_nelbo"] for r in rows]
        lines = [header, *map(json.dumps, rows), summary("lab-vae", vae),
                 summary(f"lab ({os.path.relpath(args.lab, os.path.dirname(HERE))})", lab)]
        if len(vae) > 1:
            diff = statistics.mean(vae) - statistics.mean(lab)
            lines.append(f"lab-vae minus lab: {diff:+.2f} nats per image (difference of the means)")
        if args.out:
            with open(args.out, "w") as f:
                f.write("\n".join(lines) + "\n")
    print("\n".join(lines[-3:]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
