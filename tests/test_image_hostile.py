"""Hostile card images (issue 15): every load failure is one line naming the place, exit 2, the file
untouched; the loader takes only states a card can be in; a digest catches damage; reading never writes."""

import json
import os
import stat
from functools import lru_cache

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cardos import image
from cardos.image import DamagedImage, ImageError
from cli import main
from personalize.demo import demo_card
from tests import ss


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@lru_cache(maxsize=None)
def _text(kind: str) -> str:
    import tempfile
    card = demo_card() if kind == "demo" else ss.card()
    with tempfile.TemporaryDirectory() as d:
        image.save(card, os.path.join(d, "c.json"))
        with open(os.path.join(d, "c.json"), encoding="utf-8") as f:
            return f.read()


def saved(tmp_path, kind: str = "demo"):
    path = tmp_path / "c.json"
    path.write_text(_text(kind), encoding="utf-8")
    return path


def reseal(text: str, tmp_path) -> str:
    """The text with the digest of what it now holds, as `image repair --accept` would seal it."""
    probe = tmp_path / "probe.json"
    probe.write_bytes(text.encode("utf-8", "surrogateescape"))
    doc = image.read_document(probe)
    probe.unlink()
    old = json.loads(_text("demo"))["digest"] if "digest" not in doc else doc["digest"]
    return text.replace(old, image.digest(doc), 1)


def _fails_in_one_line(path, message):
    before = (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_mode)
    for args in (("image", "info", str(path)), ("read", "--image", str(path)),
                 ("apdu", "--image", str(path), "00A40000023F00")):
        r = run(*args)
        assert r.exit_code == 2, r.output
        assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
        assert message in r.output, r.output
    assert (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_mode) == before


def _doc_edit(fn):
    def edit(text):
        doc = json.loads(text)
        fn(doc)
        return json.dumps(doc, indent=1, ensure_ascii=False)
    return edit


def _entry(doc, pred):
    return next(e for e in doc["entries"] if pred(e))


def _pin(doc):
    return _entry(doc, lambda e: e.get("key") == "3F00/DF01" and e["type"] == "3A")


def _set(field, value, pred):
    return _doc_edit(lambda d: _entry(d, pred).update({field: value}))


_RECORDS = lambda e: e.get("contents") == "3F00/DF01/0005"  # noqa: E731
_BINARY = lambda e: e.get("contents") == "3F00/DF01/0001"  # noqa: E731

