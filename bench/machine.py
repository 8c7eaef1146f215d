"""How fast this machine is right now, for reading a benchmark's figures.

The 2-core development VM's speed drifts by a third within an hour (its neighbours),
and a scheduler p99 measured on a slow phase is not comparable with one measured on a
fast phase. Each benchmark prints this first: the best of five runs of a fixed
pure-Python workload, in milliseconds (lower is faster). Compare figures only between
runs whose speed lines agree.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def _workload() -> int:
    total = 0
    table: dict[int, int] = {}
    for i in range(200_000):
        table[i & 1023] = i
        total += table.get((i * 7) & 1023, 0) ^ i
    return total


def speed_ms() -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        _workload()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def describe() -> str:
    return (f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
            f"speed {speed_ms():.1f} ms (bench/machine.py; lower is faster)")  # fmt: skip


if __name__ == "__main__":
    print(describe())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
