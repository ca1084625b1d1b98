#!/usr/bin/env bash
# Start or stop the PC/SC parts without systemd: pcscd in the foreground, in the background,
# with vsmartcard's vpcd driver (its reader.conf.d entry gives "Virtual PCD 00 00" on TCP 35963
# and "Virtual PCD 00 01" on 35964). Stops only the pcscd it started, by PID.
#   scripts/pcsc.sh start     start pcscd, wait until it answers (timeout 15 s)
#   scripts/pcsc.sh stop      stop the pcscd this script started
#   scripts/pcsc.sh status
set -euo pipefail
cd "$(dirname "$0")/.."
state=${SSCARD_PCSC_STATE:-${TMPDIR:-/tmp}/sscard-pcscd}
mkdir -p "$state"
pidfile=$state/pcscd.pid
logfile=$state/pcscd.log

need() { command -v "$1" >/dev/null 2>&1 || { echo "pcsc.sh: $1 is missing; run scripts/setup.sh" >&2; exit 1; }; }

ours_running() { [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case ${1:-} in
start)
    need pcscd
    [[ -f /etc/reader.conf.d/vpcd ]] || { echo "pcsc.sh: vpcd driver config missing (apt-get install vsmartcard-vpcd)" >&2; exit 1; }
    if ours_running; then echo "pcscd already running (pid $(cat "$pidfile"))"; exit 0; fi
    if other=$(pgrep -x pcscd); then
        echo "pcsc.sh: a pcscd this script did not start is running (pid $other); stop it first" >&2; exit 1
    fi
    # A stale socket from a killed pcscd makes clients wait on nothing.
    rm -f /run/pcscd/pcscd.comm /run/pcscd/pcscd.pid 2>/dev/null || true
    pcscd --foreground >"$logfile" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 150); do
        # vpcd listens on 35963 (0x8C7B) once pcscd has loaded it; state 0A is LISTEN.
        if [[ -S /run/pcscd/pcscd.comm ]] && grep -qE '^ *[0-9]+: [0-9A-F]+:8C7B [0-9A-F]+:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
            echo "pcscd started (pid $(cat "$pidfile")), vpcd listening on 35963/35964"; exit 0
        fi
        kill -0 "$(cat "$pidfile")" 2>/dev/null || { echo "pcsc.sh: pcscd died:" >&2; cat "$logfile" >&2; exit 1; }
        sleep 0.1
    done
    echo "pcsc.sh: pcscd did not get ready in 15 s; log:" >&2; cat "$logfile" >&2; exit 1 ;;
stop)
    if ours_running; then
        pid=$(cat "$pidfile"); kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        echo "pcscd (pid $pid) stopped"
    fi
    rm -f "$pidfile" ;;
status)
    if ours_running; then echo "running (pid $(cat "$pidfile"))"; else echo "not running"; exit 1; fi ;;
*)
    echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
