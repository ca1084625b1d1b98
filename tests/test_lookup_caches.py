"""The card's lookup caches (DF by name, a DF's key file) answer as the file tree stands now."""

import pytest

from cardos import sw as SW
from cardos.nvm import PowerLoss
from cardos.files import DedicatedFile, KeyFile, TransparentEF
from cardos.tlv import find
from personalize import fmcos
from personalize.demo import DEMO_KEYS
from tests.util import authenticate, ok, select_demo, sw, tx

SUB_NAME = b"SSCARD.SUB"
SUB = DedicatedFile(0xDF02, size=0x100, name=SUB_NAME)


def _create_sub(card) -> None:
    select_demo(card)
    assert authenticate(card, 0x00, DEMO_KEYS["df_master"]) == 0x9000
    ok(card, fmcos.create_file(SUB))


def test_a_name_not_found_is_found_once_its_df_exists(card):
    select_demo(card)
    assert sw(card, "00A404000A" + SUB_NAME.hex()) == SW.FILE_NOT_FOUND
    _create_sub(card)
    assert find(ok(card, "00A404000A" + SUB_NAME.hex()), 0x84) == SUB_NAME


def test_a_truncated_name_gives_way_to_an_exact_match_created_later(card):
    partial = b"SSCARD.D"
    select_demo(card)
    assert find(ok(card, "00A4040008" + partial.hex()), 0x84) == b"SSCARD.DEMO"
    assert authenticate(card, 0x00, DEMO_KEYS["df_master"]) == 0x9000
    ok(card, fmcos.create_file(DedicatedFile(0xDF03, size=0x40, name=partial)))
    assert find(ok(card, "00A4040008" + partial.hex()), 0x84) == partial


def test_a_df_entered_again_after_its_key_file_came_is_no_longer_fresh(card):
    _create_sub(card)
    ok(card, "00A404000A" + SUB_NAME.hex())
    ok(card, fmcos.create_file(TransparentEF(0x0001, read_right=0xEF, write_right=0xEF, size=4)))
    assert tx(card, "00B0810000") == (bytes(4), 0x9000)       # no key file: every right waived
    ok(card, "00A404000A" + SUB_NAME.hex())
    assert tx(card, "00B0810000") == (bytes(4), 0x9000)       # entered again, still no key file
    ok(card, fmcos.create_file(KeyFile(0x0000, size=0x40, add_right=0xEF)))
    ok(card, "00A404000A" + SUB_NAME.hex())
    assert sw(card, "00B0810000") == SW.SECURITY_NOT_SATISFIED


def test_a_df_whose_creation_was_torn_is_not_found_after_power_on(card):
    _create_sub(card)
    ok(card, "00A404000A" + SUB_NAME.hex())
    card.power_on()
    select_demo(card)
    assert authenticate(card, 0x00, DEMO_KEYS["df_master"]) == 0x9000
    other = DedicatedFile(0xDF03, size=0x40, name=b"SSCARD.TORN")
    assert sw(card, "00A404000B" + b"SSCARD.TORN".hex()) == SW.FILE_NOT_FOUND
    card.store.arm_tear(1)
    with pytest.raises(PowerLoss):
        card.transmit(fmcos.create_file(other))
    card.power_on()
    assert sw(card, "00A404000B" + b"SSCARD.TORN".hex()) == SW.FILE_NOT_FOUND
    assert find(ok(card, "00A404000A" + SUB_NAME.hex()), 0x84) == SUB_NAME


def test_the_blocked_application_check_sees_a_block_at_the_very_next_command(card):
    from tests.util import secured
    select_demo(card)
    for _ in range(3):
        assert sw(card, "00B2012C00") != SW.APPLICATION_BLOCKED   # the tree index is warm
    assert secured(card, 0x84, 0x1E, 0x00, 0x00, b"", DEMO_KEYS["df_maintenance"]) == 0x9000
    assert sw(card, "00B2012C00") == SW.APPLICATION_BLOCKED
    assert secured(card, 0x84, 0x18, 0x00, 0x00, b"", DEMO_KEYS["df_maintenance"]) == 0x9000
    assert sw(card, "00B2012C00") != SW.APPLICATION_BLOCKED


