"""What the timing benchmarks say about the machine they ran on.

On a shared machine wall times include waiting for a core; the benchmarks
print the load at the start and, when it exceeds the cores, a note telling
the reader to compare the CPU-time column instead.
"""
from __future__ import annotations

import os


def load_average() -> float:
    """The 1-minute load average (NaN where the OS does not report one)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def contention_note(load: float) -> None:
    """Print a warning when other jobs shared the cores during the measurement."""
    if load > (os.cpu_count() or 1):
        print(f"note: load average {load:.1f} > {os.cpu_count()} CPUs: other jobs share the "
              f"cores; wall times include waiting for them (compare the cpu column)")
