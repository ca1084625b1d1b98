"""Selection, transparent and record files, both record-addressing modes, Le rules (spec §2-§3)."""

import pytest

from cardos import sw as SW
from cardos.apdu import build
from cardos.files import CyclicEF, LinearFixedEF, TransparentEF, VariableRecordEF
from cardos.tlv import find
from personalize import fmcos
from personalize.demo import DEMO_KEYS
from tests.util import authenticate, ok, select_demo, sw, tx


def test_select_mf_by_fid_and_without_data(card):
    assert find(ok(card, "00A40000023F00"), 0x83) == b"\x3f\x00"
    assert find(ok(card, "00A4000000"), 0x83) == b"\x3f\x00"


def test_select_df_by_name_by_fid_and_truncated_name(card):
    fci = ok(card, "00A404000B" + b"SSCARD.DEMO".hex())
    assert find(fci, 0x84) == b"SSCARD.DEMO"
    ok(card, "00A40000023F00")
    assert find(ok(card, "00A4000002DF01"), 0x84) == b"SSCARD.DEMO"
    ok(card, "00A40000023F00")
    assert find(ok(card, "00A4040006" + b"SSCARD".hex()), 0x84) == b"SSCARD.DEMO"


def test_select_ef_with_p1_00_and_02_then_read_current(card):
    select_demo(card)
    for p1 in ("00", "02"):
        assert tx(card, f"00A4{p1}00020005") == (b"", 0x9000)
        assert ok(card, "00B2010400") == b"\x01\x08DEMO0001"


def test_select_p2_0c_answers_no_fci(card):
    assert tx(card, "00A4040C0B" + b"SSCARD.DEMO".hex()) == (b"", 0x9000)


def test_select_parent_and_sibling_by_fid(card):
    select_demo(card)
    ok(card, "00A40000020005")
    assert find(ok(card, "00A40000023F00"), 0x83) == b"\x3f\x00"
    assert sw(card, "00A4020002DF01") == SW.FILE_NOT_FOUND  # P1 02 selects EFs only


def test_key_files_cannot_be_selected(card):
    assert sw(card, "00A40000020000") == SW.FILE_NOT_FOUND


def test_failed_select_keeps_the_current_file(card):
    select_demo(card)
    ok(card, "00A40000020005")
    assert sw(card, "00A4000002ABCD") == SW.FILE_NOT_FOUND
    assert ok(card, "00B2010400") == b"\x01\x08DEMO0001"


# ---- records: number and identifier -------------------------------------------------------

@pytest.mark.parametrize("apdu", ["00B2012C00", "00B2012CFF", "00B2012C", "00B2012800", "00B2012828"])
def test_record_by_number_and_by_tag_with_any_sufficient_le(card, apdu):
    select_demo(card)
    assert tx(card, apdu) == (b"\x01\x08DEMO0001", 0x9000)


def test_record_le_of_the_value_only_gives_6c_then_resend_works(card):
    select_demo(card)
    assert sw(card, "00B2022C04") == 0x6C06
    assert tx(card, "00B2022C06") == (b"\x02\x042.00", 0x9000)


def test_record_p1_00_is_the_current_record(card):
    select_demo(card)
    ok(card, "00B2022C00")
    assert ok(card, "00B2002C00") == b"\x02\x042.00"


def test_record_identifier_modes_next_previous_last(card):
    select_demo(card)
    ok(card, "00A40000020005")
    authenticate(card, 0x01, DEMO_KEYS["df_read"])
    ok(card, build(0x00, 0xE2, 0x00, 0x00, b"\x01\x02AB"))
    assert ok(card, "00B2010000") == b"\x01\x08DEMO0001"         # first
    assert ok(card, "00B2010200") == b"\x01\x02AB"                # next after current
    assert ok(card, "00B2010300") == b"\x01\x08DEMO0001"          # previous
    assert ok(card, "00B2010100") == b"\x01\x02AB"                # last