HOSTILE = {
    # item 3: tracebacks before
    "not UTF-8": (lambda t: t.replace("Protect it", "Protect \udcff it"), "not UTF-8"),
    "entries not a list": (_doc_edit(lambda d: d.update(entries={"a": 1})), "entries: must be a list"),
    "commit buffer not an object": (_doc_edit(lambda d: d.update(commit_buffer=[])), "commit_buffer: must be an object"),
    "1e400": (lambda t: t.replace('"capacity": 32768', '"capacity": 1e400'), "config.capacity: must be a whole number"),
    "5000 digits": (lambda t: t.replace('"capacity": 32768', '"capacity": 1' + "0" * 5000), "config.capacity"),
    "NaN": (lambda t: t.replace('"capacity": 32768', '"capacity": NaN'), "config.capacity"),
    "application state 7": (_doc_edit(lambda d: d["entries"].append({"application": "3F00/DF01", "state": 7})),
                            "state: 7 is out of range"),
    "nested deep": (lambda t: t.replace('"hooks": []', '"hooks": ' + "[" * 100000 + "]" * 100000), "nested too deeply"),
    "field twice": (lambda t: t.replace('"eeprom_used":', '"eeprom_used": 1, "eeprom_used":'), "appears twice"),
    # item 4: loaded before, then 6F00 or wrong answers
    "card_blocked as text": (_doc_edit(lambda d: d["entries"].append({"card_blocked": "false"})),
                             "card_blocked: must be true or false"),
    "9 tries of 6": (_doc_edit(lambda d: _pin(d).update(tries_left=9)), "tries_left: key 3A/00 of 3F00/DF01: 9 tries"),
    "99 tries": (_doc_edit(lambda d: _pin(d).update(tries_left=99)), "tries_left: 99 is out of range"),
    "-1 tries": (_doc_edit(lambda d: _pin(d).update(tries_left=-1)), "tries_left: -1 is out of range"),
    "tries as text": (_doc_edit(lambda d: _pin(d).update(tries_left="6")), "tries_left: must be a whole number"),
    "tries as boolean": (_doc_edit(lambda d: _pin(d).update(tries_left=True)), "tries_left: must be a whole number"),
    "tries as fraction": (lambda t: t.replace('"tries_left": 6', '"tries_left": 6.0'), "tries_left: must be a whole"),
    "PIN not BCD": (_doc_edit(lambda d: _pin(d).update(secret_value="12345A")), "PIN is not F-padded BCD"),
    "capacity 1024": (_doc_edit(lambda d: d["config"].update(capacity=1024)), "file 3F00: its files take"),
    "records past the file": (_set("records", ["0110" + "41" * 16] * 7, _RECORDS), "records take 126 bytes"),
    "300-byte record": (_set("records", ["01FF" + "41" * 298], _RECORDS), "records[0]: 300 bytes"),
    "record not TLV": (_set("records", ["0105AA"], _RECORDS), "record 1 is not tag"),
    "binary file given records": (_doc_edit(lambda d: _entry(d, _BINARY).update(records=["0101AA"]) or
                                            _entry(d, _BINARY).pop("binary")), "a binary EF holds bytes"),
    "record file given bytes": (_doc_edit(lambda d: _entry(d, _RECORDS).update(binary="00") or
                                          _entry(d, _RECORDS).pop("records")), "holds records, not bytes"),
    "binary of the wrong size": (_set("binary", "00", _BINARY), "1 bytes, the file's size is 32"),
    "orphan contents": (_doc_edit(lambda d: d["entries"].append({"contents": "3F00/0009", "binary": ""})),
                        "belong to no EF"),
    "unknown field": (_doc_edit(lambda d: _pin(d).update(tries_lefT=3)), "tries_lefT: unknown field"),
    "unprintable field": (lambda t: t.replace('"tries_left"', '"\\udcff\\n"', 1), "'\\udcff\\n': unknown field"),
    "eeprom_used wrong": (_doc_edit(lambda d: d.update(eeprom_used=5)), "eeprom_used: says 5 bytes"),
    "applets dropped": (_doc_edit(lambda d: d["config"].pop("applets")), "config.applets: missing"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_image_is_one_line_exit_2_and_untouched(tmp_path, case):
    edit, message = HOSTILE[case]
    path = saved(tmp_path)
    text = edit(path.read_text())
    # Edited and left as it is: the digest no longer matches (or the text is not even JSON).
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    _fails_in_one_line(path, "")
    # Edited and resealed, as a deliberate hand edit accepted without checks would be: the checks say why.
    if case not in ("not UTF-8", "nested deep", "field twice"):
        text = reseal(text, tmp_path)
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    _fails_in_one_line(path, message)
    assert run("image", "repair", str(path), "--accept").exit_code == 2
    _fails_in_one_line(path, message)


# ---- item 5: integrity -------------------------------------------------------------------------

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(at=st.integers(0, len(_text("demo").encode()) - 1), bit=st.integers(0, 7))
def test_every_single_bit_flip_is_refused(tmp_path, at, bit):
    raw = bytearray(_text("demo").encode())
    raw[at] ^= 1 << bit
    path = tmp_path / "flipped.json"
    path.write_bytes(bytes(raw))
    with pytest.raises(ImageError):
        image.load(path)


def test_the_applets_flip_is_caught_as_damage(tmp_path):
    path = saved(tmp_path, "ss")
    text = path.read_text()
    assert '"applets"' in text
    path.write_text(text.replace('"applets"', '"apple|s"'))
    with pytest.raises(DamagedImage, match="image damaged"):
        image.load(path)
    _fails_in_one_line(path, "image damaged")


def _as_schema_2(doc: dict, faults: list[str]) -> dict:
    """The document as sscard wrote it before hooks: schema 2, the hooks under "faults"."""
    doc = {k: v for k, v in doc.items() if k != "digest"}
    doc["schema"] = 2
    doc["config"] = {**{k: v for k, v in doc["config"].items() if k != "hooks"}, "faults": faults}
    return image.sealed(doc)


def test_a_schema_2_image_that_names_a_fault_loads_with_the_fault_on(tmp_path):
    path = saved(tmp_path)
    path.write_text(json.dumps(_as_schema_2(json.loads(path.read_text()), ["pin-counter-stuck"])))
    card = image.load(path)
    assert card.config.hooks == ("pin-counter-stuck",)
    card.transmit(bytes.fromhex("00A404000B") + b"SSCARD.DEMO")
    assert card.transmit(bytes.fromhex("0020000003999999")) == b"\x63\xc6"
    assert card.transmit(bytes.fromhex("0020000003999999")) == b"\x63\xc6"     # the counter stays stuck
    assert run("image", "repair", str(path)).output.strip().endswith("nothing to repair")


def test_an_image_naming_a_hook_nobody_installed_fails_in_one_line(tmp_path):
    path = saved(tmp_path)
    path.write_text(json.dumps(_as_schema_2(json.loads(path.read_text()), ["no-such-defect"])))
    _fails_in_one_line(path, "config: unknown hook(s) no-such-defect; installed: pin-counter-stuck")


def test_repair_accepts_a_deliberate_valid_edit_only_with_accept(tmp_path):
    path = saved(tmp_path)
    text = _doc_edit(lambda d: _pin(d).update(tries_left=2))(path.read_text())
    path.write_text(text)
    r = run("image", "repair", str(path))
    assert r.exit_code == 2 and "--accept" in r.output and path.read_text() == text
    r = run("image", "repair", str(path), "--accept")
    assert r.exit_code == 0, r.output
    card = image.load(path)
    card.power_on()
    card.transmit(bytes.fromhex("00A404000B") + b"SSCARD.DEMO")
    assert card.transmit(bytes.fromhex("00200000")) == b"\x63\xc2"
    r = run("image", "repair", str(path))
    assert r.exit_code == 0 and "nothing to repair" in r.output


def test_schema_1_images_still_load_and_are_written_as_the_current_schema(tmp_path):
    path = saved(tmp_path)
    doc = json.loads(path.read_text())
    doc.pop("digest")
    doc["schema"] = 1
    doc["config"]["faults"] = doc["config"].pop("hooks")
    path.write_text(json.dumps(doc))
    card = image.load(path)
    assert card.store.data == demo_card().store.data
    run("apdu", "--image", str(path), "00A404000B" + b"SSCARD.DEMO".hex(), "0020000003999999")
    again = json.loads(path.read_text())
    assert again["schema"] == image.SCHEMA and again["digest"] == image.digest(again)
    doc["entries"].append({"card_blocked": "false"})
    path.write_text(json.dumps(doc))
    _fails_in_one_line(path, "card_blocked: must be true or false")


# ---- item 6: reading never writes; a write that cannot happen says so -------------------------

SELECT_DEMO = "00A404000B" + b"SSCARD.DEMO".hex()


def _fingerprint(path):
    st_ = path.stat()
    return path.read_bytes(), st_.st_mtime_ns, st_.st_ino, stat.S_IMODE(st_.st_mode)


def test_read_only_commands_leave_a_read_only_image_alone(tmp_path):
    path = saved(tmp_path, "ss")
    path.chmod(0o444)
    before = _fingerprint(path)
    assert run("read", "--image", str(path)).exit_code == 0
    assert run("image", "info", str(path)).exit_code == 0
    assert run("apdu", "--image", str(path), ss.SELECT_SSSE, "0020000003123456").exit_code == 0  # 6985: no change
    assert _fingerprint(path) == before


def test_a_change_that_cannot_be_saved_says_so_in_one_line(tmp_path):
    path = saved(tmp_path)
    path.chmod(0o444)
    before = _fingerprint(path)
    r = run("apdu", "--image", str(path), SELECT_DEMO, "0020000003999999")
    assert r.exit_code == 1 and "read-only" in r.output and "not saved" in r.output
    assert len([ln for ln in r.output.splitlines() if ln.startswith("Error")]) == 1
    assert _fingerprint(path) == before


def test_a_directory_that_refuses_the_write_is_one_line(tmp_path, monkeypatch):
    import tempfile
    path = saved(tmp_path)

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    r = run("apdu", "--image", str(path), SELECT_DEMO, "0020000003999999")
    assert r.exit_code == 1 and "Permission denied" in r.output and "Traceback" not in r.output


def test_saves_keep_the_file_mode(tmp_path):
    path = saved(tmp_path)
    path.chmod(0o640)
    assert run("apdu", "--image", str(path), SELECT_DEMO, "0020000003999999").exit_code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert image.load(path).fs.key((0x3F00, 0xDF01), 0x3A, 0).tries_left == 5


# ---- item 14: DF names ---------------------------------------------------------------------------

def test_image_info_prints_binary_names_as_hex_and_text_names_as_text(tmp_path):
    path = saved(tmp_path, "ss")
    out = run("image", "info", str(path)).output
    assert "name D15600000500," in out and "name A000000333010101," in out
    assert "name 'sx1.sh.社会保障'," in out and "name '1PAY.SYS.DDF01'," in out
    assert "\\x00" not in out


def test_the_serve_saver_survives_an_image_it_cannot_write_and_catches_up_later(tmp_path):
    from reader_bridge.persist import ImageSaver
    from tests.util import select_demo, sw
    path = saved(tmp_path)
    card = image.load(path)
    card.power_on()
    saver = ImageSaver(str(path), card)
    path.chmod(0o444)
    select_demo(card)
    sw(card, "0020000003999999")
    saver(card)                                   # a reader is waiting: no exception, the reason kept
    assert saver.writes == 0 and "read-only" in saver.error
    path.chmod(0o600)
    saver(card)                                   # nothing new since, but the image is behind: written now
    assert saver.writes == 1 and saver.error is None
    assert image.load(path).fs.key((0x3F00, 0xDF01), 0x3A, 0).tries_left == 5


def test_stale_temporaries_that_cannot_be_removed_do_not_stop_a_read(tmp_path, monkeypatch):
    from pathlib import Path
    path = saved(tmp_path, "ss")
    (tmp_path / f"{image.TMP_PREFIX}c.json.x1.tmp").write_text("{half")

    def refuse(self, *a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(Path, "unlink", refuse)
    assert run("read", "--image", str(path)).exit_code == 0
