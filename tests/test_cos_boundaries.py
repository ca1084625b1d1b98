"""Card-OS edges the mutation check found unguarded: answers that must carry no data, length
bounds of PINs and of RELOAD PIN, the single-DES retail MAC checked against `cryptography`, the COS
settings' bounds, class before instruction, GET RESPONSE's pending answer, the MF state."""

import re

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from cardos import Card, CosConfig
from cardos import sw as SW
from cardos.apdu import build
from cardos.crypto import Algorithm, mac4, pad80, retail_mac
from cardos.files import DedicatedFile, KeyFile, TransparentEF
from personalize import fmcos
from personalize.demo import DEMO_KEYS, FACTORY_KEY_VALUE, demo_card
from tests.util import authenticate, challenge, external_authenticate_apdu, ok, select_demo, sw, tx

SELECT_DEMO = "00A404000B" + b"SSCARD.DEMO".hex()


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


@pytest.mark.parametrize("settings, why", [
    ({"capacity": 1023}, "capacity 1023 out of range 1024..65546"),
    ({"capacity": 0xFFFF + 12}, "capacity 65547 out of range"),
    ({"atr": b"\x3b"}, "ATR must be 2..33 bytes starting 3B or 3F"),
    ({"atr": b"\x3b" + bytes(33)}, "ATR must be"),
    ({"atr": b"\x3a\x00"}, "ATR must be"),
    ({"hooks": ("no-such", "nor-this")}, "unknown hook(s) no-such, nor-this; installed: pin-counter-stuck, "
                                         "read-rights-ignored"),
])
def test_cos_settings_out_of_range_are_refused_by_name(settings, why):
    with pytest.raises(ValueError, match=re.escape(why)):
        CosConfig(**settings)


@pytest.mark.parametrize("settings", [{"capacity": 1024}, {"capacity": 0xFFFF + 11}, {"atr": b"\x3b\x00"},
                                      {"atr": b"\x3f" + bytes(32)}, {"hooks": ("read-rights-ignored",)}])
def test_cos_settings_at_their_bounds_are_taken(settings):
    assert CosConfig(**settings)


@pytest.mark.parametrize("cla", ["08", "10", "40", "FF"])
def test_an_unknown_instruction_under_a_class_the_card_does_not_take_answers_6e00_not_6d00(card, cla):
    assert sw(card, cla + "02000000") == SW.CLA_NOT_SUPPORTED


def test_an_announced_answer_survives_a_wrong_le_and_is_lost_to_any_other_command():
    card = demo_card(CosConfig(t0_get_response=True))
    n = sw(card, SELECT_DEMO) & 0xFF
    assert sw(card, f"00C00000{n + 1:02X}") == SW.wrong_le(n)
    data, status = tx(card, f"00C00000{n:02X}")
    assert status == 0x9000 and len(data) == n
    assert sw(card, SELECT_DEMO) >> 8 == 0x61
    assert sw(card, "00B2092C00") == SW.RECORD_NOT_FOUND
    assert sw(card, "00C0000000") == SW.CONDITIONS_NOT_SATISFIED


def test_get_response_after_an_answer_given_whole_has_nothing_to_give(card):
    assert sw(card, SELECT_DEMO) == 0x9000
    assert sw(card, "00C0000000") == SW.CONDITIONS_NOT_SATISFIED


def test_after_power_on_an_mf_without_a_key_file_takes_every_command_its_rights_would_refuse():
    """Spec §3b: a DF with no key file accepts everything; its rights apply once the key file exists."""
    card = Card()
    assert sw(card, fmcos.create_file(DedicatedFile(0x3F00, size=0x2000, create_right=0xEF, erase_right=0xEF))) == 0x9000
    card.power_on()
    assert sw(card, fmcos.create_file(TransparentEF(0x0011, read_right=0xEF, write_right=0xEF, size=8))) == 0x9000


def test_the_mf_state_holds_inside_a_df_and_starts_again_when_the_mf_is_selected(blank):
    """Spec §3b: a right 0Y asks the MF state; entering a DF keeps it, selecting the MF clears it."""
    assert authenticate(blank, 0x00, FACTORY_KEY_VALUE) == 0x9000          # MF state F
    ok(blank, fmcos.create_file(DedicatedFile(0xDF01, size=0x200, create_right=0x0F, erase_right=0x0F,
                                              name=b"MF.STATE")))
    ok(blank, "00A4000002DF01")
    ok(blank, fmcos.create_file(KeyFile(0x0000, size=0x40, df_short_id=0x01, add_right=0x0F)))
    ok(blank, fmcos.create_file(TransparentEF(0x0005, read_right=0x01, write_right=0xEF, size=4)))
    ok(blank, "00A40000023F00")
    assert authenticate(blank, 0x00, FACTORY_KEY_VALUE) == 0x9000
    ok(blank, "00A4000002DF01")
    assert tx(blank, "00B0850004") == (bytes(4), 0x9000)
    ok(blank, "00A40000023F00")
    ok(blank, "00A4000002DF01")
    assert tx(blank, "00B0850004")[1] == SW.SECURITY_NOT_SATISFIED
