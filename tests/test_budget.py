"""The EEPROM budget: capacity from the profile, every object costs bytes, 6A84 creates nothing."""

from cardos import CosConfig
from cardos import sw as SW
from cardos.files import DedicatedFile, KeyFile, KeyRecord, TransparentEF
from personalize import fmcos
from personalize.demo import blank_card
from personalize.demo import demo_keys
from personalize.keys import KeyRef
from personalize.script import Authenticate, run
from reader_bridge.transport import InProcess
from tests.util import ok, sw


def _erased(capacity):
    card = blank_card(CosConfig(capacity=capacity))
    run(InProcess(card).transmit, [Authenticate(0, KeyRef("FACTORY")), fmcos.Step(fmcos.erase_df(), "")], demo_keys())
    return card


def test_capacity_comes_from_the_config_and_over_budget_creates_nothing():
    card = _erased(4096)
    assert card.fs.used() == 11 and card.fs.free((0x3F00,)) == 4096 - 11
    ok(card, fmcos.create_file(TransparentEF(0x0001, size=4000)))         # 4008 bytes
    assert card.fs.used() == 11 + 4008
    before = dict(card.store.data)
    assert sw(card, fmcos.create_file(TransparentEF(0x0002, size=70))) == SW.NOT_ENOUGH_MEMORY
    assert card.store.data == before
    ok(card, fmcos.create_file(TransparentEF(0x0002, size=69)))          # exactly fills the card
    assert card.fs.free((0x3F00,)) == 0


def test_a_df_reserves_its_space_and_children_live_inside_it():
    card = _erased(32768)
    ok(card, fmcos.create_file(DedicatedFile(0xDF0A, size=200, name=b"EXT.AREA")))
    assert card.fs.used() == 11 + 11 + 8 + 200
    ok(card, fmcos.select_fid(0xDF0A))
    ok(card, fmcos.create_file(TransparentEF(0x0001, size=150)))          # 158 of 200
    assert sw(card, fmcos.create_file(TransparentEF(0x0002, size=40))) == SW.NOT_ENOUGH_MEMORY
    ok(card, fmcos.create_file(TransparentEF(0x0002, size=34)))           # 200 of 200


def test_key_file_space_holds_key_length_plus_8_each():
    card = _erased(32768)
    ok(card, fmcos.create_file(KeyFile(0x0000, size=48)))
    key = lambda i: KeyRecord(0x39, i, 0xF0, 0xF0, bytes(16), next_state=1, max_tries=3, tries_left=3)  # noqa: E731
    ok(card, fmcos.write_key(key(1)))
    ok(card, fmcos.write_key(key(2)))
    assert sw(card, fmcos.write_key(key(3))) == SW.NOT_ENOUGH_MEMORY
