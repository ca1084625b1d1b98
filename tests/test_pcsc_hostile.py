"""The serve link under hostile use through real pcscd + vpcd: restarts and random APDUs."""

import signal
import time

import pytest

from personalize.readout import read_card
from reader_bridge.pcsc import PcscTransport
from reader_bridge.transport import TransportError
from tests.pcsc_env import READERS, Served, serving
from tests.ss import prof
from tests.test_pcsc import _image, pcscd  # noqa: F401 - pcscd: the module's own pcscd, as there

pytestmark = pytest.mark.pcsc


def test_a_restarted_serve_is_seen_as_a_new_card_every_time(tmp_path):
    # pcscd reads the ATR only when it sees a card arrive. Each restart here is a plain SIGTERM and
    # a new process, with no waiting for the reader to look empty or full: serve itself must make
    # sure pcscd saw the card go, or the client right after the restart gets "Card removed".
    path, atr = _image(tmp_path)
    for _ in range(8):
        served = Served(path)
        try:
            t = PcscTransport(READERS[0])                   # at once: it waits for the card itself
            try:
                assert t.atr() == atr
                assert read_card(t, prof()).full_name == "张小燕"
            finally:
                t.close()
        finally:
            served.proc.send_signal(signal.SIGTERM)
            assert served.proc.wait(timeout=15) == 0


def _random_apdus(n: int, seed: int):
    """n random APDUs, their lengths running through 1..261 in turn; 1-byte ones avoid the four
    bytes vpcd reads as controls (00, 01, 02, 04: what vpcd cannot carry, see reader_bridge/vpcd.py)."""
    import random
    rng = random.Random(seed)
    for i in range(n):
        length = 1 + i % 261
        if length == 1:
            yield bytes([rng.choice([b for b in range(256) if b not in (0, 1, 2, 4)])])
        else:
            yield rng.randbytes(length)


def test_10000_random_apdus_of_every_length_then_the_card_still_reads_and_serve_lives(tmp_path):
    path, atr = _image(tmp_path)
    with serving(path, atr) as (t, served):
        for apdu in _random_apdus(10_000, seed=15):
            answer = t.transmit_raw(apdu)
            assert len(answer) >= 2, apdu.hex()
            if len(apdu) < 4:
                assert answer == b"\x67\x00", apdu.hex()
        assert read_card(t, prof()).full_name == "张小燕"
        assert _reads_again(attempts=1)                     # and a new client too
        assert served.proc.poll() is None
    code, err = served.stop()
    assert code == 0 and "Traceback" not in err, err


@pytest.mark.parametrize("byte", [0x00, 0x01])
def test_a_one_byte_apdu_vpcd_takes_for_a_control_fails_that_call_but_never_freezes_the_reader(tmp_path, byte):
    # What vpcd makes impossible (it frames the APDUs 00/01/02 as power controls) stays one failed
    # call: the reader and later clients go on.
    path, atr = _image(tmp_path)
    with serving(path, atr) as (t, served):
        # vpcd waits for an answer a control never gets; the link's hang-up ends the call with no
        # answer (vpcd hands the client 0 bytes) or a transport error.
        try:
            assert len(t.transmit_raw(bytes([byte]))) < 2
        except TransportError:
            pass
        assert _reads_again(), "the reader stayed frozen"
        assert served.proc.poll() is None


def _reads_again(attempts: int = 20) -> bool:
    """A client retrying as a user would: connect and read, a few times if the card is still coming back."""
    for _ in range(attempts):
        try:
            t = PcscTransport(READERS[0], timeout=5)
        except TransportError:
            time.sleep(0.3)
            continue
        try:
            return read_card(t, prof()).full_name == "张小燕"
        except TransportError:
            time.sleep(0.3)
        finally:
            try:
                t.close()
            except TransportError:
                pass                        # the card may have left with the failed call
    return False
