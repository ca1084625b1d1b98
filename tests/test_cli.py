"""The `sscard` command as a user runs it: images, keys, read, card life, APDUs, clear errors."""

import json

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from cli import main
from personalize.keys import KeyRef, load_key_file

PASS = {"SSCARD_KEYS_PASSPHRASE": "test passphrase"}


def run(*args, input=None, env=PASS):
    return CliRunner().invoke(main, list(args), input=input, env=env, catch_exceptions=False)


@pytest.fixture
def made(tmp_path):
    keys, img = str(tmp_path / "keys.json"), str(tmp_path / "card.json")
    assert run("keys", "new", keys, "--demo").exit_code == 0
    r = run("image", "new", img, "--keys", keys)
    assert r.exit_code == 0 and "张小燕" in r.output and "demo keys" not in r.output
    return keys, img


def test_image_info_and_apdu(made):
    _, img = made
    r = run("image", "info", img)
    assert "EEPROM" in r.output and "社会保障" in r.output and "pboc-debit" in r.output
    info = json.loads(run("image", "info", "--json", img).output)
    assert info["used"] + info["free"] == info["capacity"] == 32768
    r = run("apdu", "--image", img, "00A404000F7378312E73682EC9E7BBE1B1A3D5CF", "00B2072C00", "0020000003111111")
    lines = r.output.splitlines()
    assert lines[1].startswith("0709") and lines[1].endswith(" 9000") and lines[2] == "6985"
    rows = json.loads(run("apdu", "--image", img, "--json", "0020000003111111").output)
    assert "111111" not in json.dumps(rows) and "redacted" in rows[0]["command"]


def test_read_then_life_then_pin(made):
    keys, img = made
    r = run("read", "--image", img)
    assert "张小燕" in r.output and "A02796279" in r.output and "issued" in r.output
    assert run("card", "activate", "--image", img, "--keys", keys).exit_code == 0
    r = run("card", "pin", "change", "--image", img, input="123456\n654321\n654321\n")
    assert r.exit_code == 0 and "change PIN" in r.output
    r = run("apdu", "--image", img, "00A404000F7378312E73682EC9E7BBE1B1A3D5CF", "0020000003654321")
    assert r.output.splitlines()[-1] == "9000"
    r = run("card", "report-loss", "--image", img, "--keys", keys, "--json")
    assert r.exit_code == 0 and all(row["sw"] == "9000" for row in json.loads(r.output))
    r = run("card", "replace", "--image", img, "--keys", keys, "--reason", "formal loss")
    assert r.exit_code == 0
    data = json.loads(run("read", "--image", img, "--json").output)
    assert any("9303" in x for x in data["refused"])


def test_wrong_passphrase_and_missing_keys_are_one_line_errors(made):
    keys, img = made
    r = run("card", "activate", "--image", img, "--keys", keys, env={"SSCARD_KEYS_PASSPHRASE": "wrong"})
    assert r.exit_code != 0 and "wrong passphrase" in r.output and len(r.output.strip().splitlines()) == 1
    r = run("card", "activate", "--image", img, "--keys", keys, "--reader", "x")
    assert r.exit_code != 0 and "exactly one of" in r.output


def test_secrets_never_printed(made, tmp_path):
    keys, img = made
    provider = load_key_file(keys, PASS["SSCARD_KEYS_PASSPHRASE"])
    values = {provider.value_for_plain_load(KeyRef(n)).hex().upper() for n in provider.names()}
    outputs = [run("keys", "list", keys).output, run("read", "--image", img, "--json").output,
               run("card", "activate", "--image", img, "--keys", keys, "--json").output]
    for out in outputs:
        assert not any(v in out.upper() for v in values)
    assert "123456" not in run("card", "pin", "change", "--image", img, "--json", input="123456\n111111\n111111\n").output


def test_blank_image_and_refusals(tmp_path):
    img = str(tmp_path / "blank.json")
    assert run("image", "new", "--blank", img).exit_code == 0
    r = run("image", "new", img)
    assert r.exit_code != 0 and "exists" in r.output
    before = open(img).read()
    r = run("apdu", "--image", img, "00A4zz00")
    assert r.exit_code != 0 and "not hex at character 5" in r.output
    r = run("apdu", "--image", img, "00A4")
    assert r.exit_code != 0 and "at least 4" in r.output
    assert open(img).read() == before
    r = run("image", "new", str(tmp_path / "x.json"), "--profile", "nosuch.yaml")
    assert r.exit_code != 0 and "nosuch.yaml" in r.output


def test_corrupt_image_gives_one_line_error(tmp_path):
    img = tmp_path / "bad.json"
    img.write_text("{not json")
    r = run("image", "info", str(img))
    assert r.exit_code != 0 and "not valid JSON" in r.output and len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("text, where", [
    ("0020000003123456Z", "APDU 2: not hex at character 17"),
    ("00 20 00 00 03 12 34 5G", "APDU 2: not hex at character 23"),
    ("002000000312345", "APDU 2: odd number of hex digits"),
    ("00:20:00:00:03:12:34:56:7", "APDU 2: odd number of hex digits"),
])
def test_a_malformed_apdu_is_named_by_position_never_by_content(tmp_path, text, where):
    img = str(tmp_path / "blank.json")
    assert run("image", "new", "--blank", img).exit_code == 0
    r = run("apdu", "--image", img, "00A40000023F00", text)
    assert r.exit_code == 2 and r.output.strip() == f"Error: {where}"
    assert "1234" not in r.output and "12 34" not in r.output


@settings(max_examples=40, deadline=None)
@given(pin=st.text("0123456789", min_size=4, max_size=12), junk=st.sampled_from(["Z", "0", " x", "-", ""]))
def test_no_parse_error_shows_the_pin_it_was_given(pin, junk):
    from cli import _parse_apdus
    import click
    text = "00200000" + f"{(len(pin) + 1) // 2:02X}" + pin + junk
    try:
        _parse_apdus(("00A4000000", text))
    except click.ClickException as e:
        assert pin not in e.format_message() and pin[:4] not in e.format_message()


def _t0_image(tmp_path):
    from dataclasses import replace
    from cardos import image
    from cardos.card import Card
    from cardos.nvm import Store
    from tests.ss import card
    c = card()
    path = str(tmp_path / "t0.json")
    image.save(Card(Store(dict(c.store.data)), replace(c.config, t0_get_response=True)), path)
    return path


def test_apdu_raw_shows_what_the_card_really_answered(tmp_path):
    img = _t0_image(tmp_path)
    select = "00A404000F7378312E73682EC9E7BBE1B1A3D5CF"
    assert run("apdu", "--image", img, select).output.strip().endswith(" 9000")     # followed by default
    assert run("apdu", "--image", img, "--raw", select, "00B2072C02").output.splitlines() == ["611B", "6C0B"]
    r = run("apdu", "--image", img, "--raw", "--json", select, "00C000001B")
    rows = json.loads(r.output)
    assert [x["sw"] for x in rows] == ["611B", "9000"] and rows[1]["response"].startswith("6F19")
    # The cryptogram of INTERNAL AUTHENTICATE is fetched raw by GET RESPONSE: still masked.
    r = run("apdu", "--image", img, "--raw", select, "0088000008" + "11" * 8, "00C0000008")
    lines = r.output.splitlines()
    assert lines[1] == "6108" and "redacted" in lines[2] and lines[2].endswith(" 9000")


def test_apdu_help_says_which_answers_are_the_default():
    text = run("apdu", "--help").output
    assert "--raw" in text and "default" in text.lower()
