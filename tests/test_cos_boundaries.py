"""Card-OS edges the mutation check found unguarded: answers that must carry no data, length
bounds of PINs and of RELOAD PIN, and the single-DES retail MAC checked against `cryptography`."""

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from cardos import sw as SW
from cardos.apdu import build
from cardos.crypto import Algorithm, mac4, pad80, retail_mac
from personalize import fmcos
from personalize.demo import DEMO_KEYS
from tests.util import challenge, external_authenticate_apdu, select_demo, tx


def _answer(card, apdu) -> bytes:
    raw = bytes.fromhex(apdu) if isinstance(apdu, str) else apdu
    return card.transmit(raw)


def test_successful_pin_and_authentication_commands_answer_9000_and_nothing_else(card):
    select_demo(card)
    assert _answer(card, "0020000003123456") == b"\x90\x00"
    assert _answer(card, "805E0100" + "07" + "123456FF654321") == b"\x90\x00"
    new = bytes.fromhex("123456")
    assert _answer(card, build(0x80, 0x5E, 0x00, 0x00, new + mac4(Algorithm.TDES, DEMO_KEYS["df_reload"], b"", new))) \
        == b"\x90\x00"
    auth = external_authenticate_apdu(Algorithm.TDES, DEMO_KEYS["df_read"], challenge(card), 0x01)
    assert _answer(card, auth) == b"\x90\x00"


@pytest.mark.parametrize("length, expected", [(8, 0x63C5), (9, SW.WRONG_LENGTH)])
def test_verify_takes_a_pin_of_up_to_8_bytes(card, length, expected):
    select_demo(card)
    assert tx(card, build(0x00, 0x20, 0x00, 0x00, bytes.fromhex("99") * length))[1] == expected


@pytest.mark.parametrize("new, expected", [
    ("1234", 0x9000), ("123456789012", 0x9000),        # 2 and 6 bytes: the shortest and longest PIN
    ("12", SW.WRONG_DATA), ("12345678901234", SW.WRONG_DATA),
])
def test_change_pin_takes_new_pins_of_2_to_6_bytes(card, new, expected):
    select_demo(card)
    body = "123456FF" + new
    assert tx(card, f"805E0100{len(body) // 2:02X}{body}")[1] == expected


def test_reload_pin_shorter_than_a_2_byte_pin_and_its_mac_is_a_length_error(card):
    select_demo(card)
    assert tx(card, build(0x80, 0x5E, 0x00, 0x00, bytes(5)))[1] == SW.WRONG_LENGTH
    two = bytes.fromhex("1234")
    good = mac4(Algorithm.TDES, DEMO_KEYS["df_reload"], b"", two)
    assert tx(card, build(0x80, 0x5E, 0x00, 0x00, two + good))[1] == 0x9000


def test_retail_mac_with_an_8_byte_key_is_des_cbc_mac():
    key, iv = bytes.fromhex("0123456789ABCDEF"), bytes(8)
    data = pad80(b"sixteen byte msg + more", 8)
    enc = Cipher(TripleDES(key * 3), modes.CBC(iv)).encryptor()
    expected = (enc.update(data) + enc.finalize())[-8:]
    assert retail_mac(key, iv, data) == expected
