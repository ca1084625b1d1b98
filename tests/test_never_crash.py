"""Whatever arrives, the card answers with a status word of spec §5 and keeps working."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cardos import Card
from cardos.apdu import build, split_response
from cardos.invariants import check_state
from cardos.nvm import Store
from personalize.demo import demo_card
from tests.util import is_spec_sw

_TEMPLATE = demo_card()
KNOWN_INS = [0xA4, 0xC0, 0xB0, 0xD6, 0xB2, 0xDC, 0xE2, 0x20, 0x5E, 0x24, 0x84, 0x82, 0x88,
             0xE0, 0xD4, 0x0E, 0x1E, 0x18, 0x16]


def _fresh() -> Card:
    card = Card(Store(dict(_TEMPLATE.store.data)), _TEMPLATE.config)
    card.power_on()
    return card


def _answers_and_survives(card, commands):
    for raw in commands:
        resp = card.transmit(raw)
        assert 2 <= len(resp) <= 258  # a short answer: at most 256 data bytes
        status = split_response(resp)[1]
        assert is_spec_sw(status), f"{raw.hex()} -> {status:04X}"
    assert card.transmit(bytes.fromhex("00A40000023F00"))[-2:] == b"\x90\x00"
    check_state(card.store.data, card.config)  # whatever the commands did, the card is one an image may hold
    card.power_on()
    assert card.transmit(bytes.fromhex("00A40000023F00"))[-2:] == b"\x90\x00"


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=8))
def test_any_bytes_get_a_spec_status_word_and_the_card_stays_usable(commands):
    _answers_and_survives(_fresh(), commands)


well_formed = st.builds(
    lambda cla, ins, p1, p2, data, le: build(cla, ins, p1, p2, data, le),
    st.sampled_from([0x00, 0x04, 0x80, 0x84, 0x0C, 0x01, 0xFF]) | st.integers(0, 255),
    st.sampled_from(KNOWN_INS) | st.integers(0, 255),
    st.sampled_from([0x00, 0x01, 0x02, 0x04, 0x80, 0x81, 0x85]) | st.integers(0, 255),
    st.sampled_from([0x00, 0x04, 0x0C, 0x28, 0x2C, 0x14]) | st.integers(0, 255),
    st.none() | st.binary(min_size=1, max_size=255),
    st.none() | st.integers(1, 256),
)


# Real commands of the demo card, so that mutations reach the handlers past their first checks.
TEMPLATES = [bytes.fromhex(h) for h in (
    "00A404000B5353434152442E44454D4F", "00A40000020005", "00A40200020001", "00A40000023F00",
    "00B2012C00", "00B2022800", "00B2010400", "00B2002C0A", "00B0810010", "00B0000004",
    "0020000003123456", "0020000003999999", "805E010007123456FF654321", "0084000008", "0084000004",
    "00820001080102030405060708", "00880000080102030405060708", "00C0000000",
    "00DC012C0A010844454D4F30303032", "00E2002806030441424344", "04DC012C0E010844454D4F303030320102030400",
    "80E00010072800100000FFFF", "80D401070A3933F0F0020033" + "00" * 16, "800E000000", "841E000004AABBCCDD",
)]


@st.composite
def mutated(draw):
    raw = bytearray(draw(st.sampled_from(TEMPLATES)))
    for _ in range(draw(st.integers(0, 2))):
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(4, len(raw)))]
    return bytes(raw)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(well_formed | mutated(), min_size=1, max_size=12))
def test_well_formed_apdus(commands):
    # Start inside the demo DF so the random commands reach its files and keys.
    card = _fresh()
    card.transmit(bytes.fromhex("00A404000B") + b"SSCARD.DEMO")
    _answers_and_survives(card, commands)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(well_formed | mutated(), min_size=1, max_size=12))
def test_well_formed_apdus_on_a_card_with_its_applets(commands):
    # The social-security card: the applets' rules (life file, extension area, PBOC) in the path too.
    from tests.ss import SELECT_SSSE, card
    c = card()
    c.transmit(bytes.fromhex(SELECT_SSSE))
    _answers_and_survives(c, commands)
