"""How fast does the slider explorer answer? Milliseconds per update, measured.

Drives :class:`lab_utils.widgets.LatentExplorer` the way a student does, without
a browser: alternately pick the next digit and move one noise slider, each a
single update through the real path (slider value -> observer -> decode -> PNG
-> ``ipywidgets.Image.value``, serialized for the front end). Prints the median
and 95th percentile per update, overall and per kind of change, as wall time
and as this thread's CPU time: on a shared machine wall time includes waiting
for a core, CPU time does not, so the gap between them shows the contention.

Targets (issue 4, on the 2-core CPU): median <= 15 ms, p95 <= 40 ms (wall).

    python benchmarks/widget_latency.py                 # shipped lab model, CPU
    python benchmarks/widget_latency.py --updates 1000 --threads 1
    python benchmarks/widget_latency.py --device cuda   # decode on a GPU
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from lab_utils import load_pretrained
from lab_utils.runtime import get_device
from lab_utils.widgets import LatentExplorer

from machine import contention_note, load_average  # benchmarks/machine.py

TARGET_MEDIAN_MS = 15.0
TARGET_P95_MS = 40.0


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the closest ranks."""
    return float(np.percentile(values, q))


def drive(explorer: LatentExplorer, n: int, seed: int = 0):
    """Make ``n`` single updates, alternating a new digit and one moved noise slider.

    Returns {kind: [(wall_ms, cpu_ms), ...]} for kind in ("digit", "noise").
    """
    g = torch.Generator().manual_seed(seed)
    times: dict[str, list[tuple[float, float]]] = {"digit": [], "noise": []}
    d = explorer.latent_dim
    for i in range(n):
        if i % 2 == 0:
            kind, target = "digit", explorer.digit_slider
            value = (explorer.digit + 1) % 10
        else:
            kind, target = "noise", explorer.noise_sliders[(i // 2) % d]
            value = round(float(torch.empty(1).uniform_(-3, 3, generator=g)), 2)
            if value == target.value:  # an unchanged value would not update at all
                value = -value if value else 0.5
        before = explorer.render_count
        t0, c0 = time.perf_counter(), time.thread_time()
        target.value = value
        c1, t1 = time.thread_time(), time.perf_counter()
        if explorer.render_count != before + 1:
            raise RuntimeError(f"update {i} rendered {explorer.render_count - before} times, not once")
        times[kind].append(((t1 - t0) * 1e3, (c1 - c0) * 1e3))
    return times


def summary(label: str, samples: list[tuple[float, float]]) -> tuple[float, float]:
    wall = [w for w, _ in samples]
    cpu = [c for _, c in samples]
    med, p95 = statistics.median(wall), percentile(wall, 95)
    print(f"{label:<8} n={len(samples):4d}   wall median {med:6.2f} ms   p95 {p95:6.2f} ms"
          f"   |   cpu median {statistics.median(cpu):6.2f} ms   p95 {percentile(cpu, 95):6.2f} ms")
    return med, p95


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=400, help="timed updates (>= 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed updates first")
    parser.add_argument("--model", default="lab", help="shipped model name")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: PyTorch's own choice)")
    args = parser.parse_args(argv)
    if args.updates < 200:
        parser.error("--updates must be at least 200 for a meaningful p95")
    if args.threads:
        torch.set_num_threads(args.threads)

    device = get_device(args.device)
    explorer = LatentExplorer(load_pretrained(args.model, device=device), digit=0, seed=0)
    drive(explorer, args.warmup, seed=1)
    load = load_average()
    times = drive(explorer, args.updates, seed=0)

    print(f"widget latency: model {args.model!r} on {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs, "
          f"load average {load:.1f} at start")
    summary("digit", times["digit"])
    summary("noise", times["noise"])
    med, p95 = summary("all", times["digit"] + times["noise"])
    ok = med <= TARGET_MEDIAN_MS and p95 <= TARGET_P95_MS
    print(f"target: median <= {TARGET_MEDIAN_MS:.0f} ms, p95 <= {TARGET_P95_MS:.0f} ms (wall): "
          f"{'met' if ok else 'NOT met'}")
    contention_note(load)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
