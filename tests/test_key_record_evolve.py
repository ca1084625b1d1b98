"""A key record's changed copies (a try counted, a value changed) are new records equal to a rebuilt one."""

from dataclasses import replace

from hypothesis import given, strategies as st

from cardos.files import KeyRecord

records = st.builds(KeyRecord, type=st.sampled_from([0x36, 0x39, 0x3A]), id=st.integers(0, 255),
                    use_right=st.integers(0, 255), change_right=st.integers(0, 255),
                    value=st.binary(min_size=2, max_size=16), max_tries=st.integers(0, 15),
                    tries_left=st.integers(0, 15))


@given(records, st.integers(-3, 20))
def test_with_tries_is_a_clamped_rebuilt_record_and_leaves_the_old_one(rec, left):
    before = replace(rec)
    new = rec.with_tries(left)
    assert new == replace(rec, tries_left=max(0, min(left, rec.max_tries)))
    assert rec == before and new is not rec and new.__dict__ is not rec.__dict__


@given(records, st.binary(min_size=2, max_size=8))
def test_with_value_is_a_rebuilt_record_and_leaves_the_old_one(rec, value):
    before = replace(rec)
    assert rec.with_value(value) == replace(rec, value=value)
    assert rec == before
