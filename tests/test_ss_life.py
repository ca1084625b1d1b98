"""A card's whole life, the independence of its two PINs and of its departments, and 3.00 access."""

import pytest

from cardos.apdu import build
from cardos.files import DedicatedFile, KeyFile, KeyRecord, TransparentEF
from personalize import fmcos, lifecycle
from personalize.readout import read_card
from personalize.script import ScriptError
from reader_bridge.transport import InProcess
from tests.ss import SELECT_SSSE, card, factor, keys, open_key, prof
from tests.util import ok, sw, tx

SELECT_BANK = "00A4040008A000000333010101"


def life(c, op, **kw):
    return lifecycle.perform(InProcess(c), lifecycle.life_script(op, prof(), factor(c), **kw), keys())


def pin_op(c, op, account="ss", old="", new=""):
    return lifecycle.perform(InProcess(c), lifecycle.pin_script(op, prof(), factor(c), keys(), account, old, new), keys())


def test_the_whole_life_of_a_card():
    c = card()
    ok(c, SELECT_SSSE)
    assert sw(c, "0020000003123456") == 0x6985                    # issued, not yet activated
    life(c, "activate")
    ok(c, SELECT_SSSE)
    assert [sw(c, "0020000003999999") for _ in range(5)] == [0x63C5, 0x63C4, 0x63C3, 0x63C2, 0x63C1]
    assert sw(c, "0020000003123456") == 0x9000                    # right PIN restores the counter
    assert sw(c, "00200000") == 0x63C6
    assert [sw(c, "0020000003999999") for _ in range(6)][-1] == 0x63C0
    assert sw(c, "0020000003123456") == 0x6983                    # locked
    pin_op(c, "reset", new="246800")                               # at the counter, with the issuer key
    ok(c, SELECT_SSSE)
    assert sw(c, "0020000003123456") == 0x63C5                    # the old PIN is gone, not revealed
    assert sw(c, "0020000003246800") == 0x9000
    life(c, "report-loss")
    assert sw(c, SELECT_SSSE) == 0x6A81 and sw(c, SELECT_BANK) == 0x6A81
    seen = read_card(InProcess(c), prof())                         # a finder reads nothing personal
    assert "ssn" not in seen.items and any(r.endswith("6A81") for r in seen.refused)
    life(c, "unreport")
    assert sw(c, SELECT_SSSE) == 0x9000 and sw(c, "0020000003246800") == 0x9000
    assert read_card(InProcess(c), prof()).life == {"ssse": "active", "financial": "active"}
    life(c, "report-loss", reason="formal loss report")
    life(c, "replace", reason="formal loss report, replaced")
    assert sw(c, SELECT_SSSE) == 0x9303 and sw(c, SELECT_BANK) == 0x9303
    assert sw(c, "0020000003246800") == 0x9303
    with pytest.raises(ScriptError, match="9303"):
        life(c, "unreport")                                        # no way back after replacement
    c.power_on()
    assert sw(c, SELECT_SSSE) == 0x9303
    assert tx(c, "00A40000023F00")[1] == 0x9000                   # the chip still answers


def test_unblock_pin_with_the_issuer_key_keeps_the_pin():
    c = card()
    life(c, "activate")
    ok(c, SELECT_SSSE)
    for _ in range(6):
        sw(c, "0020000003999999")
    pin_op(c, "unblock")
    ok(c, SELECT_SSSE)
    assert sw(c, "0020000003123456") == 0x9000


