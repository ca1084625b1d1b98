#!/usr/bin/env bash
# The main job, end to end on this machine: set up, make a card, talk to it.
# As the reader bridge and personalization land, this grows into: serve a virtual card behind
# vpcd, personalize a batch on it through PC/SC, read one back.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
out=${SSCARD_OUT:-out}
mkdir -p "$out"

echo "== a factory-blank card and a demo card, each built by sending the card its own commands"
sscard image new --force --blank "$out/blank.json"
sscard image new --force "$out/demo.json"
sscard image info "$out/demo.json"

echo "== select the demo application, read a record by number and by tag, a wrong then the right PIN, read the PIN-gated file"
sscard apdu --image "$out/demo.json" \
    00A404000B5353434152442E44454D4F 00B2012C00 00B2022800 0020000003111111 0020000003123456 00B0810010
