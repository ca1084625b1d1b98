"""Issuer scripts in an online transaction, MACed and enciphered as PyPI pyemv makes them (EMV Book 2 §9)."""

import pytest
from pyemv import kd as pyemv_kd
from pyemv import sm as pyemv_sm

from cardos.apdu import build
from personalize import cardholders
from personalize.keys import KeyRef
from tests.ss import card, keys
from tests.test_emv_terminal import active_card
from tests.test_emv_transaction import SELECT_BANK, cdol1, gac, start, terminal_data
from tests.util import ok, sw

pytestmark = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")


def session(master: str, arqc: bytes) -> bytes:
    imk = keys().value_for_plain_load(KeyRef(master))
    icc_mk = pyemv_kd.derive_icc_mk_a(imk, cardholders.sample()["pan"], "00")
    return pyemv_kd.derive_common_sk(icc_mk, arqc)


def script(ins: int, p1: int, p2: int, data: bytes, atc: int, arqc: bytes, good: bool = True) -> bytes:
    header = bytes([0x84, ins, p1, p2, len(data) + 4])
    mac = pyemv_sm.generate_command_mac(session("IMK_SMI", arqc), header + atc.to_bytes(2, "big") + arqc + data, 4)
    if not good:
        mac = bytes([mac[0] ^ 1]) + mac[1:]
    return build(0x84, ins, p1, p2, data + mac)


def online(c):
    start(c)
    _, atc, arqc, _ = gac(c, 0x80, cdol1(terminal_data()))
    return atc, arqc


def test_application_block_by_script_then_select_answers_6a81():
    c = card()
    atc, arqc = online(c)
    assert sw(c, script(0x1E, 0x00, 0x00, b"", atc, arqc, good=False)) == 0x6988
    ok(c, script(0x1E, 0x00, 0x00, b"", atc, arqc))
    assert sw(c, SELECT_BANK) == 0x6A81


def test_card_block_by_script():
    c = card()
    atc, arqc = online(c)
    ok(c, script(0x16, 0x00, 0x00, b"", atc, arqc))
    assert sw(c, "00A40000023F00") == 0x6A81


def test_pin_unblock_and_pin_change_by_script():
    c = active_card()
    ok(c, SELECT_BANK)
    for _ in range(3):
        sw(c, "0020008008260000 00FFFFFFFF".replace(" ", ""))
    assert ok(c, "80CA9F1700")[3] == 0
    atc, arqc = online(c)
    ok(c, script(0x24, 0x00, 0x00, b"", atc, arqc))                 # unblock: tries back to 3
    atc, arqc = online(c)
    block = pyemv_sm.format_iso9564_2_pin_block("246810")
    enc = pyemv_sm.encrypt_command_data(session("IMK_SMC", arqc), block, pyemv_sm.EncryptionType.MASTERCARD)
    ok(c, script(0x24, 0x00, 0x02, enc, atc, arqc))
    ok(c, SELECT_BANK)
    assert ok(c, "80CA9F1700")[3] == 3
    assert sw(c, "0020008008262468 10FFFFFFFF".replace(" ", "")) == 0x9000   # the new PIN


def test_outside_an_online_transaction_the_counter_line_protection_still_applies():
    c = card()
    ok(c, SELECT_BANK)
    assert sw(c, "841E000004" + "00000000") in (0x6984, 0x6988)      # no challenge, no ARQC: the COS decides
