#!/usr/bin/env bash
# Run every benchmark (each prints its table and saves its figures under bench/results/), then
# compare the new figures with the ones the repository held before. Sets up first; the PC/SC
# one starts its own pcscd. Extra arguments name the benchmarks to run (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
before=$(mktemp -d)
trap 'rm -rf "$before"' EXIT
[[ -d bench/results ]] && cp bench/results/*.json "$before"/ 2>/dev/null || true
cd bench
benches=("$@")
((${#benches[@]})) || benches=(inprocess pcsc perso scale hsm stations)
for b in "${benches[@]}"; do ../.venv/bin/python "$b.py"; echo; done
if compgen -G "$before/*.json" >/dev/null; then
    echo "# against the figures held before this run (a regression is > 10 % worse)"
    ../.venv/bin/python compare.py "$before" results || true
fi
