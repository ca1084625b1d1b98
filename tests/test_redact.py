"""Redaction follows what the card's answer is, also when a T=0 card hands it out in GET RESPONSE."""

import logging
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from cardos import redact
from cardos.apdu import build
from cardos.card import Card
from cardos.nvm import Store
from reader_bridge.vpcd import VpcdLink
from tests.ss import SELECT_SSSE, card

INTERNAL_AUTH = build(0x00, 0x88, 0x00, 0x00, bytes(range(1, 17)))


def t0_card() -> Card:
    c = card()
    t0 = Card(Store(dict(c.store.data)), replace(c.config, t0_get_response=True))
    t0.power_on()
    return t0


def test_serve_v_masks_a_cryptogram_fetched_by_get_response(caplog):
    link = VpcdLink(t0_card(), port=1)
    with caplog.at_level(logging.INFO, logger="sscard.vpcd"):
        link.handle(bytes.fromhex(SELECT_SSSE))
        link.handle(bytes.fromhex("00C0000000"))
        waiting = link.handle(INTERNAL_AUTH)
        assert waiting[0] == 0x61
        answer = link.handle(bytes([0x00, 0xC0, 0x00, 0x00, waiting[1]]))
    assert answer[-2:] == b"\x90\x00" and len(answer) > 6
    assert answer[:-2].hex().upper() not in caplog.text
    assert answer[:4].hex().upper() not in caplog.text
    assert "cryptogram redacted" in caplog.text


@settings(max_examples=60, deadline=None)
@given(pieces=st.lists(st.integers(0, 20), min_size=1, max_size=8), reselect=st.booleans())
def test_no_piece_of_a_cryptogram_is_shown_however_it_is_fetched(pieces, reselect):
    c, r = t0_card(), redact.Redactor()

    def send(apdu: bytes) -> tuple[bytes, str]:
        resp = c.transmit(apdu)
        return resp, r.response(apdu, resp)

    send(bytes.fromhex(SELECT_SSSE))
    resp, shown = send(INTERNAL_AUTH)
    assert resp[0] == 0x61 and shown == resp.hex().upper()
    for n in pieces:                         # Le 0 = 256 and short Les: 6Cxx, partial answers, 9000
        resp, shown = send(bytes([0x00, 0xC0, 0x00, 0x00, n]))
        if len(resp) > 2:
            assert resp[:-2].hex().upper() not in shown and "redacted" in shown
        if resp[-2:] == b"\x90\x00":
            break
    if reselect:
        # Once the cryptogram is out, other answers are shown again: the FCI fetched after SELECT.
        resp, _ = send(build(0x00, 0xA4, 0x04, 0x00, bytes.fromhex(SELECT_SSSE[10:]), 0))
        resp, shown = send(bytes([0x00, 0xC0, 0x00, 0x00, resp[1]]))
        assert resp[:1] == b"\x6f" and shown == resp.hex().upper()


def test_a_whole_answer_is_masked_by_the_command_that_asked_for_it():
    assert "redacted" in redact.response(INTERNAL_AUTH, bytes(8) + b"\x90\x00")
    assert redact.response(bytes.fromhex("00B2072C00"), b"\x07\x01\x41\x90\x00") == "0701419000"
