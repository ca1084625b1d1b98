"""The social security card of the default profile: every item of spec §2, byte for byte,
read every way terminals read it."""

import pytest

from applets.encoding import card_number_check, id_check_digit
from personalize.cardholders import sample
from tests.ss import SELECT_SSSE, card, open_key
from tests.util import ok, sw, tx

H = sample()
GBK_NAME = H["name"].encode("gbk")

def expected_ef05(c):
    """Record values (after tag and length) of every EF05 row of spec §2's table."""
    serial = c.atr[-8:]
    return {
        0x01: bytes.fromhex("330300D156000005") + serial,
        0x02: b"3",
        0x03: b"2.00",
        0x04: bytes.fromhex("330300000001" + "F" * 12),
        0x05: bytes.fromhex("20240115"),
        0x06: bytes.fromhex("20340115"),
        0x07: b"A02796279",
    }


EF06 = {  # every EF06 row of spec §2's table, 2.00 order
    0x08: b"330302199003071215",
    0x09: GBK_NAME + bytes(30 - len(GBK_NAME)),
    0x4E: bytes(20),
    0x0A: b"1",                     # the ID's 17th digit is odd: GB 11643 says male
    0x0B: bytes.fromhex("01"),
    0x0C: bytes.fromhex("330302"),
    0x0D: bytes.fromhex("19900307"),
}


def test_every_item_byte_for_byte_by_number_and_by_tag():
    c = card()
    ok(c, SELECT_SSSE)
    for sfi, items in ((5, expected_ef05(c)), (6, EF06)):
        for number, (tag, value) in enumerate(items.items(), 1):
            record = bytes([tag, len(value)]) + value
            assert ok(c, f"00B2{number:02X}{(sfi << 3) | 4:02X}00") == record, (sfi, tag)
            assert ok(c, f"00B2{tag:02X}{sfi << 3:02X}00") == record, (sfi, tag)


def test_spec_examples_verbatim():
    c = card()
    ok(c, SELECT_SSSE)
    data, status = tx(c, "00B2072C0B")
    assert status == 0x9000 and data[:2] == b"\x07\x09" and len(data) == 11
    assert tx(c, "00B2013414")[0][:2] == b"\x08\x12"
    assert tx(c, "00B2083014") == tx(c, "00B2013414")
    assert tx(c, "00B24E3016")[0][:2] == b"\x4e\x14"


# The check functions are judged on numbers published elsewhere, never on the sample they made valid.
@pytest.mark.parametrize("number", ["X00000019", "B07541184", "A02796279"])   # data-items.md's public samples
def test_card_number_check_holds_on_the_public_samples(number):
    assert card_number_check(number[:8]) == int(number[8])


@pytest.mark.parametrize("ssn", ["11010519491231002X", "440524188001010014"])  # GB 11643's worked examples
def test_id_check_digit_holds_on_the_standards_examples(ssn):
    assert id_check_digit(ssn[:17]) == ssn[17]


def test_the_sample_cardholder_is_the_one_the_layout_expects():
    assert H["card_number"] == "A02796279" and H["ssn"] == EF06[0x08].decode()


@pytest.mark.parametrize("gen, records", [
    ("default", [0x08, 0x09, 0x4E, 0x0A, 0x0B, 0x0C, 0x0D]),
    ("ss-1.00", [0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D]),
])
def test_ef06_record_order_follows_the_generation(gen, records):
    c = card(gen)
    ok(c, SELECT_SSSE)
    assert [ok(c, f"00B2{n:02X}3400")[0] for n in range(1, len(records) + 1)] == records
    assert sw(c, f"00B2{len(records) + 1:02X}3400") == 0x6A83
    if gen == "ss-1.00":
        assert sw(c, "00B24E3000") == 0x6A83
        assert ok(c, "00B2032C00") == b"\x03\x041.00"


@pytest.mark.parametrize("gen", ["default", "ss-1.00"])
@pytest.mark.parametrize("select", ["00A4000002EF05", "00A4020002EF05"])
def test_terminal_ways_to_read_ef05(gen, select):
    c = card(gen)
    ok(c, SELECT_SSSE)
    assert tx(c, select) == (b"", 0x9000)
    number = ok(c, "00B2070400")                     # current EF, record number, Le 00
    assert number[:2] == b"\x07\x09"
    assert ok(c, "00B20704FF") == number             # Le larger than the record
    assert ok(c, "00B2070000") == number             # record identifier = tag, current EF
    assert ok(c, "00B2072800") == number             # identifier with SFI
    assert sw(c, "00B2070409") == 0x6C0B             # Le of the value only
    assert ok(c, "00B207040B") == number             # the re-send succeeds


@pytest.mark.parametrize("gen", ["default", "ss-1.00"])
def test_sfi_read_without_select_and_update_both_ways(gen):
    c = card(gen)
    ok(c, SELECT_SSSE)
    assert ok(c, "00B2013414")[:2] == b"\x08\x12"
    new = b"\x0a\x011"
    assert sw(c, "00DC0334" + "03" + new.hex()) == 0x6982          # key 04 first
    assert open_key(c, gen, "ssse", 0x04) == 0x9000
    sex_record = 4 if gen == "default" else 3
    ok(c, f"00DC{sex_record:02X}3403" + new.hex())
    assert ok(c, "00B20A3000") == new
    ok(c, "00DC0A3003" + b"\x0a\x012".hex())
    assert ok(c, f"00B2{sex_record:02X}3400") == b"\x0a\x012"
