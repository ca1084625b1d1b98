"""Benchmark figures as data: each script records what it prints, and saves it as JSON under
bench/results/ with the machine, the versions and the date, so `compare.py` can set two runs side
by side."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
from importlib import metadata
from pathlib import Path

from common import ROOT, machine

RESULTS = ROOT / "bench" / "results"
PACKAGES = ("cryptography", "construct", "pyscard", "click")


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    for tool, args in (("pcscd", ["pcscd", "--version"]),):
        try:
            out = subprocess.run(args, capture_output=True, text=True, timeout=5).stdout
            found[tool] = next((w for w in out.split() if w[:1].isdigit()), out.strip()[:40])
        except (OSError, subprocess.TimeoutExpired):
            pass
    return found


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


class Results:
    """The figures of one benchmark script: printed as they come, saved as one JSON document."""

    def __init__(self, name: str, title: str) -> None:
        self.name = name
        self.figures: dict[str, dict] = {}
        print(f"# {title} ({machine()})")

    def add(self, key: str, label: str, values: list[float] | float, unit: str, *,
            higher_is_better: bool = True, target: str | None = None, met: bool | None = None) -> float:
        """Record one figure (a list of samples or a single value) and print its line; returns the median."""
        samples = [float(v) for v in (values if isinstance(values, list) else [values])]
        med = statistics.median(samples)
        fig = {"label": label, "unit": unit, "median": med, "min": min(samples), "max": max(samples),
               "samples": len(samples), "higher_is_better": higher_is_better}
        if target is not None:
            fig |= {"target": target, "met": met}
        self.figures[key] = fig
        spread = f" (min {fig['min']:,.2f}, max {fig['max']:,.2f})" if len(samples) > 1 else ""
        goal = f"   target {target}: {'met' if met else 'NOT MET'}" if target is not None else ""
        print(f"{label:48} {med:12,.2f} {unit}{spread}{goal}")
        return med

    def document(self) -> dict:
        return {"bench": self.name, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "machine": machine(), "cores": os.cpu_count(), "commit": _commit(), "versions": _versions(),
                "figures": self.figures}

    def save(self, folder: Path = RESULTS) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.document(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        print(f"(figures saved to {path.relative_to(ROOT)})")
        return path
