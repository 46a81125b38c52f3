"""Measure every shipped model and print the comparison table of the README.

    CVAE_LAB_DATA=/path/to/data python benchmarks/evaluate.py

For each checkpoint in lab_utils/pretrained/ (lab, wide, lab-vae, fashion):
epochs and training time (stored in the checkpoint by lab_utils.train), test
negative ELBO on the whole test set, IWAE estimates for k = 1, 10, 100 on the
first --iwae-size test images, and label fidelity (the shipped classifier
reading --n-per-label prior samples of each digit, temperature 1). Then the
command that retrains each model. Takes a few minutes on a laptop CPU.
"""
from __future__ import annotations

import argparse
import time

import torch

from lab_utils.checkpoints import available_pretrained, load_checkpoint, load_pretrained
from lab_utils.classifier import accuracy, load_classifier
from lab_utils.data import load_mnist
from lab_utils.evaluation import measure, pixel_entropy, results_table, train_command

ORDER = ("lab", "lab-vae", "wide", "fashion")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iwae-size", type=int, default=1000, help="test images for the IWAE estimates")
    p.add_argument("--ks", default="1,10,100", help="IWAE sample counts")
    # 1,000 per digit: the overall figure has a standard error of about 0.2 points.
    p.add_argument("--n-per-label", type=int, default=1000, help="prior samples per digit")
    p.add_argument("--models", default=None, help="comma-separated names (default: all shipped)")
    p.add_argument("--classifier", default=None,
                   help="the classifier checkpoint that reads label fidelity (default: the shipped one), "
                        "e.g. one from `python -m lab_utils.classifier --no-augment --out PATH`")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=PATH",
                   help="also measure this checkpoint under this name (repeatable)")
    args = p.parse_args(argv)
    ks = tuple(int(k) for k in args.ks.split(","))
    names = args.models.split(",") if args.models else [
        n for n in ORDER if n in available_pretrained()
    ] + [n for n in available_pretrained() if n not in ORDER]

    start = time.perf_counter()
    classifier = load_classifier(path=args.classifier) if args.classifier else load_classifier()
    extra = dict(item.split("=", 1) for item in args.extra)
    names += list(extra)
    tests = {"mnist": load_mnist("test")}  # no MNIST: its own message says where to put it
    try:
        tests["fashion-mnist"] = load_mnist("test", dataset="fashion-mnist", download=False)
    except FileNotFoundError:  # optional: the Fashion-MNIST model is skipped below
        print("Fashion-MNIST not found: the fashion model is skipped")
    x, y = tests["mnist"]
    augment = classifier.checkpoint_info.get("train_config", {}).get("augment")
    print(f"classifier {args.classifier or '(shipped)'}, trained with augmentation: {augment}")
    print(f"classifier: test accuracy {accuracy(classifier, x, y):.4f} on the "
          f"{x.shape[0]:,} MNIST test digits")
    for dataset, (xt, _) in tests.items():
        print(f"{dataset}: entropy of the grey pixels (floor of every figure) "
              f"{pixel_entropy(xt):.1f} nats/image")

    rows, commands = {}, {}
    for name in names:
        t0 = time.perf_counter()
        torch.manual_seed(0)
        model = load_checkpoint(extra[name])[0] if name in extra else load_pretrained(name)
        dataset = model.checkpoint_info["train_config"].get("dataset", "mnist")
        if dataset not in tests:
            print(f"skipping {name}: no {dataset} test set found")
            continue
        xt, yt = tests[dataset]
        rows[name] = measure(model, xt, yt, classifier if dataset == "mnist" else None,
                             ks=ks, iwae_size=args.iwae_size, n_per_label=args.n_per_label)
        commands[name] = train_command(model.checkpoint_info)
        print(f"measured {name} in {time.perf_counter() - t0:.0f} s", flush=True)

    print()
    print(results_table(rows))
    print()
    print("Label fidelity per requested digit:")
    print()
    print(results_table({n: r for n, r in rows.items() if r["fidelity"]}, per_label=True))
    print()
    print("Reproduce (training time is wall-clock on the machine that trained it):")
    for name, cmd in commands.items():
        print(f"  {name}: {cmd} --out checkpoints/{name}.pt")
    print(f"\n(all measured in {time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
