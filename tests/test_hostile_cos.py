"""Card OS edges a hostile tester found (issue 15): binary EFs on the applets' SFIs, answers
longer than a short APDU carries, PIN counters above their maximum."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardos import sw as SW
from cardos.apdu import split_response
from cardos.card import Card, CosConfig
from cardos.files import (KEY_PIN, CyclicEF, DedicatedFile, KeyFile, KeyRecord, LinearFixedEF, TransparentEF,
                          VariableRecordEF)
from personalize import fmcos
from tests.util import ok, sw, tx

PIN = bytes.fromhex("123456")


def _fresh_df(applets=("social-security", "pboc-debit"), name=b"APP.ONE", app_file_id=0x95) -> Card:
    """A card with an MF and one DF (no key files, so every right is waived), the DF selected."""
    c = Card(config=CosConfig(applets=applets))
    c.power_on()
    ok(c, fmcos.create_file(DedicatedFile(0x3F00, size=0xFFFF)))
    ok(c, fmcos.create_file(DedicatedFile(0xDF01, size=0x1000, name=name, app_file_id=app_file_id)))
    ok(c, fmcos.select_fid(0xDF01))
    return c


# ---- item 7: lookups that walk records must not walk a binary EF ------------------------------

def test_binary_ef_on_the_extension_directory_sfi_leaves_create_file_working():
    c = _fresh_df()
    ok(c, fmcos.create_file(TransparentEF(0x001E, size=8)))
    assert sw(c, fmcos.create_file(TransparentEF(0x0002, size=8))) == SW.OK
    assert sw(c, fmcos.create_file(DedicatedFile(0x0A01, size=0x40, name=b"DEPT.A"))) == SW.OK


def test_binary_ef_on_the_life_file_sfi_leaves_verify_working():
    c = _fresh_df()
    ok(c, fmcos.create_file(TransparentEF(0x001C, size=8)))
    ok(c, fmcos.create_file(KeyFile(0x0000, size=0x80)))
    ok(c, fmcos.write_key(KeyRecord(KEY_PIN, 0, 0xF0, 0xEF, PIN, max_tries=3, tries_left=3)))
    assert sw(c, "0020000003999999") == 0x63C2
    assert sw(c, "0020000003123456") == SW.OK
    assert sw(c, "805E010007123456FF654321") == SW.OK


def test_record_ef_on_the_life_file_sfi_still_guards_the_pin():
    c = _fresh_df()
    ok(c, fmcos.create_file(VariableRecordEF(0x001C, size=0x20)))
    ok(c, "00E200E003C10130")                 # life record C1 = "0": issued, not yet active
    ok(c, fmcos.create_file(KeyFile(0x0000, size=0x80)))
    ok(c, fmcos.write_key(KeyRecord(KEY_PIN, 0, 0xF0, 0xEF, PIN, max_tries=3, tries_left=3)))
    assert sw(c, "0020000003123456") == SW.CONDITIONS_NOT_SATISFIED


# ---- item 8: a short answer never exceeds 256 bytes -------------------------------------------

def test_fci_file_too_large_for_select_is_refused_at_create():
    c = _fresh_df()
    assert sw(c, fmcos.create_file(TransparentEF(0x0015, size=250))) == SW.WRONG_DATA
    ok(c, fmcos.create_file(TransparentEF(0x0015, size=200)))
    data, status = tx(c, "00A4000002DF01" + "00")
    assert status == SW.OK and len(data) <= 256


@pytest.mark.parametrize("ef", [
    TransparentEF(0x0015, size=300), VariableRecordEF(0x0015, size=600),
    LinearFixedEF(0x0015, count=10, rec_len=40), CyclicEF(0x0035, count=3, rec_len=200),
])
def test_every_kind_of_fci_file_that_cannot_fit_is_refused(ef):
    c = _fresh_df()
    assert sw(c, fmcos.create_file(ef)) == SW.WRONG_DATA
    assert sw(c, fmcos.create_file(TransparentEF(ef.fid, size=8))) == SW.OK


def test_a_file_on_another_sfi_may_be_large():
    c = _fresh_df()
    assert sw(c, fmcos.create_file(TransparentEF(0x0016, size=600))) == SW.OK


def _select_with_le(c: Card, le: int) -> tuple[bytes, int]:
    return tx(c, "00A4000002DF01" + f"{le & 0xFF:02X}")


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 400), name_len=st.integers(5, 16), fill=st.integers(0, 255))
def test_select_answers_fit_and_6cxx_names_a_length_that_works(size, name_len, fill):
    c = _fresh_df(applets=(), name=b"N" * name_len)
    if sw(c, fmcos.create_file(TransparentEF(0x0015, size=size))) != SW.OK:
        return
    ok(c, "00D69500" + f"{min(size, 255):02X}" + f"{fill:02X}" * min(size, 255))
    data, status = _select_with_le(c, 256)
    assert status == SW.OK and len(data) <= 256
    for le in (1, len(data) - 1 if len(data) > 1 else 1):
        _, status = _select_with_le(c, le)
        if status >> 8 == 0x6C:
            again, status = _select_with_le(c, status & 0xFF or 256)
            assert status == SW.OK and again == data


def test_a_handler_answer_longer_than_256_bytes_never_asks_for_an_le():
    from cardos.card import Command
    c = Card(commands={0xCA: Command(lambda card, cmd: b"x" * 300, frozenset({0x80}))})
    for le in ("00", "2C", ""):
        assert sw(c, "80CA0000" + le) == SW.WRONG_LENGTH


# ---- item 9: WRITE KEY checks PIN counters as it checks counted keys ---------------------------

@pytest.mark.parametrize("counter", [0x3F, 0x07, 0x00, 0x0F])
def test_write_key_refuses_a_pin_counter_above_its_maximum(counter):
    c = _fresh_df()
    ok(c, fmcos.create_file(KeyFile(0x0000, size=0x80)))
    data = bytes([KEY_PIN, 0xF0, 0xEF, 0x01, counter]) + PIN
    assert sw(c, "80D40100" + f"{len(data):02X}" + data.hex()) == SW.WRONG_DATA
    assert sw(c, "00200000") == SW.REFERENCE_NOT_FOUND


def test_write_key_takes_a_pin_counter_within_its_maximum():
    c = _fresh_df()
    ok(c, fmcos.create_file(KeyFile(0x0000, size=0x80)))
    data = bytes([KEY_PIN, 0xF0, 0xEF, 0x01, 0x32]) + PIN
    ok(c, "80D40100" + f"{len(data):02X}" + data.hex())
    assert sw(c, "00200000") == 0x63C2
    assert split_response(c.transmit(bytes.fromhex("0020000003999999")))[1] == 0x63C1
