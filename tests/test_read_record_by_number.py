"""READ RECORD by number answers the record P1 names, P1 00 the current one, 6A83 past the end."""

from hypothesis import given, settings, strategies as st

from cardos import sw as SW
from personalize.demo import DEMO_KEYS, demo_card
from tests.util import authenticate, select_demo, tx


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 6) | st.integers(0, 255), min_size=1, max_size=6))
def test_record_by_number_and_the_current_record(numbers):
    card = demo_card()
    select_demo(card)
    assert authenticate(card, 0x01, DEMO_KEYS["df_read"]) == 0x9000
    records = card.fs.body(card.fs.ef_by_sfi(card.session.current_df, 0x05))
    current = None
    for n in numbers:
        data, status = tx(card, f"00B2{n:02X}2C00")
        wanted = n or current
        if wanted is None or not 1 <= wanted <= len(records):
            assert status == SW.RECORD_NOT_FOUND
        else:
            assert (data, status) == (records[wanted - 1], 0x9000)
            current = wanted
        assert card.session.record == current


def test_a_command_as_bytearray_or_memoryview_answers_as_bytes():
    from tests.util import select_demo as sel
    answers = []
    for wrap in (bytes, bytearray, memoryview):
        card = demo_card()
        sel(card)
        authenticate(card, 0x01, DEMO_KEYS["df_read"])
        raw = bytearray.fromhex("00B2012C00")
        answer = card.transmit(wrap(raw))
        raw[2] = 0x7F       # the caller's buffer changed after the command: the card kept its own copy
        assert type(answer) is bytes
        answers.append((answer, card.session.record))
    assert answers[0] == answers[1] == answers[2] and answers[0][0][-2:] == b"\x90\x00"
