"""Access conditions of the social security card's files (spec §4, data-items.md)."""

from cardos.apdu import build
from personalize import lifecycle
from personalize.readout import read_card
from reader_bridge.transport import InProcess
from tests.ss import SELECT_SSSE, card, factor, keys, open_key, prof
from tests.util import ok, secured, sw


def _activate(c):
    lifecycle.perform(InProcess(c), lifecycle.life_script("activate", prof(), factor(c)), keys())


def test_fingerprint_and_photo_need_key_0a():
    c = card()
    ok(c, SELECT_SSSE)
    assert sw(c, "00B0870000") == 0x6982 and sw(c, "00B0880000") == 0x6982
    assert open_key(c, "default", "ssse", 0x0A) == 0x9000
    assert ok(c, "00B0870000") == bytes(256) and ok(c, "00B08800FF") == bytes(255)
    assert open_key(c, "default", "ssse", 0x04) == 0x9000          # another key's state does not read them
    assert sw(c, "00B0880000") == 0x6982


def test_df01_files_after_the_pin_and_its_reserved_files_free():
    c = card()
    _activate(c)
    ok(c, "00A4040006D15600000500")
    assert sw(c, "00B2012C00") == 0x6982
    assert ok(c, "00B0960004") == bytes(4)                          # EF16: reserved, free
    assert sw(c, "0020000003123456") == 0x9000                      # the SSSE PIN, found above DF01
    assert ok(c, "00B2012C00")[:2] == b"\x20\x02"
    ok(c, "00A4040006D15600000500")                                 # reselecting forgets the PIN
    assert sw(c, "00B2012C00") == 0x6982


def test_df04_transaction_log_is_a_30_record_cyclic_file_written_after_the_pin():
    c = card()
    _activate(c)
    ok(c, "00A4040006D15600000503")
    entry = lambda i: bytes([0, i]) + b"1" + bytes(25)  # noqa: E731
    assert sw(c, build(0x00, 0xE2, 0x00, 0x08 << 3, entry(0))) == 0x6982
    ok(c, "0020000003123456")
    for i in range(32):
        ok(c, build(0x00, 0xE2, 0x00, 0x08 << 3, entry(i)))
    assert ok(c, "00B2014400") == entry(31)
    assert ok(c, "00B21E4400") == entry(2)
    assert sw(c, "00B21F4400") == 0x6A83


def test_ef05_update_under_mac_with_the_line_protection_key():
    c = card()
    ok(c, SELECT_SSSE)
    _, ssse = prof().role("ssse")
    lk = next(k for k in ssse.keys if k.type == 0x36)
    from personalize.compiler import card_key
    ref = card_key(lk, factor(c))
    value = keys().value_for_plain_load(ref)
    record = b"\x02\x01" + b"5"
    assert secured(c, 0x04, 0xDC, 0x02, 0x2C, record, bytes(16)) == 0x6988
    assert secured(c, 0x04, 0xDC, 0x02, 0x2C, record, value) == 0x9000
    assert ok(c, "00B2022C00") == record


def test_every_row_of_the_spec_table_reads_back_decoded():
    r = read_card(InProcess(card()), prof())
    assert r.items["card_id"].startswith("330300D156000005") and len(r.items["card_id"]) == 32
    assert {k: r.items[k] for k in ("card_type", "init_org", "issue_date", "expiry_date", "card_number", "ssn",
                                    "sex", "ethnicity", "birthplace", "birth_date")} == {
        "card_type": "3", "init_org": "330300000001", "issue_date": "20240115", "expiry_date": "20340115",
        "card_number": "A02796279", "ssn": "330302199003071215", "sex": "1", "ethnicity": "01",
        "birthplace": "330302", "birth_date": "19900307"}
    assert r.generation == "2.00" and r.full_name == "张小燕" and r.items["name_extension"] == ""


def test_a_long_name_splits_into_09_and_4e_and_joins_back():
    name = "阿卜杜热合曼·买买提艾力克木·阿不都"
    c = card(name=name)
    r = read_card(InProcess(c), prof())
    assert r.full_name == name and r.items["name_extension"]
    ok(c, SELECT_SSSE)
    assert len(ok(c, "00B2093000")) == 32 and ok(c, "00B24E3000")[0] == 0x4E