def test_the_two_pins_are_independent():
    c = card()
    life(c, "activate")
    ok(c, SELECT_BANK)
    assert ok(c, "80CA9F1700") == bytes.fromhex("9F170103")
    ok(c, SELECT_SSSE)
    for _ in range(6):
        sw(c, "0020000003999999")
    assert sw(c, "0020000003123456") == 0x6983
    ok(c, SELECT_BANK)
    assert ok(c, "80CA9F1700") == bytes.fromhex("9F170103")      # untouched by the SS lock
    assert sw(c, "0020008008268888 88FFFFFFFF".replace(" ", "")) == 0x9000
    assert [sw(c, "00200080082612345 6FFFFFFFF".replace(" ", "")) for _ in range(3)] == [0x63C2, 0x63C1, 0x63C0]
    assert ok(c, "80CA9F1700") == bytes.fromhex("9F170100")
    pin_op(c, "reset", new="123456")                                # resetting the SS PIN …
    ok(c, SELECT_BANK)
    assert sw(c, "0020008008268888 88FFFFFFFF".replace(" ", "")) == 0x6983  # … leaves the bank PIN locked
    pin_op(c, "reset", account="bank", new="135790")
    ok(c, SELECT_BANK)
    assert sw(c, "0020008008261357 90FFFFFFFF".replace(" ", "")) == 0x9000
    ok(c, SELECT_SSSE)
    assert sw(c, "0020000003123456") == 0x9000


def test_financial_application_as_terminals_read_it():
    c = card()
    assert tx(c, "00A404000E" + b"1PAY.SYS.DDF01".hex())[1] == 0x9000
    assert ok(c, "00B2010C00")[:4] == bytes.fromhex("701B6119")
    fci = ok(c, "00A404000E" + b"2PAY.SYS.DDF01".hex() + "00")
    assert bytes.fromhex("A000000333010101") in fci
    ok(c, SELECT_BANK)
    gpo = ok(c, "80A8000002830000")
    assert gpo == bytes.fromhex("800E5C00" "08010100" "10010201" "20010200")  # SFI 3 (a second PAN) stays outside
    rec = ok(c, "00B2011400")
    assert bytes.fromhex("5A086217990000123453") in rec
    assert bytes.fromhex("5A086217990000123453") in ok(c, "00B2011C00")
    assert sw(c, "00B2011402") == 0x6C00 | len(rec)               # short Le: exact length, then resend


# ---- extension area -------------------------------------------------------------------------

DEPTS = {"health": (0x25, 0xDF05), "civil": (0x26, 0xDF06), "housing": (0x2A, 0xDF0A)}


def _create_department_app(c, dept: str, key_value: bytes) -> int:
    key_id, fid = DEPTS[dept]
    ok(c, SELECT_SSSE)
    assert open_key(c, "default", "ssse", key_id) == 0x9000
    status = sw(c, fmcos.create_file(DedicatedFile(fid, size=0x200, create_right=0x11, erase_right=0x11,
                                                   name=f"EXT.{dept.upper()}".encode())))
    if status != 0x9000:
        return status
    ok(c, fmcos.select_fid(fid))                                     # fresh: the department builds it
    ok(c, fmcos.create_file(KeyFile(0x0000, size=0x40, add_right=0x11)))
    ok(c, fmcos.write_key(KeyRecord(0x39, 0x00, 0xF0, 0x11, key_value, next_state=1, max_tries=3, tries_left=3)))
    ok(c, fmcos.create_file(TransparentEF(0x0001, read_right=0x11, write_right=0x11, size=16)))
    ok(c, build(0x00, 0xD6, 0x81, 0x00, dept.encode().ljust(16, b"\0")))
    return 0x9000


def _auth_literal(c, key_id, value):
    from cardos.crypto import Algorithm
    from tests.util import challenge, external_authenticate_apdu
    return sw(c, external_authenticate_apdu(Algorithm.TDES, value, challenge(c), key_id))


def test_departments_create_their_own_apps_and_cannot_touch_each_other():
    c = card()
    health_key, civil_key = bytes([0x55] * 16), bytes([0x66] * 16)
    assert _create_department_app(c, "health", health_key) == 0x9000
    assert _create_department_app(c, "civil", civil_key) == 0x9000
    c.power_on()
    # health's key cannot create civil's or housing's DF …
    ok(c, SELECT_SSSE)
    assert open_key(c, "default", "ssse", 0x25) == 0x9000
    assert sw(c, fmcos.create_file(DedicatedFile(0xDF0A, size=0x100, name=b"EXT.SQUAT"))) == 0x6982
    # … nor read or change civil's files: in DF06 only civil's own key opens them
    ok(c, "00A4000002DF06")
    assert sw(c, "00B0810000") == 0x6982
    assert _auth_literal(c, 0x00, health_key) == 0x63C2
    assert open_key(c, "default", "ssse", 0x25) == 0x9000          # health's SSSE key, found above
    assert sw(c, "00B0810000") == 0x6982
    assert sw(c, build(0x00, 0xD6, 0x81, 0x00, b"x")) == 0x6982
    assert _auth_literal(c, 0x00, civil_key) == 0x9000
    assert ok(c, "00B0810005") == b"civil"
    # the housing fund may still create its DF, but no larger than its share
    ok(c, SELECT_SSSE)
    assert open_key(c, "default", "ssse", 0x2A) == 0x9000
    assert sw(c, fmcos.create_file(DedicatedFile(0xDF0A, size=0x900, name=b"EXT.HOUSING"))) == 0x6A84
    # without any department key nobody creates there
    ok(c, SELECT_SSSE)
    assert sw(c, fmcos.create_file(DedicatedFile(0xDF05, size=0x100, name=b"EXT.OTHER1"))) == 0x6982


