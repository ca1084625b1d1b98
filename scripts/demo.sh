#!/usr/bin/env bash
# The main job, end to end on this machine: blank virtual cards served behind a real PC/SC
# reader (pcscd + vsmartcard's vpcd), a batch of cardholders personalized on them through
# PC/SC, one card read back through the reader. Sets up what it needs; stops what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
out=${SSCARD_OUT:-out}
rm -rf "$out" && mkdir -p "$out/feeder"
# Demo only: published demo keys under a passphrase everyone knows. Real key files come from
# `sscard keys new` with a passphrase typed at the prompt.
export SSCARD_KEYS_PASSPHRASE=${SSCARD_KEYS_PASSPHRASE:-sscard-demo}
reader="Virtual PCD 00 00"

serve_pid=""
cleanup() {
    [[ -n $serve_pid ]] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null || true
    bash scripts/pcsc.sh stop >/dev/null || true
}
trap cleanup EXIT

echo "== issuer keys and 20 blank chips in a card feeder"
sscard keys new "$out/keys.json" --demo
for i in $(seq -w 1 20); do sscard image new --blank "$out/feeder/chip$i.json" >/dev/null; done

echo "== pcscd with the vpcd driver, and the feeder served behind it"
bash scripts/pcsc.sh start
sscard serve --hopper "$out/feeder" &
serve_pid=$!
for _ in $(seq 100); do sscard readers 2>/dev/null | grep -q "^$reader: card" && break; sleep 0.2; done
sscard readers

echo "== check the cardholder file, then initialize and personalize each card through PC/SC"
sscard perso check --cardholders examples/cardholders.csv --rejects "$out/rejects.csv" || true
sscard perso run --cardholders examples/cardholders.csv --keys "$out/keys.json" --reader "$reader" --init \
    --journal "$out/journal.sqlite" --audit "$out/audit.jsonl" --card-timeout 20
sscard audit verify "$out/audit.jsonl" --journal "$out/journal.sqlite" --keys "$out/keys.json"
kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true; serve_pid=""

first=$(ls "$out"/feeder/*.json | head -1)
echo "== the first card, served again and read through the reader as a terminal would"
sscard serve --image "$first" &
serve_pid=$!
for _ in $(seq 100); do sscard readers 2>/dev/null | grep -q "^$reader: card" && break; sleep 0.2; done
sscard read --reader "$reader"
opensc-tool -r "$reader" -s 00A404000F7378312E73682EC9E7BBE1B1A3D5CF -s 00B2072C00