def test_a_block_staged_then_rolled_back_leaves_the_application_open(card):
    from cardos.filesystem import AppState
    select_demo(card)
    assert sw(card, "00B2012C00") != SW.APPLICATION_BLOCKED
    card.fs.set_app_state(card.session.current_df, AppState.BLOCKED)
    assert card.app_state() is AppState.BLOCKED
    card.store.rollback()
    assert sw(card, "00B2012C00") != SW.APPLICATION_BLOCKED


def test_records_by_sfi_follows_files_created_and_creations_torn(card):
    from cardos.files import VariableRecordEF
    _create_sub(card)
    ok(card, "00A404000A" + SUB_NAME.hex())
    sub = card.session.current_df
    assert card.fs.records_by_sfi(sub, 0x03) == card.fs.records_by_sfi(sub, 0x04) == ()
    ok(card, fmcos.create_file(TransparentEF(0x0003, read_right=0x00, write_right=0x00, size=4)))
    assert card.fs.records_by_sfi(sub, 0x03) == ()                  # a binary file holds no records
    ok(card, fmcos.create_file(VariableRecordEF(0x0004, read_right=0x00, write_right=0x00, size=0x20)))
    ok(card, "00E2002003010100")
    assert card.fs.records_by_sfi(sub, 0x04) == (b"\x01\x01\x00",)
    ok(card, "00E2002003020101")
    assert card.fs.records_by_sfi(sub, 0x04) == (b"\x01\x01\x00", b"\x02\x01\x01")
    card.store.arm_tear(1)
    with pytest.raises(PowerLoss):
        card.transmit(fmcos.create_file(VariableRecordEF(0x0005, read_right=0x00, write_right=0x00, size=0x20)))
    card.power_on()
    assert card.fs.records_by_sfi(sub, 0x05) == ()
    # Straight on the file system, no command between: the index must notice by itself.
    card.fs.create(sub, VariableRecordEF(0x0006, read_right=0x00, write_right=0x00, size=0x20))
    card.store.put(("B", sub + (0x0006,)), (b"\x01\x01\x07",))
    assert card.fs.records_by_sfi(sub, 0x06) == (b"\x01\x01\x07",)
    card.store.rollback()
    assert card.fs.records_by_sfi(sub, 0x06) == ()


def test_a_file_read_by_sfi_is_the_file_as_it_stands_after_its_df_was_erased(card):
    # The SFI index holds each EF's spec: a file erased and made again under the same SFI
    # with another size and other rights must be read as the new one, at the next command.
    _create_sub(card)
    ok(card, "00A404000A" + SUB_NAME.hex())
    ok(card, fmcos.create_file(TransparentEF(0x0003, read_right=0x00, write_right=0x00, size=4)))
    assert tx(card, "00B0830000") == (bytes(4), 0x9000)
    ok(card, fmcos.erase_df())
    ok(card, fmcos.create_file(TransparentEF(0x0003, read_right=0x00, write_right=0x00, size=6)))
    assert tx(card, "00B0830000") == (bytes(6), 0x9000)
    ok(card, fmcos.erase_df())
    assert sw(card, "00B0830000") == SW.FILE_NOT_FOUND
    ok(card, fmcos.create_file(KeyFile(0x0000, size=0x40, add_right=0x00)))
    ok(card, fmcos.erase_df())
    ok(card, fmcos.create_file(KeyFile(0x0000, size=0x40, add_right=0x00)))
    ok(card, fmcos.create_file(TransparentEF(0x0003, read_right=0x11, write_right=0x00, size=6)))
    ok(card, "00A404000A" + SUB_NAME.hex())
    assert sw(card, "00B0830000") == SW.SECURITY_NOT_SATISFIED


def test_an_ef_created_by_a_torn_command_is_not_found_by_sfi(card):
    _create_sub(card)
    ok(card, "00A404000A" + SUB_NAME.hex())
    card.store.arm_tear(1)
    with pytest.raises(PowerLoss):
        card.transmit(fmcos.create_file(TransparentEF(0x0003, read_right=0x00, write_right=0x00, size=4)))
    card.power_on()
    ok(card, "00A404000A" + SUB_NAME.hex())
    assert sw(card, "00B0830000") == SW.FILE_NOT_FOUND