def test_extension_space_runs_out_with_6a84():
    c = card()
    ok(c, SELECT_SSSE)
    ssse = c.session.current_df
    free = c.fs.free(ssse)
    assert free == 6144
    assert open_key(c, "default", "ssse", 0x25) == 0x9000
    ok(c, fmcos.create_file(DedicatedFile(0xDF05, size=0x800, name=b"EXT.HEALTH")))
    ok(c, SELECT_SSSE)
    assert open_key(c, "default", "ssse", 0x26) == 0x9000
    ok(c, fmcos.create_file(DedicatedFile(0xDF06, size=0x800, name=b"EXT.CIVIL")))
    ok(c, SELECT_SSSE)
    assert open_key(c, "default", "ssse", 0x2A) == 0x9000
    left = c.fs.free(ssse)
    before = dict(c.store.data)
    assert sw(c, fmcos.create_file(DedicatedFile(0xDF0A, size=left, name=b"EXT.HOUSING"))) == 0x6A84
    assert c.store.data == before, "a refused CREATE FILE must create nothing"
    assert c.fs.free(ssse) == left
    ok(c, SELECT_SSSE)
    assert sw(c, bytes.fromhex("00A40000 02DF0A".replace(" ", ""))) == 0x6A82


# ---- 3.00 -----------------------------------------------------------------------------------

def test_3_00_card_refuses_personal_data_before_authentication_and_serves_after():
    c = card("sm4-3.00")
    ok(c, SELECT_SSSE)
    assert find_flag(ok(c, SELECT_SSSE)) == b"\x86\x01\x03"
    assert sw(c, "00B2013400") == 0x6982
    assert sw(c, "00B2052C00") == 0x6982 and sw(c, "00B2062C00") == 0x6982
    assert ok(c, "00B2072C00")[:2] == b"\x07\x09"                 # the card number stays free
    r = read_card(InProcess(c), prof("sm4-3.00"), keys("sm4-3.00"))
    assert r.authenticated and r.items["ssn"] == "330302199003071215" and r.items["issue_date"] == "20240115"
    assert not r.refused


def find_flag(fci: bytes) -> bytes:
    from cardos.tlv import find
    return find(fci, 0x9F0C)


def test_3_00_read_without_keys_says_what_was_refused():
    from personalize.readout import PERSONAL_3_00
    c = card("sm4-3.00")
    r = read_card(InProcess(c), prof("sm4-3.00"), None)
    assert r.refused == [PERSONAL_3_00]                            # said once, with why, not as empty fields
    assert "key 0A" in PERSONAL_3_00 and "--psam" in PERSONAL_3_00
    assert r.items["card_number"] == "A02796279" and "ssn" not in r.items


def test_3_00_read_out_refuses_a_card_whose_internal_authentication_does_not_check():
    from personalize.keys import SoftwareKeys
    from personalize.readout import ReadError
    masters = dict(keys("sm4-3.00")._masters)
    masters["IK_SSSE"] = (masters["IK_SSSE"][0], bytes(16), 1)     # the terminal's idea of the key is wrong
    with pytest.raises(ReadError, match="not a genuine card"):
        read_card(InProcess(card("sm4-3.00")), prof("sm4-3.00"), SoftwareKeys(masters))
