"""Data items: every item of every profile round-trips through its encoding; names split into 09 + 4E."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from applets.encoding import ItemError, decode, encode, split_name
from cardos.tlv import is_simple_record, parse, simple_record, tlv
from personalize.compiler import encode_item
from tests.ss import prof

ITEMS = [(name, it) for name in ("default", "sm4-3.00", "ss-1.00") for _, df in prof(name).walk()
         for f in df.files for it in f.items if not it.children and it.value is None]

GBK_CHARS = st.characters(codec="gbk", categories=("Lo",)) | st.sampled_from("张王李赵·阿卜杜")


def _value(fmt, length):
    if fmt == "b":
        return st.binary(min_size=length, max_size=length).map(lambda b: b.hex())
    if fmt in ("cn", "n"):
        return st.text("0123456789", min_size=0, max_size=2 * length)
    if fmt == "an":
        return st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=length)
    return st.text(GBK_CHARS, min_size=1, max_size=length // 2)


@pytest.mark.parametrize("name, item", ITEMS, ids=[f"{n}-{i.tag:02X}-{i.fmt}{i.length}" for n, i in ITEMS])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_every_item_round_trips(name, item, data):
    value = data.draw(_value(item.fmt, item.length))
    raw = encode(item.fmt, item.length, value)
    assert len(raw) == item.length
    record = simple_record(item.tag, raw)
    assert is_simple_record(record) and record[0] == item.tag
    back = decode(item.fmt, record[2:])
    if item.fmt == "b":
        assert back == value.upper()
    elif item.fmt == "n":
        assert int(back) == int(value or "0")
    else:
        assert back == value


@given(st.text(GBK_CHARS, min_size=1, max_size=25))
def test_names_split_on_character_boundaries_and_join_back(name):
    raw = name.encode("gbk")
    if len(raw) > 50:
        with pytest.raises(ItemError):
            split_name(name)
        return
    head, tail = split_name(name)
    assert len(head) <= 30 and len(tail) <= 20 and head + tail == raw
    assert (head.decode("gbk") + tail.decode("gbk")) == name
    if tail:
        assert len(head) + len(name[len(head.decode("gbk"))].encode("gbk")) > 30


def test_too_long_and_non_gbk_names_are_refused():
    with pytest.raises(ItemError, match="not in GBK"):
        split_name("张\U0001F600")
    with pytest.raises(ItemError, match="at most 50"):
        split_name("张" * 26)


@given(st.lists(st.tuples(st.integers(1, 0xFE), st.binary(max_size=300)), max_size=6))
def test_ber_tlv_round_trip(objs):
    objs = [(t, v) for t, v in objs if t & 0x1F != 0x1F]
    assert parse(b"".join(tlv(t, v) for t, v in objs)) == objs


def test_constructed_items_encode_nested_tlv():
    pan = next(it for _, df in prof().walk() for f in df.files for it in f.items if it.children
               and any(c.field == "pan" for c in it.children))
    rec = encode_item(pan, {"pan": "6217990000001234562", "pan_expiry": "340131"})
    assert rec[:2] == bytes([0x70, len(rec) - 2])
    assert dict(parse(rec[2:]))[0x5A] == bytes.fromhex("6217990000001234562F")
