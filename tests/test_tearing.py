"""Anti-tearing: power cut before every EEPROM write step of a command leaves old or new state."""

import pytest

from cardos import image
from cardos.apdu import build
from cardos.files import KeyRecord, TransparentEF
from cardos.nvm import PowerLoss
from personalize import fmcos
from personalize.demo import DEMO_KEYS, demo_card
from tests.util import authenticate, ok, select_demo, sw


def _prepare_record(card):
    select_demo(card)
    assert authenticate(card, 0x01, DEMO_KEYS["df_read"]) == 0x9000
    return build(0x00, 0xDC, 0x01, 0x2C, b"\x01\x08TORN0001")


def _prepare_key(card):
    select_demo(card)
    assert authenticate(card, 0x00, DEMO_KEYS["df_master"]) == 0x9000
    return fmcos.write_key(KeyRecord(0x39, 0x07, 0xF0, 0x33, bytes(range(16)), next_state=2, max_tries=3, tries_left=3))


def _prepare_wrong_pin(card):
    select_demo(card)
    return bytes.fromhex("0020000003999999")


def _prepare_create(card):
    select_demo(card)
    assert authenticate(card, 0x00, DEMO_KEYS["df_master"]) == 0x9000
    return fmcos.create_file(TransparentEF(0x0011, read_right=0x00, write_right=0x00, size=64))


def _states(prepare):
    card = demo_card()
    apdu = prepare(card)
    before = dict(card.store.data)
    card.store.steps = 0
    assert card.transmit(apdu)[-2:] in (b"\x90\x00", b"\x63\xc5")
    return before, dict(card.store.data), card.store.steps


@pytest.mark.parametrize("prepare", [_prepare_record, _prepare_key, _prepare_wrong_pin, _prepare_create],
                         ids=["UPDATE RECORD", "WRITE KEY", "VERIFY wrong PIN", "CREATE FILE"])
@pytest.mark.parametrize("via_image", [False, True], ids=["in RAM", "through a saved image"])
def test_power_cut_at_every_write_step(prepare, via_image, tmp_path):
    before, after, steps = _states(prepare)
    assert before != after and steps >= 4
    outcomes = set()
    for cut in range(1, steps + 1):
        card = demo_card()
        apdu = prepare(card)
        card.store.arm_tear(cut)
        with pytest.raises(PowerLoss):
            card.transmit(apdu)
        if via_image:
            image.save(card, tmp_path / "torn.json")
            card = image.load(tmp_path / "torn.json")
        card.power_on()
        state = dict(card.store.data)
        assert state in (before, after), f"cut before write step {cut} of {steps} left a mixed state"
        outcomes.add("new" if state == after else "old")
        assert card.store.buffer == [] and not card.store.commit_flag
        assert sw(card, "00A40000023F00") == 0x9000
    assert outcomes == {"old", "new"}


def test_a_cut_after_the_pin_decrement_keeps_the_decrement():
    card = demo_card()
    select_demo(card)
    card.store.steps = 0
    ok(card, "0020000003123456")
    steps = card.store.steps                       # decrement commit + restore commit
    seen = set()
    for cut in range(1, steps + 1):
        card = demo_card()
        select_demo(card)
        card.store.arm_tear(cut)
        with pytest.raises(PowerLoss):
            card.transmit(bytes.fromhex("0020000003123456"))
        card.power_on()
        tries = card.fs.key((0x3F00, 0xDF01), 0x3A, 0x00).tries_left
        assert tries in (5, 6)
        seen.add(tries)
    assert seen == {5, 6}, "some cut must land after the decrement and before the restore"
