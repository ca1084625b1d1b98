"""Real PC/SC for tests: pcscd with the vpcd driver, and `sscard serve` processes behind it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
READERS = ("Virtual PCD 00 00", "Virtual PCD 00 01")


def start_pcscd() -> None:
    """Start our own pcscd; a failure fails the run loudly (CI never skips these tests)."""
    r = subprocess.run(["bash", str(ROOT / "scripts/pcsc.sh"), "start"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        pytest.fail(f"pcscd could not start: {r.stderr.strip() or r.stdout.strip()}", pytrace=False)


def stop_pcscd() -> None:
    subprocess.run(["bash", str(ROOT / "scripts/pcsc.sh"), "stop"], capture_output=True, timeout=60)


def wait_for_card(reader: str, atr: bytes | None, timeout: float = 20.0, present: bool = True) -> None:
    """Poll pcscd until the reader shows (or no longer shows) a card with that ATR."""
    from reader_bridge.pcsc import list_readers
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = {r.name: r for r in list_readers()}
        r = seen.get(reader)
        if r is not None and r.present == present and (not present or atr is None or r.atr == atr):
            return
        time.sleep(0.1)
    raise AssertionError(f"{reader}: card {'not ' if present else 'still '}present after {timeout:g} s; readers: {seen}")


@contextlib.contextmanager
def serving(path: Path, atr: bytes, reader: str = READERS[0]):
    """`sscard serve` on an image, and a PC/SC connection to it; both closed afterwards."""
    from reader_bridge.pcsc import PcscTransport
    served = Served(path)
    try:
        wait_for_card(reader, atr)
        t = PcscTransport(reader)
        try:
            yield t, served
        finally:
            try:
                t.close()
            except Exception:  # noqa: BLE001 - the card may have left with its server
                pass
    finally:
        served.stop()


class Served:
    """A running `sscard serve` process."""

    def __init__(self, *images: Path, port: int = 35963, hopper: Path | None = None) -> None:
        self.readers = [READERS[port - 35963 + n] for n in range(len(images) or 1)]
        args = [sys.executable, "-m", "cli", "serve", "--port", str(port)]
        for img in images:
            args += ["--image", str(img)]
        if hopper is not None:
            args += ["--hopper", str(hopper)]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.err: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 20
        # Ready once it says so: its signal handlers are in place and its links are connecting.
        while not any(line.startswith("serving") for line in self.err):  # noqa: B023
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"sscard serve did not start: {''.join(self.err)}")
            time.sleep(0.02)

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.err.append(line)

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        # pcscd reads an ATR only when it sees a card arrive: wait until it has seen this one leave.
        for reader in self.readers:
            wait_for_card(reader, None, present=False)
        return self.proc.returncode, "".join(self.err)
