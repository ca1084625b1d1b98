"""Every status word of spec §5 the card OS can produce, each with a command that triggers it.

Not produced by the core: 6281 and 6581 (no command reports corrupted data or a failing
EEPROM; a torn write is finished or dropped at power-on instead).
"""


from cardos import CosConfig
from cardos import sw as SW
from personalize import fmcos
from personalize.demo import DEMO_KEYS, demo_card
from tests.util import authenticate, secured, select_demo, sw, tx


def test_9000_and_inline_data(card):
    data, status = tx(card, "00A404000B" + b"SSCARD.DEMO".hex())
    assert status == 0x9000 and data.startswith(b"\x6f")


def test_61xx_and_get_response_in_t0_mode():
    card = demo_card(CosConfig(t0_get_response=True))
    data, status = tx(card, "00A404000B" + b"SSCARD.DEMO".hex() + "00")
    assert data == b"" and status >> 8 == 0x61
    n = status & 0xFF
    part, status = tx(card, "00C0000004")
    assert len(part) == 4 and status == SW.more_data(n - 4)
    rest, status = tx(card, f"00C00000{n - 4:02X}")
    assert status == 0x9000 and (part + rest).startswith(b"\x6f") and len(part + rest) == n


def test_6cxx_when_le_is_shorter_than_the_record(card):
    select_demo(card)
    assert sw(card, "00B2012C03") == 0x6C0A
    assert tx(card, "00B2012C0A") == (b"\x01\x08DEMO0001", 0x9000)


def test_63cx_wrong_pin(card):
    select_demo(card)
    assert sw(card, "0020000003999999") == 0x63C5


def test_6700_wrong_length(card):
    assert sw(card, "00A4") == SW.WRONG_LENGTH
    assert sw(card, "0084000005") == SW.WRONG_LENGTH


def test_6881_logical_channel(card):
    assert sw(card, "01A40000023F00") == SW.CHANNEL_NOT_SUPPORTED


def test_6982_security_not_satisfied(card):
    select_demo(card)
    assert sw(card, "00B0810000") == SW.SECURITY_NOT_SATISFIED


def test_6983_blocked_pin(card):
    select_demo(card)
    for _ in range(6):
        sw(card, "0020000003999999")
    assert sw(card, "0020000003123456") == SW.BLOCKED


def test_6984_mac_without_challenge(card):
    select_demo(card)
    assert sw(card, "04DC012C0E" + "0108" + b"DEMO0002".hex() + "00000000") == SW.REFERENCE_DATA_UNUSABLE


def test_6985_get_response_with_nothing_waiting(card):
    assert sw(card, "00C0000000") == SW.CONDITIONS_NOT_SATISFIED


def test_6986_no_current_ef(card):
    select_demo(card)
    assert sw(card, "00B0000004") == SW.NO_CURRENT_EF


def test_6988_wrong_mac(card):
    select_demo(card)
    assert secured(card, 0x04, 0xDC, 0x01, 0x2C, b"\x01\x08DEMO0002", bytes(16)) == SW.MAC_WRONG


def test_9302_wrong_mac_on_an_fmcos_profile():
    card = demo_card(CosConfig(wrong_mac_sw=SW.FMCOS_MAC_WRONG))
    select_demo(card)
    assert secured(card, 0x04, 0xDC, 0x01, 0x2C, b"\x01\x08DEMO0002", bytes(16)) == SW.FMCOS_MAC_WRONG


def test_6a80_wrong_data(card):
    select_demo(card)
    assert authenticate(card, 0x01, DEMO_KEYS["df_read"]) == 0x9000
    assert sw(card, "00DC012C03" + "010805") == SW.WRONG_DATA  # length byte does not match


def test_6a81_blocked_application_and_9303_locked(card):
    select_demo(card)
    assert secured(card, 0x84, 0x1E, 0x00, 0x00, b"", DEMO_KEYS["df_maintenance"]) == 0x9000
    assert sw(card, "00A404000B" + b"SSCARD.DEMO".hex()) == SW.APPLICATION_BLOCKED
    assert sw(card, "00B2012C00") == SW.APPLICATION_BLOCKED
    assert secured(card, 0x84, 0x18, 0x00, 0x00, b"", DEMO_KEYS["df_maintenance"]) == 0x9000
    assert sw(card, "00A404000B" + b"SSCARD.DEMO".hex()) == 0x9000
    assert secured(card, 0x84, 0x1E, 0x00, 0x01, b"", DEMO_KEYS["df_maintenance"]) == 0x9000
    assert sw(card, "00A404000B" + b"SSCARD.DEMO".hex()) == SW.APPLICATION_LOCKED
    assert secured(card, 0x84, 0x18, 0x00, 0x00, b"", DEMO_KEYS["df_maintenance"]) == SW.APPLICATION_LOCKED
    assert sw(card, "00A40000023F00") == 0x9000  # the rest of the card still works


def test_6a82_file_not_found(card):
    assert sw(card, "00A4000002EEEE") == SW.FILE_NOT_FOUND


def test_6a83_record_not_found(card):
    select_demo(card)
    assert sw(card, "00B2092C00") == SW.RECORD_NOT_FOUND
    assert sw(card, "00B2772800") == SW.RECORD_NOT_FOUND


def test_6a84_not_enough_memory(card):
    select_demo(card)
    assert authenticate(card, 0x00, DEMO_KEYS["df_master"]) == 0x9000
    from cardos.files import TransparentEF
    assert sw(card, fmcos.create_file(TransparentEF(0x0009, size=0x2000))) == SW.NOT_ENOUGH_MEMORY


def test_6a86_wrong_p1p2(card):
    assert sw(card, "00A4080002EF05") == SW.WRONG_P1P2
    assert sw(card, "0084010004") == SW.WRONG_P1P2


def test_6a88_reference_not_found(card):
    assert sw(card, "0020000103123456") == SW.REFERENCE_NOT_FOUND


def test_6b00_offset_beyond_file(card):
    select_demo(card)
    assert authenticate(card, 0x01, DEMO_KEYS["df_read"]) == 0x9000
    assert sw(card, "00B0812001") == SW.OFFSET_BEYOND_FILE


def test_6d00_unknown_ins(card):
    assert sw(card, "00FE000000") == SW.INS_NOT_SUPPORTED


def test_6e00_unknown_cla(card):
    assert sw(card, "A0A40000023F00") == SW.CLA_NOT_SUPPORTED
    assert sw(card, "80A40000023F00") == SW.CLA_NOT_SUPPORTED  # SELECT is interindustry only


def test_card_block_answers_6a81_to_everything(card):
    assert secured(card, 0x84, 0x16, 0x00, 0x00, b"", DEMO_KEYS["mf_maintenance"]) == 0x9000
    assert sw(card, "00A40000023F00") == SW.FUNCTION_NOT_SUPPORTED
    card.power_on()
    assert sw(card, "00A40000023F00") == SW.FUNCTION_NOT_SUPPORTED
