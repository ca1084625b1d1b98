#!/usr/bin/env bash
# The test command: set up what is missing, then run the whole suite (PC/SC tests included).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not pcsc"` for the fast tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
