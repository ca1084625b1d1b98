"""Turn `mutmut results --all true` into bench/mutation.md: the score for cardos/ and the
surviving mutants per module, so a change that weakens the card-OS tests shows in review."""

from __future__ import annotations

import re
import sys
from collections import Counter, defaultdict
from datetime import date

LINE = re.compile(r"^\s*(?P<name>\S+?)__mutmut_(?P<n>\d+):\s*(?P<status>[\w ]+?)\s*$")


def module_of(name: str) -> str:
    """`cardos.commands.pin.x__digits` → `cardos/commands/pin.py`; methods carry `xǁClassǁname`."""
    parts = name.split(".")
    mod = [p for p in parts if not p.startswith("x_") and not p.startswith("xǁ")]
    return "/".join(mod) + ".py"


def main(path: str) -> None:
    status: Counter[str] = Counter()
    survivors: dict[str, list[str]] = defaultdict(list)
    per_module: dict[str, Counter[str]] = defaultdict(Counter)
    for line in open(path, encoding="utf-8"):
        m = LINE.match(line)
        if not m:
            continue
        st, mod = m["status"], module_of(m["name"])
        status[st] += 1
        per_module[mod][st] += 1
        if st == "survived":
            survivors[mod].append(f"{m['name'].split('.')[-1]}__mutmut_{m['n']}")
    total = sum(status.values())
    killed = status["killed"] + status["timeout"]
    print("# Mutation check of the card OS\n")
    print(f"{date.today().isoformat()}, mutmut over `cardos/` against the card-OS tests "
          "(`bash bench/mutation.sh`; `[tool.mutmut]` in pyproject.toml says which).\n")
    print(f"**Score: {killed / total:.1%}** ({killed} of {total} mutants killed; "
          f"{status['survived']} survived; {status['timeout']} timed out, counted as killed).\n")
    print("| module | mutants | killed | survived | score |\n|---|---|---|---|---|")
    for mod in sorted(per_module, key=lambda k: -per_module[k]["survived"]):
        c = per_module[mod]
        n = sum(c.values())
        k = c["killed"] + c["timeout"]
        print(f"| `{mod}` | {n} | {k} | {c['survived']} | {k / n:.0%} |")
    print("\nMany survivors change only an error message's text (the card answers the same status word)"
          " or are equivalent (a default that every caller overrides). `mutmut show NAME` shows one.\n")
    print("## Surviving mutants\n")
    for mod in sorted(survivors):
        print(f"- `{mod}`: " + ", ".join(survivors[mod]))


if __name__ == "__main__":
    main(sys.argv[1])
