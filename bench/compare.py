"""Compare two benchmark runs figure by figure and flag regressions above a threshold.

    python bench/compare.py OLD NEW [--threshold 10]

OLD and NEW are result files (bench/results/NAME.json) or folders of them. The exit code is 1
when any figure got worse by more than the threshold, so a change that slows the card shows in
review; 2 when the inputs cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load(path: Path) -> dict[str, dict]:
    """Every figure of a result file or folder, keyed `bench/figure`."""
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    out: dict[str, dict] = {}
    for f in files:
        doc = json.loads(f.read_text(encoding="utf-8"))
        for key, fig in doc["figures"].items():
            out[f"{doc['bench']}/{key}"] = fig
    return out


def change(old: dict, new: dict) -> float:
    """Relative change in the direction of better: positive is better, negative is worse."""
    if old["median"] == 0:
        return 0.0
    delta = (new["median"] - old["median"]) / abs(old["median"])
    return delta if old.get("higher_is_better", True) else -delta


def compare(old: dict[str, dict], new: dict[str, dict], threshold: float) -> tuple[list[str], int]:
    lines, worse = [], 0
    for key in sorted(old.keys() | new.keys()):
        if key not in new:
            lines.append(f"{key:56} only in OLD")
            continue
        if key not in old:
            lines.append(f"{key:56} only in NEW ({new[key]['median']:,.2f} {new[key]['unit']})")
            continue
        c = change(old[key], new[key])
        flag = ""
        if c < -threshold:
            flag, worse = "  REGRESSION", worse + 1
        lines.append(f"{key:56} {old[key]['median']:>12,.2f} -> {new[key]['median']:>12,.2f} "
                     f"{new[key]['unit']:8} {c * 100:+7.1f} %{flag}")
    return lines, worse


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--threshold", type=float, default=10.0, help="percent worse that counts as a regression")
    args = ap.parse_args(argv)
    try:
        old, new = load(args.old), load(args.new)
    except (OSError, ValueError, KeyError) as e:
        print(f"compare: cannot read the results: {e}", file=sys.stderr)
        return 2
    lines, worse = compare(old, new, args.threshold / 100)
    print("\n".join(lines))
    print(f"{worse} regression(s) above {args.threshold:g} %" if worse else f"no regression above {args.threshold:g} %")
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
