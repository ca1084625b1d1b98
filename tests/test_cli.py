"""The `sscard` command as a user runs it: images, APDUs, JSON output, clear errors."""

import json

from click.testing import CliRunner

from cli import main


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_image_new_info_and_apdu(tmp_path):
    img = str(tmp_path / "card.json")
    r = run("image", "new", img)
    assert r.exit_code == 0 and "demo card" in r.output
    r = run("image", "info", img)
    assert "EEPROM" in r.output and "SSCARD.DEMO" in r.output and "variable records" in r.output
    info = json.loads(run("image", "info", "--json", img).output)
    assert info["used"] + info["free"] == info["capacity"] == 32768
    r = run("apdu", "--image", img, "00A404000B5353434152442E44454D4F", "00B2012C00", "0020000003111111")
    lines = r.output.splitlines()
    assert lines[1] == "010844454D4F30303031 9000" and lines[2] == "63C5"
    r = run("apdu", "--image", img, "--json", "00A404000B5353434152442E44454D4F", "0020000003111111")
    rows = json.loads(r.output)
    assert rows[1]["sw"] == "63C4"                          # the image kept the first wrong try
    assert "111111" not in r.output and "redacted" in rows[1]["command"]


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


def test_corrupt_image_gives_one_line_error(tmp_path):
    img = tmp_path / "bad.json"
    img.write_text("{not json")
    r = run("image", "info", str(img))
    assert r.exit_code != 0 and "not valid JSON" in r.output and len(r.output.strip().splitlines()) == 1
