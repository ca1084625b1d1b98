"""The virtual PSAM (psam.md §2) and the terminal flows that ask it for every cryptogram."""

from functools import lru_cache

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from cardos import image
from cardos.card import Card
from cardos.nvm import Store
from cli import main
from personalize import kiosk, psam, settlement
from personalize.compiler import card_key
from personalize.keys import KeyRef, SoftwareKeys
from personalize.readout import ReadError, read_card
from reader_bridge.transport import InProcess
from terminal.security import Refused
from tests.ss import card, factor, key_file, keys, prof
from tests.util import ok, sw

PASS = "psam test passphrase"


@lru_cache(maxsize=None)
def _psam_template(name: str = "default", masters: str = "demo") -> Card:
    source = keys(name) if masters == "demo" else _other_keys(name)
    return psam.make(prof(name), source, "330300", psam.psam_serial(f"{name}:{masters}"))


def _other_keys(name: str) -> SoftwareKeys:
    demo = keys(name)
    # Same names, other values, the factory key kept (it is the blank chip's, not the issuer's).
    return SoftwareKeys({n: (a, v if n == "FACTORY" else bytes(b ^ 0x5A for b in v), 1)
                         for n, (a, v, _) in demo._masters.items()})


def a_psam(name: str = "default", masters: str = "demo") -> Card:
    t = _psam_template(name, masters)
    c = Card(Store(dict(t.store.data)), t.config)
    c.power_on()
    return c


def module(name: str = "default", masters: str = "demo"):
    return psam.security_module(InProcess(a_psam(name, masters)), prof(name))


def _ref(name: str, key_type: int, key_id: int, c: Card) -> KeyRef:
    _, ssse = prof(name).role("ssse")
    return card_key(next(k for k in ssse.keys if k.type == key_type and k.id == key_id), factor(c, name))


# ---- the PSAM card ---------------------------------------------------------------------------

def test_psam_answers_as_psam_md_says():
    p = a_psam()
    assert p.atr[:4] == bytes.fromhex("3B680000") and p.atr != card().atr
    waiting = sw(p, "00A4040006D15600000590")
    assert waiting >> 8 == 0x61                                        # T=0: 61xx, then GET RESPONSE
    fci = ok(p, f"00C00000{waiting & 0xFF:02X}")
    assert fci[:1] == b"\x6f" and bytes.fromhex("D15600000590") in fci
    assert sw(p, "00A40000023F00") >> 8 == 0x61
    assert sw(p, "00A4020002DF01") >> 8 == 0x61                        # the vendor sample's SELECT by FID
    assert ok(p, "00B0960006")[:3] == bytes.fromhex("330300")          # terminal number: region first
    assert sw(p, "80FA000008" + "00" * 8) == 0x6985                    # DES CRYPT before DES INIT
    assert sw(p, "801A9999081122334455667788") == 0x6A88               # no such key
    assert sw(p, "801A4812081122334455667788") == 0x6700               # a two-level key given one factor
    assert sw(p, "801A481210" + "11" * 16) == 0x9000
    assert sw(p, "80FA090008" + "00" * 8) == 0x6A86                    # P1 bits outside b1-b3
    assert sw(p, "80FA000007" + "00" * 7) == 0x6700                    # not whole blocks
    assert sw(p, "80FA000008" + "00" * 8) >> 8 == 0x61
    assert sw(p, "00B2011C00") in (0x6982, 0x6A82, 0x6986)              # the key directory never reads


@pytest.mark.parametrize("name", ["default", "sm4-3.00"])
def test_psam_and_key_file_compute_the_same_cryptograms(name):
    c, sm, sk = card(name), module(name), keys(name)
    for key_type, key_id in ((0x39, 0x04), (0x39, 0x0D), (0x39, 0x0A), (0x34, 0x00), (0x38, 0x00), (0x37, 0x00)):
        ref = _ref(name, key_type, key_id, c)
        block = bytes(range(sk.algorithm(ref).block))
        assert sm.encrypt(ref, block) == sk.encrypt(ref, block)
        assert sm.session_encrypt(ref, b"PROCESS!", block) == sk.session_encrypt(ref, b"PROCESS!", block)
        assert sm.seal(ref, b"\x12\x34") == sk.seal(ref, b"\x12\x34")


@settings(max_examples=25, deadline=None)
@given(data=st.binary(max_size=700), chal=st.binary(min_size=4, max_size=8))
def test_psam_mac_equals_the_key_file_mac_for_any_length(data, chal):
    c = card()
    ref = _ref("default", 0x38, 0x00, c)
    assert module().mac(ref, chal, data) == keys().mac(ref, chal, data)


