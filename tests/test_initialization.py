"""A complete FMCOS-style initialization replayed on a blank card, then the rights it set, proven."""

from cardos import sw as SW
from cardos.apdu import build
from cardos.files import (KEY_EXTERNAL, KEY_MAINTENANCE, KEY_PIN, DedicatedFile, KeyFile, KeyRecord,
                          TransparentEF, VariableRecordEF)
from cardos.tlv import simple_record
from personalize import fmcos
from personalize.compiler import FACTORY_KEY
from personalize.demo import FACTORY_KEY_VALUE
from personalize.demo import demo_keys
from personalize.keys import KeyRef
from personalize.script import Authenticate, run
from reader_bridge.transport import InProcess
from tests.util import authenticate, ok, sw

MF_KEY = bytes.fromhex("11" * 16)
DF_KEY = bytes.fromhex("22" * 16)
UPDATE_KEY = bytes.fromhex("44" * 16)
LP_KEY = bytes.fromhex("36" * 16)


def _script():
    df = DedicatedFile(0xDF03, size=0x400, create_right=0x33, erase_right=0x33, name=b"TEST.APP.01")
    return [
        Authenticate(0x00, KeyRef(FACTORY_KEY), "factory key"),
        fmcos.Step(fmcos.erase_df(), "erase"),
        fmcos.Step(fmcos.create_file(KeyFile(0x0000, size=0x60, add_right=0x0F)), "MF key file"),
        fmcos.Step(fmcos.write_key(KeyRecord(KEY_EXTERNAL, 0, 0xF0, 0x0F, MF_KEY, next_state=0xF,
                                             max_tries=5, tries_left=5)), "MF key 39", secret=True),
        fmcos.Step(fmcos.write_key(KeyRecord(KEY_MAINTENANCE, 0, 0xF0, 0x0F, LP_KEY, max_tries=5,
                                             tries_left=5)), "MF key 36", secret=True),
        fmcos.Step(fmcos.create_file(TransparentEF(0x0001, read_right=0x00, write_right=0x0F, size=8)), "MF EF"),
        fmcos.Step(fmcos.create_file(df), "create DF"),
        fmcos.Step(fmcos.select_fid(0xDF03), "select DF"),
        fmcos.Step(fmcos.create_file(KeyFile(0x0000, size=0x100, add_right=0x33)), "DF key file"),
        fmcos.Step(fmcos.write_key(KeyRecord(KEY_EXTERNAL, 0, 0xF0, 0x33, DF_KEY, next_state=3,
                                             max_tries=3, tries_left=3)), "DF master", secret=True),
        fmcos.Step(fmcos.write_key(KeyRecord(KEY_EXTERNAL, 4, 0xF0, 0x33, UPDATE_KEY, next_state=2,
                                             max_tries=3, tries_left=3)), "update key 04", secret=True),
        fmcos.Step(fmcos.write_key(KeyRecord(KEY_PIN, 0, 0xF0, 0xEF, bytes.fromhex("123456"), next_state=1,
                                             max_tries=6, tries_left=6)), "PIN", secret=True),
        fmcos.Step(fmcos.create_file(VariableRecordEF(0x0005, read_right=0x00, write_right=0x22, size=40)), "EF05"),
        fmcos.Step(fmcos.create_file(TransparentEF(0x0007, read_right=0x11, write_right=0xEF, size=4)), "EF07"),
        fmcos.Step(build(0x00, 0xE2, 0x00, 0x28, simple_record(0x01, b"HELLO")), "data"),
        fmcos.Step(build(0x00, 0xD6, 0x87, 0x00, b"ABCD"), "data"),
    ]


def test_initialization_then_rights_hold(blank):
    log = run(InProcess(blank).transmit, _script(), demo_keys())
    assert all(ex.sw == 0x9000 for ex in log)
    blank.power_on()                                     # a new session: the key files now lock
    card = blank
    ok(card, "00A4040009" + b"TEST.APP.".hex())           # truncated name also selects
    # always-readable record file; write refused before key 04, granted after
    assert ok(card, "00B2012C00") == b"\x01\x05HELLO"
    update = build(0x00, 0xDC, 0x01, 0x2C, simple_record(0x01, b"WORLD"))
    assert sw(card, update) == SW.SECURITY_NOT_SATISFIED
    assert authenticate(card, 0x04, UPDATE_KEY) == 0x9000
    ok(card, update)
    # the PIN-gated file: refused, then served after VERIFY; its write right is EF: never
    assert sw(card, "00B0870000") == SW.SECURITY_NOT_SATISFIED
    ok(card, "0020000003123456")
    assert ok(card, "00B0870000") == b"ABCD"
    assert sw(card, build(0x00, 0xD6, 0x87, 0x00, b"ZZZZ")) == SW.SECURITY_NOT_SATISFIED
    assert authenticate(card, 0x00, DF_KEY) == 0x9000
    assert sw(card, build(0x00, 0xD6, 0x87, 0x00, b"ZZZZ")) == SW.SECURITY_NOT_SATISFIED  # never is never
    # creating is for the DF master only; the MF needs its own key for its EF and its creations
    assert sw(card, fmcos.create_file(TransparentEF(0x0009, size=4))) == 0x9000
    ok(card, "00A40000023F00")
    assert sw(card, build(0x00, 0xD6, 0x81, 0x00, b"x")) == SW.SECURITY_NOT_SATISFIED
    assert sw(card, fmcos.create_file(TransparentEF(0x0002, size=4))) == SW.SECURITY_NOT_SATISFIED
    assert sw(card, fmcos.erase_df()) == SW.SECURITY_NOT_SATISFIED
    assert authenticate(card, 0x00, MF_KEY) == 0x9000
    ok(card, build(0x00, 0xD6, 0x81, 0x00, b"x"))
    # the factory key is gone with the erase
    assert authenticate(card, 0x00, FACTORY_KEY_VALUE) == 0x63C4


def test_fresh_df_accepts_everything_until_it_is_entered_again(blank):
    run(InProcess(blank).transmit, [Authenticate(0x00, KeyRef(FACTORY_KEY)), fmcos.Step(fmcos.erase_df(), "")], demo_keys())
    card = blank
    ok(card, fmcos.create_file(KeyFile(0x0000, size=0x40, add_right=0xEF)))
    ok(card, fmcos.write_key(KeyRecord(KEY_EXTERNAL, 0, 0xF0, 0xEF, MF_KEY, next_state=1, max_tries=3, tries_left=3)))
    ok(card, fmcos.create_file(TransparentEF(0x0001, read_right=0xEF, write_right=0xEF, size=4)))
    ok(card, "00B0810000")                                   # still fresh in this session
    card.power_on()
    assert sw(card, "00B0810000") == SW.SECURITY_NOT_SATISFIED
    assert sw(card, fmcos.create_file(TransparentEF(0x0002, size=4))) == SW.SECURITY_NOT_SATISFIED
