"""Card images: round trip, atomic writes, and clear refusals of corrupt or newer images."""

import json
import os

import pytest

from cardos import image
from cardos.image import ImageError
from personalize.demo import demo_card
from tests.util import ok, select_demo, sw


def test_round_trip_keeps_every_byte_and_counter(tmp_path):
    card = demo_card()
    select_demo(card)
    sw(card, "0020000003999999")
    image.save(card, tmp_path / "c.json")
    again = image.load(tmp_path / "c.json")
    assert again.store.data == card.store.data
    assert again.config == card.config
    again.power_on()
    select_demo(again)
    assert sw(again, "00200000") == 0x63C5
    assert ok(again, "00B2012C00") == b"\x01\x08DEMO0001"


def test_image_is_readable_json_with_schema_and_marked_secrets(tmp_path):
    image.save(demo_card(), tmp_path / "c.json")
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["format"] == "sscard-card-image" and doc["schema"] == image.SCHEMA
    assert doc["digest"] == image.digest(doc)
    assert "secret_value" in doc["secrets"]
    keys = [e for e in doc["entries"] if "key" in e]
    assert keys and all("secret_value" in k for k in keys)
    assert oct((tmp_path / "c.json").stat().st_mode & 0o777) == "0o600"


def test_failed_save_leaves_the_old_image_whole(tmp_path, monkeypatch):
    path = tmp_path / "c.json"
    image.save(demo_card(), path)
    old = path.read_text()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    card = demo_card()
    select_demo(card)
    sw(card, "0020000003999999")
    with pytest.raises(image.SaveError, match="disk full"):
        image.save(card, path)
    assert path.read_text() == old
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]


def test_stale_temporaries_of_a_killed_save_are_removed(tmp_path):
    path = tmp_path / "c.json"
    image.save(demo_card(), path)
    (tmp_path / f"{image.TMP_PREFIX}c.json.abc123.tmp").write_text("{half")
    (tmp_path / "unrelated.tmp").write_text("keep me")
    assert image.remove_stale_temps(tmp_path, "c.json") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "unrelated.tmp"]


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(schema=99), "schema 99 is newer"),
    (lambda d: d.update(format="other"), "not an sscard card image"),
    (lambda d: d.pop("schema"), "schema version missing"),
    (lambda d: d["config"].update(atr="zz"), "config"),
    (lambda d: d["entries"][0].update(create="38"), r"entries\[0\]"),
    (lambda d: d["entries"].pop(0), "has no parent"),
])
def test_corrupt_images_are_refused_with_the_place_named(tmp_path, mutate, message):
    path = tmp_path / "c.json"
    image.save(demo_card(), path)
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(image.sealed(doc)))
    with pytest.raises(ImageError, match=message):
        image.load(path)


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "c.json"
    image.save(demo_card(), path)
    path.write_text(path.read_text()[:500])
    with pytest.raises(ImageError, match="not valid JSON"):
        image.load(path)


def test_serve_saver_writes_only_when_a_command_changed_the_card(tmp_path):
    from reader_bridge.persist import ImageSaver
    card = demo_card()
    path = tmp_path / "c.json"
    image.save(card, path)
    saver = ImageSaver(str(path), card)
    select_demo(card)
    ok(card, "0020000003123456")          # decrement then restore: the card ends as it began
    saver(card)
    assert saver.writes == 0
    sw(card, "0020000003999999")          # a wrong PIN changes it
    saver(card)
    assert saver.writes == 1 and image.load(path).store.data == card.store.data
