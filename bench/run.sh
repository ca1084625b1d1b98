#!/usr/bin/env bash
# Run every benchmark (they print their tables); sets up first. PC/SC ones start their own pcscd.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cd bench
for b in inprocess pcsc perso scale stations; do ../.venv/bin/python "$b.py"; echo; done
