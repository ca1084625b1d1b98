"""The minimal terminal (terminal/emv.py) and `sscard pay`: whole purchases against a personalized card."""

import json

import pytest
from click.testing import CliRunner

from cli import main
from personalize import lifecycle
from reader_bridge.transport import InProcess
from terminal.emv import KeyFileIssuer, Terminal
from tests.ss import card, keys, prof

PASS = {"SSCARD_KEYS_PASSPHRASE": "test passphrase"}


def active_card():
    c = card()
    lifecycle.perform(InProcess(c), lifecycle.life_script("activate", prof(), c.atr[-8:]), keys())
    return c


def test_offline_purchase_below_the_floor_limit_is_approved_by_the_card():
    c = active_card()
    r = Terminal(c.transmit, 1234, pin="888888", floor_limit=10000).run()
    assert r.outcome == "approved offline" and [cid for cid, _ in r.cryptograms] == [0x40]
    assert any(s.name == "VERIFY offline plaintext PIN" and s.sw == 0x9000 for s in r.steps)


def test_online_purchase_with_the_issuer_host():
    c = active_card()
    r = Terminal(c.transmit, 123456, pin="888888", issuer=KeyFileIssuer(keys())).run()
    assert r.outcome == "approved online"
    assert [cid for cid, _ in r.cryptograms] == [0x80, 0x40]
    assert any(s.name.startswith("EXTERNAL AUTHENTICATE") and s.sw == 0x9000 for s in r.steps)


def test_a_host_with_other_keys_declines_and_the_card_refuses_its_arpc():
    from personalize.keys import KeyRef, SoftwareKeys
    other = SoftwareKeys({"IMK_AC": (keys().algorithm(KeyRef("IMK_AC")), bytes(16), 1)})
    c = active_card()
    r = Terminal(c.transmit, 123456, issuer=KeyFileIssuer(other)).run()
    assert r.outcome == "declined" and r.tvr[4] & 0x40            # issuer authentication failed


def test_a_wrong_pin_fails_cardholder_verification():
    c = active_card()
    r = Terminal(c.transmit, 1234, pin="000000", floor_limit=10000).run()
    assert r.tvr[2] & 0x80 and any(s.sw == 0x63C2 for s in r.steps)


def test_the_terminal_terminates_on_a_pan_twice_in_the_afl_records():
    c = active_card()

    def doubled(apdu: bytes) -> bytes:
        if apdu[:4] == bytes.fromhex("00B20214"):                 # SFI 2 record 2 answers SFI 3's PAN record
            return c.transmit(bytes.fromhex("00B2011C00"))
        return c.transmit(apdu)
    r = Terminal(doubled, 1234).run()
    assert r.outcome == "terminated" and "tag 5A" in r.steps[-1].detail


@pytest.fixture
def made(tmp_path):
    keys_path, img = str(tmp_path / "keys.json"), str(tmp_path / "card.json")
    run = CliRunner().invoke
    assert run(main, ["keys", "new", keys_path, "--demo"], env=PASS).exit_code == 0
    assert run(main, ["image", "new", img, "--keys", keys_path, "--activate"], env=PASS).exit_code == 0
    return keys_path, img


def test_sscard_pay_prints_every_step_and_keeps_secrets_out_of_json(made):
    keys_path, img = made
    r = CliRunner().invoke(main, ["pay", "--image", img, "--amount", "12.34", "--floor-limit", "100"], env=PASS)
    assert r.exit_code == 0, r.output
    assert "GENERATE AC (first) asking TC" in r.output and r.output.strip().endswith("12.34: approved offline")
    r = CliRunner().invoke(main, ["pay", "--image", img, "--amount", "1234.56", "--keys", keys_path, "--pin", "--json"],
                           input="888888\n", env=PASS)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output[r.output.index("{"):])
    assert doc["outcome"] == "approved online" and [c["type"] for c in doc["cryptograms"]] == ["ARQC", "TC"]
    assert "888888" not in json.dumps(doc) and "9F26" not in json.dumps(doc)


@pytest.mark.parametrize("amount", ["12.345", "-1", "abc", "0"])
def test_sscard_pay_refuses_a_bad_amount_in_one_line(made, amount):
    _, img = made
    r = CliRunner().invoke(main, ["pay", "--image", img, "--amount", amount], env=PASS)
    assert r.exit_code == 2 and "--amount" in r.output


def _demo_ca():
    from personalize.emv_keys import CA_INDEX, CA_KEY, RID
    return {(RID, CA_INDEX): keys().rsa_public(CA_KEY)}


def test_sda_passes_with_the_published_ca_key_and_fails_on_altered_data():
    c = active_card()
    r = Terminal(c.transmit, 1234, floor_limit=10000, ca_keys=_demo_ca()).run()
    assert any(s.detail == "SDA passed" for s in r.steps) and not r.tvr[0] & 0xC0

    def altered(apdu: bytes) -> bytes:                         # the expiry in SFI 2 record 1, changed
        resp = c.transmit(apdu)
        return resp.replace(bytes.fromhex("5F2403340131"), bytes.fromhex("5F2403390131"))
    r = Terminal(altered, 1234, floor_limit=10000, ca_keys=_demo_ca()).run()
    assert r.tvr[0] & 0x40 and any("static data's hash" in s.detail for s in r.steps)


def test_without_the_ca_key_sda_is_not_performed():
    r = Terminal(active_card().transmit, 1234, floor_limit=10000).run()
    assert r.tvr[0] & 0x80 and any("not performed" in s.detail for s in r.steps)


def test_pay_trusts_the_ca_key_published_in_the_key_file_without_its_passphrase(made):
    keys_path, img = made
    r = CliRunner().invoke(main, ["pay", "--image", img, "--amount", "1", "--floor-limit", "100", "--ca", keys_path],
                           env={})
    assert r.exit_code == 0 and "SDA passed" in r.output, r.output
