"""Timing for the benchmarks: alternate contenders, several rounds, median with min and max."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def rate(fn: Callable[[], int], seconds: float = 0.5) -> float:
    """Operations per second of fn (which returns how many operations it did), over about `seconds`."""
    done, t0 = 0, time.perf_counter()
    while True:
        done += fn()
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return done / elapsed


def alternate(contenders: dict[str, Callable[[], int]], rounds: int = 7, seconds: float = 0.5) -> dict[str, list[float]]:
    """Run each contender in turn, round after round, so drift hits all of them alike."""
    out: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():   # warm-up
        rate(fn, 0.1)
    for _ in range(rounds):
        for name, fn in contenders.items():
            out[name].append(rate(fn, seconds))
    return out


def interleave(contenders: dict[str, Callable[[], int]], blocks: int = 10,
               seconds: float = 1.0) -> dict[str, list[float]]:
    """Run the contenders call by call in turn, so a stall of the machine hits each of them alike;
    each block of about `seconds` gives each contender one rate (its operations over its own time)."""
    clock = time.perf_counter
    out: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():   # warm-up
        rate(fn, 0.1)
    for _ in range(blocks):
        done = dict.fromkeys(contenders, 0)
        spent = dict.fromkeys(contenders, 0.0)
        end = clock() + seconds
        while clock() < end:
            for name, fn in contenders.items():
                t0 = clock()
                done[name] += fn()
                spent[name] += clock() - t0
        for name in contenders:
            out[name].append(done[name] / spent[name])
    return out


def stats(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def fmt(values: list[float], unit: str) -> str:
    med, lo, hi = stats(values)
    return f"{med:>10.1f} {unit} (min {lo:.1f}, max {hi:.1f})"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"