def test_update_record_both_ways(card):
    select_demo(card)
    assert authenticate(card, 0x01, DEMO_KEYS["df_read"]) == 0x9000
    ok(card, build(0x00, 0xDC, 0x01, 0x2C, b"\x01\x08DEMO0002"))          # number, SFI 5
    assert ok(card, "00B2012C00") == b"\x01\x08DEMO0002"
    ok(card, build(0x00, 0xDC, 0x02, 0x28, b"\x02\x043.00"))              # tag, SFI 5
    assert ok(card, "00B2022C00") == b"\x02\x043.00"
    assert sw(card, build(0x00, 0xDC, 0x02, 0x28, b"\x01\x04XXXX")) == SW.WRONG_DATA


def _scratch(card, spec):
    select_demo(card)
    assert authenticate(card, 0x00, DEMO_KEYS["df_master"]) == 0x9000
    ok(card, fmcos.create_file(spec))
    ok(card, "00A4000002" + f"{spec.fid:04X}")


def test_cyclic_file_rotates_newest_first(card):
    _scratch(card, CyclicEF(0x0008, read_right=0x00, write_right=0x00, count=3, rec_len=4))
    for i in range(5):
        ok(card, build(0x00, 0xE2, 0x00, 0x00, bytes([i] * 4)))
    assert [ok(card, f"00B20{n}0400") for n in (1, 2, 3)] == [bytes([4] * 4), bytes([3] * 4), bytes([2] * 4)]
    assert sw(card, "00B2040400") == SW.RECORD_NOT_FOUND
    assert sw(card, build(0x00, 0xDC, 0x01, 0x04, bytes(4))) == SW.CONDITIONS_NOT_SATISFIED


def test_fixed_file_holds_count_records_of_fixed_length(card):
    _scratch(card, LinearFixedEF(0x0009, read_right=0x00, write_right=0x00, count=2, rec_len=3))
    assert sw(card, build(0x00, 0xE2, 0x00, 0x00, b"ab")) == SW.WRONG_LENGTH
    ok(card, build(0x00, 0xE2, 0x00, 0x00, b"abc"))
    ok(card, build(0x00, 0xE2, 0x00, 0x00, b"def"))
    assert sw(card, build(0x00, 0xE2, 0x00, 0x00, b"ghi")) == SW.NOT_ENOUGH_MEMORY
    ok(card, build(0x00, 0xDC, 0x02, 0x04, b"xyz"))
    assert ok(card, "00B2020400") == b"xyz"


def test_variable_file_space_is_enforced(card):
    _scratch(card, VariableRecordEF(0x000A, read_right=0x00, write_right=0x00, size=10))
    ok(card, build(0x00, 0xE2, 0x00, 0x00, b"\x01\x06abcdef"))
    assert sw(card, build(0x00, 0xE2, 0x00, 0x00, b"\x02\x01z")) == SW.NOT_ENOUGH_MEMORY


# ---- transparent files ------------------------------------------------------------------

def test_binary_read_write_offsets_and_le(card):
    _scratch(card, TransparentEF(0x000B, read_right=0x00, write_right=0x00, size=300))
    assert ok(card, "00B0000000") == bytes(256)                 # Le 00: up to 256
    assert ok(card, "00B0010000") == bytes(44)                  # offset 256: to the end
    assert sw(card, "00B0012C00") == SW.OFFSET_BEYOND_FILE
    assert sw(card, "00B0010030") == 0x6C2C                     # Le beyond the end: exact length
    ok(card, "00D6012A02ABCD")
    assert ok(card, "00B0012A02") == b"\xab\xcd"
    assert sw(card, "00D6012B02ABCD") == SW.WRONG_LENGTH       # would pass the end
    assert ok(card, "00B08B0002") == bytes(2)                   # SFI 0B in P1, offset in P2


def test_binary_commands_on_a_record_file_are_refused(card):
    select_demo(card)
    assert sw(card, "00B0850000") == SW.CONDITIONS_NOT_SATISFIED
    assert sw(card, "00B2012400") == SW.FILE_NOT_FOUND           # SFI 4 does not exist
