"""The serve link under hostile use through real pcscd + vpcd: restarts and random APDUs."""

import signal

import pytest

from personalize import cardholders, lifecycle, virtual
from personalize.readout import read_card
from reader_bridge.pcsc import PcscTransport
from reader_bridge.transport import InProcess
from tests.pcsc_env import READERS, Served, start_pcscd, stop_pcscd, wait_for_card
from tests.ss import keys, prof

pytestmark = pytest.mark.pcsc


@pytest.fixture(scope="module", autouse=True)
def pcscd():
    start_pcscd()
    yield
    stop_pcscd()


def _image(tmp_path):
    from cardos import image
    c = virtual.make(prof(), cardholders.sample(), keys(), virtual.chip_serial(str(tmp_path / "card.json")))
    lifecycle.perform(InProcess(c), lifecycle.life_script("activate", prof(), c.atr[-8:]), keys())
    path = tmp_path / "card.json"
    image.save(c, path)
    return path, c.atr


def test_a_restarted_serve_is_seen_as_a_new_card_every_time(tmp_path):
    # pcscd reads the ATR only when it sees a card arrive. Each restart here is a plain SIGTERM and
    # a new process, with no waiting for the reader to look empty: serve itself must make sure
    # pcscd saw the card go, or the client right after the restart gets "Card removed".
    path, atr = _image(tmp_path)
    for _ in range(8):
        served = Served(path)
        try:
            wait_for_card(READERS[0], atr)
            t = PcscTransport(READERS[0])
            try:
                assert read_card(t, prof()).full_name == "张小燕"
            finally:
                t.close()
        finally:
            served.proc.send_signal(signal.SIGTERM)
            assert served.proc.wait(timeout=15) == 0
