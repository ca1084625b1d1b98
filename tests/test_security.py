"""The FMCOS security model: access bytes, PIN and key counters, authentication, secured writes."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cardos import sw as SW
from cardos.access import AccessError, compile_access, describe, permits
from cardos.apdu import build
from cardos.crypto import Algorithm, diversify, encrypt_ecb, mac4, seal
from cardos.files import KEY_PIN, KeyRecord
from personalize import fmcos
from cardos import CosConfig
from conformance.faults import with_faults
from personalize.compiler import FACTORY_KEY
from personalize.demo import DEMO_KEYS, FACTORY_KEY_VALUE, blank_card
from personalize.keys import KeyRef, SoftwareKeys
from personalize.script import Authenticate, run
from reader_bridge.transport import InProcess
from tests.util import (authenticate, challenge, external_authenticate_apdu, ok, secured, select_demo, sw,
                        write_key_secured_apdu)


@pytest.mark.parametrize("right, mf, df, expected", [
    (0x00, 0, 0, True), (0x0F, 14, 0, False), (0x0F, 15, 0, True), (0xF0, 0, 0, True),
    (0xF1, 0, 0, False), (0xF1, 0, 1, True), (0xF1, 0, 15, True), (0x31, 0, 4, False),
    (0x22, 0, 2, True), (0x22, 0, 3, False), (0xEF, 15, 15, False), (0x12, 15, 15, False),
])
def test_access_byte_table(right, mf, df, expected):
    assert permits(right, mf, df) is expected


def test_compile_access_symbols():
    creds = {"pin": 1, "key:0A": 2, "key:04": 3}
    assert compile_access("always", creds) == 0x00
    assert compile_access("never", creds) == 0xEF
    assert compile_access("pin", creds) == 0x11
    assert compile_access("key:0A", creds) == 0x22
    assert compile_access("pin|key:0A", creds) == 0x21
    assert compile_access("mf:15", creds) == 0x0F
    assert compile_access("state:1", creds) == 0xF1
    with pytest.raises(AccessError, match="would also admit key:0a"):
        compile_access("pin|key:04", creds)
    with pytest.raises(AccessError, match="unknown credential"):
        compile_access("key:99", creds)


def test_compile_access_takes_aliases_hex_levels_and_refuses_levels_out_of_1_to_15():
    assert [compile_access(c, {}) for c in ("free", " 00 ", "ALWAYS", "mf:0x0F", "state:0x2", "mf:1")] == \
        [0x00, 0x00, 0x00, 0x0F, 0xF2, 0x01]
    for cond, why in (("mf:0", "must be 1..15, not 0"), ("state:16", "must be 1..15, not 16"),
                      ("mf:two", "in 'mf:two' is not a number"), (" | ", "empty access condition")):
        with pytest.raises(AccessError, match=re.escape(why)):
            compile_access(cond, {})


def test_compile_access_refuses_a_range_that_would_admit_a_credential_not_named():
    creds = {"a": 1, "b": 2, "c": 2, "d": 1}
    with pytest.raises(AccessError, match=re.escape("would also admit c, d")):
        compile_access("a|b", creds)                           # c shares b's state (top), d a's (bottom)
    with pytest.raises(AccessError, match=re.escape("would also admit a")):
        compile_access("d", creds)
    with pytest.raises(AccessError, match=re.escape("security level in 'pin' must be 1..15, not 16")):
        compile_access("pin", {"pin": 16})
    with pytest.raises(AccessError, match="not a number"):
        compile_access("mf:1:2", creds)


@pytest.mark.parametrize("right, words", [
    (0x00, "always"), (0xF0, "always"), (0x03, "MF state >= 3"), (0xF1, "DF state 1..F"), (0x31, "DF state 1..3"),
    (0x22, "DF state = 2"), (0xEF, "never"), (0x12, "never"), (0x0C, "MF state >= C"), (0xEA, "DF state A..E"),
])
def test_an_access_byte_in_words(right, words):
    assert describe(right) == words


@given(st.integers(0, 255), st.integers(0, 15), st.integers(0, 15))
def test_the_words_for_an_access_byte_say_what_the_card_admits(right, mf, df):
    words = describe(right)
    if words in ("always", "never"):
        assert permits(right, mf, df) is (words == "always")
    elif words.startswith("MF state >= "):
        assert permits(right, mf, df) is (mf >= int(words[12:], 16))
    elif words.startswith("DF state = "):
        assert permits(right, mf, df) is (df == int(words[11:], 16))
    else:
        lo, hi = (int(n, 16) for n in words[len("DF state "):].split(".."))
        assert permits(right, mf, df) is (lo <= df <= hi)


@given(st.integers(0, 255), st.integers(0, 15), st.integers(0, 15))
def test_never_bytes_admit_nothing(right, mf, df):
    x, y = right >> 4, right & 0xF
    if 0 < x < y:
        assert not permits(right, mf, df)


# ---- PIN ----------------------------------------------------------------------------------

def test_pin_counter_sequence_restore_and_lock(card):
    select_demo(card)
    assert [sw(card, "0020000003999999") for _ in range(5)] == [0x63C5, 0x63C4, 0x63C3, 0x63C2, 0x63C1]
    assert sw(card, "00200000") == 0x63C1                      # no data: tries left, none used
    assert sw(card, "0020000003123456") == 0x9000
    assert sw(card, "00200000") == 0x63C6                      # restored to the maximum
    assert [sw(card, "0020000003999999") for _ in range(6)][-1] == 0x63C0
    assert sw(card, "0020000003123456") == SW.BLOCKED
    assert sw(card, "805E0100" + "07" + "123456FF654321") == SW.BLOCKED


def test_the_pin_counter_stuck_fault_stops_only_the_pin_counter(card):
    card = with_faults(card, ["pin-counter-stuck"])
    select_demo(card)
    assert [sw(card, "0020000003999999") for _ in range(3)] == [0x63C6] * 3
    assert [authenticate(card, 0x01, bytes(16)) for _ in range(2)] == [0x63C2, 0x63C1]   # keys still count


def test_the_read_rights_ignored_fault_opens_reads_only(card):
    card = with_faults(card, ["read-rights-ignored"])
    select_demo(card)
    assert ok(card, "00B0810004") == b"ssca"                   # key 01's file, no authentication
    assert sw(card, "00D681000100") == SW.SECURITY_NOT_SATISFIED


def test_pin_opens_what_it_guards_and_dies_with_the_session(card):
    select_demo(card)
    assert sw(card, "00B0810000") == SW.SECURITY_NOT_SATISFIED
    ok(card, "0020000003123456")
    assert ok(card, "00B0810010") == b"sscard demo data"
    assert sw(card, build(0x00, 0xD6, 0x81, 0x00, b"x")) == SW.SECURITY_NOT_SATISFIED  # write needs key 01
    select_demo(card)                                           # reselecting clears the state
    assert sw(card, "00B0810000") == SW.SECURITY_NOT_SATISFIED


def test_change_pin_needs_the_old_pin_counts_a_wrong_one_and_checks_the_new_format(card):
    select_demo(card)
    assert sw(card, "805E0100" + "07" + "999999FF654321") == 0x63C5
    ok(card, "805E0100" + "07" + "123456FF654321")
    assert sw(card, "0020000003123456") == 0x63C5
    ok(card, "0020000003654321")
    assert sw(card, "805E0100" + "05" + "654321FF12") == SW.WRONG_DATA   # new PIN too short
    assert sw(card, "805E0100" + "03" + "654321") == SW.WRONG_DATA       # no separator


def test_reload_pin_with_mac_under_the_reload_key(card):
    select_demo(card)
    for _ in range(6):
        sw(card, "0020000003999999")
    new = bytes.fromhex("888888")
    good = mac4(Algorithm.TDES, DEMO_KEYS["df_reload"], b"", new)
    assert sw(card, build(0x80, 0x5E, 0x00, 0x00, new + bytes(4))) == SW.MAC_WRONG
    ok(card, build(0x80, 0x5E, 0x00, 0x00, new + good))
    ok(card, "0020000003888888")


def test_unblock_pin_resets_counter_and_can_set_a_new_pin(card):
    select_demo(card)
    for _ in range(6):
        sw(card, "0020000003999999")
    assert secured(card, 0x84, 0x24, 0x00, 0x00, b"", bytes(16)) == SW.MAC_WRONG
    assert secured(card, 0x84, 0x24, 0x00, 0x00, b"", DEMO_KEYS["df_unblock"]) == 0x9000
    ok(card, "0020000003123456")
    sealed = seal(Algorithm.TDES, DEMO_KEYS["df_unblock"], bytes.fromhex("1357"))
    assert secured(card, 0x84, 0x24, 0x00, 0x00, sealed, DEMO_KEYS["df_unblock"]) == 0x9000
    ok(card, "00200000021357")


# ---- keys -----------------------------------------------------------------------------------

def test_external_authenticate_raises_state_and_counts_failures(card):
    select_demo(card)
    assert authenticate(card, 0x01, bytes(16)) == 0x63C2
    assert authenticate(card, 0x01, DEMO_KEYS["df_read"]) == 0x9000
    assert ok(card, "00B0810004") == b"ssca"
    assert authenticate(card, 0x01, bytes(16)) == 0x63C2        # success restored 3 tries
    assert authenticate(card, 0x01, bytes(16)) == 0x63C1
    assert authenticate(card, 0x01, bytes(16)) == 0x63C0
    assert authenticate(card, 0x01, DEMO_KEYS["df_read"]) == SW.BLOCKED


def test_challenge_is_single_use_and_the_last_one_counts(card):
    select_demo(card)
    first = challenge(card)
    second = challenge(card)
    stale = external_authenticate_apdu(Algorithm.TDES, DEMO_KEYS["df_read"], first, 0x01)
    assert sw(card, stale) == 0x63C2                            # the earlier challenge is gone
    good = external_authenticate_apdu(Algorithm.TDES, DEMO_KEYS["df_read"], challenge(card), 0x01)
    assert sw(card, good) == 0x9000
    assert sw(card, good) == SW.REFERENCE_DATA_UNUSABLE         # consumed by its use
    assert first != second


def test_psam_style_cryptogram_with_the_challenge_appended(card):
    select_demo(card)
    chal = challenge(card)
    crypt = encrypt_ecb(Algorithm.TDES, DEMO_KEYS["df_read"], chal)
    assert sw(card, build(0x00, 0x82, 0x00, 0x01, crypt + chal)) == 0x9000


def test_internal_authenticate_both_forms(card):
    select_demo(card)
    k = DEMO_KEYS["df_internal"]
    data = bytes.fromhex("0102030405060708")
    assert ok(card, build(0x00, 0x88, 0x00, 0x00, data)) == encrypt_ecb(Algorithm.TDES, k, data)
    process, source = bytes.fromhex("1111111111111111"), bytes.fromhex("2222222222222222")
    expected = encrypt_ecb(Algorithm.TDES, diversify(Algorithm.TDES, k, process), source)
    assert ok(card, build(0x00, 0x88, 0x00, 0x00, process + source)) == expected


def test_wrong_mac_decrements_the_line_protection_key(card):
    select_demo(card)
    for left in (2, 1, 0):
        assert secured(card, 0x04, 0xDC, 0x01, 0x2C, b"\x01\x08DEMO0002", bytes(16)) == SW.MAC_WRONG
        assert card.fs.key(card.session.current_df, 0x36, 0).tries_left == left
    assert secured(card, 0x04, 0xDC, 0x01, 0x2C, b"\x01\x08DEMO0002", DEMO_KEYS["df_maintenance"]) == SW.BLOCKED


def test_mac_write_stands_for_the_write_right(card):
    select_demo(card)
    assert sw(card, build(0x00, 0xDC, 0x01, 0x2C, b"\x01\x08DEMO0002")) == SW.SECURITY_NOT_SATISFIED
    assert secured(card, 0x04, 0xDC, 0x01, 0x2C, b"\x01\x08DEMO0002", DEMO_KEYS["df_maintenance"]) == 0x9000
    assert ok(card, "00B2012C00") == b"\x01\x08DEMO0002"


def test_secured_write_key_replaces_a_pin_and_keys_never_read_back(card):
    select_demo(card)
    pin = KeyRecord(KEY_PIN, 0x00, 0xF0, 0xEF, bytes.fromhex("246813"), next_state=1, max_tries=6, tries_left=6)
    apdu = write_key_secured_apdu(pin, Algorithm.TDES, DEMO_KEYS["df_master"], challenge(card))
    assert sw(card, apdu) == 0x9000                             # the MAC is the authority
    forged = write_key_secured_apdu(pin, Algorithm.TDES, bytes(16), challenge(card))
    assert sw(card, forged) == SW.MAC_WRONG
    assert sw(card, fmcos.write_key(pin, replace=True)) == SW.SECURITY_NOT_SATISFIED  # PIN: never in plain
    assert sw(card, "0020000003123456") == 0x63C5
    ok(card, "0020000003246813")
    # no command reads a key file: it cannot be selected, and READ BINARY/RECORD never reach it
    assert sw(card, "00A40000020000") == SW.FILE_NOT_FOUND
    assert sw(card, "00B2010000") == SW.NO_CURRENT_EF


def test_plain_write_key_needs_the_change_right(card):
    select_demo(card)
    rec = KeyRecord(0x39, 0x01, 0xF0, 0x33, bytes(16), next_state=2, max_tries=3, tries_left=3)
    assert sw(card, fmcos.write_key(rec, replace=True)) == SW.SECURITY_NOT_SATISFIED
    assert authenticate(card, 0x00, DEMO_KEYS["df_master"]) == 0x9000
    ok(card, fmcos.write_key(rec, replace=True))
    assert authenticate(card, 0x01, bytes(16)) == 0x9000
    assert sw(card, fmcos.write_key(rec, replace=False)) == SW.SECURITY_NOT_SATISFIED  # add needs state 3


def test_sm4_keys_work_end_to_end():
    card = blank_card(CosConfig(key_algorithm=Algorithm.SM4))
    t = InProcess(card).transmit
    assert card.fs.key((0x3F00,), 0x39, 0x00).algorithm is Algorithm.SM4   # 16-byte keys follow the COS
    run(t, [Authenticate(0, KeyRef(FACTORY_KEY))], SoftwareKeys({FACTORY_KEY: (Algorithm.SM4, FACTORY_KEY_VALUE, 1)}))
    sm4 = bytes(range(16))
    rec = KeyRecord(0x39, 0x05, 0xF0, 0x0F, sm4, Algorithm.SM4, next_state=0xF, max_tries=3, tries_left=3)
    ok(card, fmcos.write_key(rec))
    assert card.fs.key((0x3F00,), 0x39, 0x05).algorithm is Algorithm.SM4
    assert authenticate(card, 0x05, sm4, Algorithm.SM4) == 0x9000
    mk = KeyRecord(0x36, 0x00, 0xF0, 0x0F, sm4, Algorithm.SM4, max_tries=3, tries_left=3)
    ok(card, fmcos.write_key(mk))
    assert secured(card, 0x84, 0x16, 0, 0, b"", bytes(16), Algorithm.SM4) == SW.MAC_WRONG
    assert secured(card, 0x84, 0x16, 0, 0, b"", sm4, Algorithm.SM4) == 0x9000      # SM4 CBC-MAC accepted