def test_a_psam_never_exports_a_key():
    sm, ref = module(), _ref("default", 0x39, 0x04, card())
    with pytest.raises(Refused):
        sm.value_for_plain_load(ref)
    with pytest.raises(Refused):
        sm.seal_key_record(ref, b"\x39\xf0", ref)


# ---- flows through the PSAM ---------------------------------------------------------------------

def test_3_00_read_with_a_psam_checks_the_card_and_reads_the_holder():
    r = read_card(InProcess(card("sm4-3.00")), prof("sm4-3.00"), module("sm4-3.00"))
    assert r.authenticated and r.items["ssn"] == "330302199003071215" and r.refused == []


def test_a_psam_of_other_keys_fails_at_internal_authenticate():
    with pytest.raises(ReadError, match="INTERNAL AUTHENTICATE.*(not a genuine card|another issuer)"):
        read_card(InProcess(card("sm4-3.00")), prof("sm4-3.00"), module("sm4-3.00", "other"))


@pytest.mark.parametrize("name", ["default", "sm4-3.00"])
def test_kiosk_writes_ef0d_and_ef06_and_reads_them_back(name):
    c = card(name)
    done = kiosk.write(InProcess(c), prof(name), module(name),
                       {"person_id": "330300000099", "first_region": "330304", "sex": "1"})
    assert sum("read back" in d for d in done) == 3
    r = read_card(InProcess(c), prof(name), keys(name))
    assert (r.items["person_id"], r.items["first_region"], r.items["sex"]) == ("330300000099", "330304", "1")


def test_kiosk_refuses_a_change_of_name_or_id_number_unless_the_profile_allows():
    for field in ("name", "ssn"):
        with pytest.raises(kiosk.KioskError, match="cancel"):
            kiosk.plan(prof(), {field: "330302199003071215" if field == "ssn" else "李四"})
    from personalize.profile import build
    allowed = build(dict(prof().source, kiosk={"rewrite_key_data": True}))
    assert kiosk.plan(allowed, {"name": "李四"})[0].item.field == "name"


def test_settlement_appends_to_the_medical_log_with_the_pin():
    from personalize import lifecycle
    import datetime as dt
    c = card()
    lifecycle.perform(InProcess(c), lifecycle.life_script("activate", prof(), factor(c)), keys())
    s = settlement.Settlement("1", "330300000001", 12345, 10000, dt.datetime(2026, 11, 27, 10, 0, 0))
    assert settlement.append(InProcess(c), prof(), s, "123456") == 1
    assert settlement.append(InProcess(c), prof(), s, "123456") == 2
    with pytest.raises(settlement.SettlementError, match="VERIFY answered 63C"):
        settlement.append(InProcess(c), prof(), s, "000000")


# ---- the CLI: the key file is never opened with a PSAM ---------------------------------------------

@pytest.fixture
def files(tmp_path):
    path = key_file(tmp_path / "keys.json", PASS, "sm4-3.00")
    run = lambda *a: CliRunner().invoke(main, list(a), env={"SSCARD_KEYS_PASSPHRASE": PASS})  # noqa: E731
    assert run("image", "new", str(tmp_path / "card.json"), "--keys", str(path), "--profile", "sm4-3.00",
               "--activate").exit_code == 0
    r = run("image", "new", str(tmp_path / "psam.json"), "--psam", "--keys", str(path), "--profile", "sm4-3.00",
            "--region", "330300")
    assert r.exit_code == 0, r.output
    return tmp_path, run


def test_with_a_psam_the_key_file_is_never_opened(files, monkeypatch):
    tmp, run = files
    import personalize.keys as keys_mod
    opened = []
    monkeypatch.setattr(keys_mod, "load_key_file", lambda *a, **k: opened.append(a) or pytest.fail("key file opened"))
    r = run("read", "--image", str(tmp / "card.json"), "--profile", "sm4-3.00", "--psam", str(tmp / "psam.json"),
            "--json")
    assert r.exit_code == 0, r.output
    assert '"authenticated": true' in r.output and "330302199003071215" in r.output and not opened
    r = run("card", "write", "--image", str(tmp / "card.json"), "--profile", "sm4-3.00", "--psam",
            str(tmp / "psam.json"), "--set", "person_id=330300000099")
    assert r.exit_code == 0 and "read back" in r.output and not opened


