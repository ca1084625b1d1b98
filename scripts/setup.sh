#!/usr/bin/env bash
# Installs everything sscard needs on a fresh Debian machine: PC/SC parts and PostgreSQL (for the
# multi-station journal's tests) from Debian,
# a virtualenv in .venv with sscard and its test tools. Safe to run again; quiet when done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(pcscd vsmartcard-vpcd pcsc-tools opensc swig libpcsclite-dev gcc python3-dev python3-venv
              python3-virtualsmartcard softhsm2 postgresql)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.sscard-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
    echo "setup: installing sscard into .venv (log: .venv/install.log)"
    if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e ".[test,bench,hsm,postgres]"; } \
            > .venv/install.log 2>&1; then
        tail -30 .venv/install.log
        echo "setup: pip install failed; the whole log is .venv/install.log" >&2
        exit 1
    fi
    touch "$stamp"
fi

# PyPI emv (emvtool, the EMV tests' outside reader) pins click 7 and pyscard 2.0.0, which conflict
# with ours (and it fails on newer pyscard), so it lives in a venv of its own inside .venv.
if [[ ! -x .venv/emvtool/bin/emvtool ]]; then
    echo "setup: installing emvtool into .venv/emvtool"
    "$PY" -m venv .venv/emvtool
    .venv/emvtool/bin/pip install -q "emv==1.0.14" > .venv/emvtool-install.log 2>&1 \
        || { tail -30 .venv/emvtool-install.log; echo "setup: emvtool install failed" >&2; exit 1; }
fi
