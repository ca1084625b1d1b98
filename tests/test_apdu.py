"""Short APDU parsing: the four cases, and lengths that fit none."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cardos import sw
from cardos.apdu import build, parse
from cardos.sw import CardError


def test_parse_tells_the_four_iso_cases_and_reads_le_00_as_256():
    assert parse(bytes.fromhex("00A40000")).case == 1
    a = parse(bytes.fromhex("0084000008"))
    assert (a.case, a.le) == (2, 8)
    assert parse(bytes.fromhex("00B0000000")).le == 256
    b = parse(bytes.fromhex("00A40000023F00"))
    assert (b.case, b.data) == (3, b"\x3f\x00")
    c = parse(bytes.fromhex("00A40000023F0000"))
    assert (c.case, c.le) == (4, 256)


@pytest.mark.parametrize("raw", ["", "00", "00A400", "00A40000023F", "00A40000023F000000", "00A4000000AABB"])
def test_malformed_lengths_are_6700(raw):
    with pytest.raises(CardError) as e:
        parse(bytes.fromhex(raw))
    assert e.value.sw == sw.WRONG_LENGTH


@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.integers(0, 255),
       st.one_of(st.none(), st.binary(min_size=1, max_size=255)), st.one_of(st.none(), st.integers(1, 256)))
def test_build_parse_round_trip(cla, ins, p1, p2, data, le):
    a = parse(build(cla, ins, p1, p2, data, le))
    assert (a.cla, a.ins, a.p1, a.p2, a.data, a.le) == (cla, ins, p1, p2, data or b"", le)
    assert a.case == (3 if data else 1) + (le is not None)


def test_data_object_lists_and_tag_lists_parse_one_and_two_byte_tags():
    from cardos.tlv import TlvError, parse_dol, parse_tag_list
    assert parse_dol(bytes.fromhex("9F02069F1A0295055F2A02")) == [(0x9F02, 6), (0x9F1A, 2), (0x95, 5), (0x5F2A, 2)]
    assert parse_tag_list(bytes.fromhex("829F37")) == [0x82, 0x9F37]
    for broken in ("9F02", "9F"):
        with pytest.raises(TlvError):
            parse_dol(bytes.fromhex(broken))