def test_cli_refuses_key_data_changes_and_bad_psam_use_with_exit_2(files):
    tmp, run = files
    r = run("card", "write", "--image", str(tmp / "card.json"), "--psam", str(tmp / "psam.json"), "--set", "name=李四")
    assert r.exit_code == 2 and "cancel" in r.output
    r = run("read", "--image", str(tmp / "card.json"), "--keys", "k.json", "--psam", str(tmp / "psam.json"))
    assert r.exit_code == 2 and "not both" in r.output
    r = run("image", "new", str(tmp / "p2.json"), "--psam", "--profile", "sm4-3.00")
    assert r.exit_code == 2 and "--region" in r.output


def test_3_00_read_without_keys_or_psam_says_why(files):
    tmp, run = files
    r = run("read", "--image", str(tmp / "card.json"), "--profile", "sm4-3.00")
    assert r.exit_code == 0 and "key 0A" in r.output and "--psam" in r.output and "full name" not in r.output


def test_conformance_key_cases_run_with_a_psam(files):
    tmp, run = files
    r = run("conformance", "--image", str(tmp / "card.json"), "--profile", "sm4-3.00", "--psam",
            str(tmp / "psam.json"), "--json")
    import json
    doc = json.loads(r.output)
    by_id = {c["id"]: c["status"] for c in doc["cases"]}
    assert r.exit_code == 0 and doc["card"]["keys"] == "psam"
    assert by_id["AUTH-01"] == by_id["ACC-04"] == by_id["PIN-04"] == by_id["PIN-05"] == by_id["MAC-02"] == "pass"
    assert by_id["PSAM-01"] == by_id["PSAM-02"] == by_id["PSAM-03"] == "pass"
    assert image.load(tmp / "psam.json").atr[:4] == bytes.fromhex("3B680000")


def test_a_psam_cryptogram_is_masked_in_logs():
    from cardos import redact
    apdu = bytes.fromhex("80FA000008" + "11" * 8)
    assert "redacted" in redact.response(apdu, bytes.fromhex("A1B2C3D4E5F60718" + "9000"))


def test_a_3des_psam_on_an_sm4_card_is_named_as_such():
    with pytest.raises(ReadError, match="algorithm flag is SM4.*3DES"):
        read_card(InProcess(card("sm4-3.00")), prof("sm4-3.00"), module("default"))


def test_a_psam_without_rksse_says_it_cannot_open_key_0a():
    from personalize.profile import build
    doc = dict(prof("sm4-3.00").source)
    doc["psam"] = dict(doc["psam"], keys=[k for k in doc["psam"]["keys"] if k["master"] != "RK_SSSE"])
    lacking = build(doc)
    sm = psam.security_module(InProcess(a_psam("sm4-3.00")), lacking)
    with pytest.raises(ReadError, match="RKSSSE.*no key for RK_SSSE"):
        read_card(InProcess(card("sm4-3.00")), lacking, sm)


class _Recording(Card):
    """A card that notes every raw command it gets, in one shared list."""

    def __init__(self, template: Card, who: str, seen: list) -> None:
        super().__init__(Store(dict(template.store.data)), template.config)
        self.who, self.seen = who, seen

    def transmit(self, raw: bytes) -> bytes:
        resp = super().transmit(raw)
        self.seen.append(f"{self.who} {raw[:5].hex().upper()} -> {resp[-2:].hex().upper()}")
        return resp


def test_the_kiosk_write_sends_the_public_trace_headers_and_lengths():
    seen: list[str] = []
    c = _Recording(card(), "card", seen)
    p = _Recording(_psam_template(), "psam", seen)
    kiosk.write(InProcess(c), prof(), psam.security_module(InProcess(p), prof()), {"sex": "1", "person_id": "330300000777"})
    start = seen.index("card 0084000008 -> 9000")
    trace = [line for line in seen[start:] if not line.startswith("card 00B2")]
    assert trace[:14] == [
        "card 0084000008 -> 9000", "psam 00A4040006 -> 610A", "psam 00C000000A -> 9000",
        "psam BFDE481218 -> 9000", "psam 80FA000008 -> 6108", "psam 00C0000008 -> 9000",
        "card 0082000410 -> 9000", "card 00DC0A3003 -> 9000",                     # EF06 sex by tag (P2 30)
        "card 0084000008 -> 9000", "psam 00A4040006 -> 610A", "psam 00C000000A -> 9000",
        "psam BFDE481318 -> 9000", "psam 80FA000008 -> 6108", "psam 00C0000008 -> 9000"]
    assert "card 00DCEA680E -> 9000" in seen                                        # EF0D by tag (P2 68)
