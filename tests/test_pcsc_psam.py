"""A terminal with a PSAM: card in "Virtual PCD 00 00", PSAM in "00 01", through real pcscd + vpcd."""

import gc
import json
import types

import pytest
from click.testing import CliRunner

from cardos import image
from cli import main
from personalize import psam
from personalize.readout import read_card
from reader_bridge.pcsc import PcscTransport
from tests.pcsc_env import READERS, Served, wait_for_card
from tests.test_pcsc import pcscd
from tests.ss import SELECT_SSSE, card, keys, prof
from tests.test_psam import _other_keys

pytestmark = pytest.mark.pcsc


pcscd = pcscd  # the module's pcscd, started and stopped as test_pcsc does it


def _images(tmp_path, name="default", masters="demo"):
    c = card(name)
    if name == "default":
        from personalize import lifecycle
        from reader_bridge.transport import InProcess
        from tests.ss import factor
        lifecycle.perform(InProcess(c), lifecycle.life_script("activate", prof(), factor(c)), keys())
    source = keys(name) if masters == "demo" else _other_keys(name)
    p = psam.make(prof(name), source, "330300", psam.psam_serial(masters))
    image.save(c, tmp_path / "card.json")
    image.save(p, tmp_path / "psam.json")
    return tmp_path / "card.json", c.atr, tmp_path / "psam.json", p.atr


class _Two:
    """Card and PSAM served side by side by one `sscard serve --image card --image psam`."""

    def __init__(self, tmp_path, name="default", masters="demo"):
        self.card_path, card_atr, self.psam_path, psam_atr = _images(tmp_path, name, masters)
        self.served = Served(self.card_path, self.psam_path)
        wait_for_card(READERS[0], card_atr)
        wait_for_card(READERS[1], psam_atr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.served.stop()


def _step(t, hexapdu, expect):
    resp = t.transmit_raw(bytes.fromhex(hexapdu.replace(" ", "")))
    got = resp[-2:].hex().upper()
    assert got == expect or (expect == "61xx" and got.startswith("61")), f"{hexapdu[:10]}: {got}, trace says {expect}"
    return resp[:-2], resp[-1]


def _kiosk_authenticate(cardt, psamt, key_id: int, psam_index: int, card_div: bytes, city_div: bytes) -> None:
    """psam.md §1, the provincial kiosk trace, same headers and lengths (randoms differ)."""
    r, _ = _step(cardt, "0084000008", "9000")                                   # 1
    assert len(r) == 8
    _, n = _step(psamt, "00A4040006D15600000590", "61xx")                       # 2
    _step(psamt, f"00C00000{n:02X}", "9000")
    _step(psamt, f"BFDE48{psam_index:02X}18" + (card_div + city_div + r).hex(), "9000")   # 3
    _, n = _step(psamt, "80FA000008" + r.hex(), "61xx")                         # 4
    assert n == 8
    c, _ = _step(psamt, "00C0000008", "9000")
    _step(cardt, f"008200{key_id:02X}10" + (c + r).hex(), "9000")                # 5


def test_the_kiosk_trace_replayed_through_pcscd_answers_as_recorded_and_reads_back(tmp_path):
    with _Two(tmp_path):
        cardt, psamt = PcscTransport(READERS[0]), PcscTransport(READERS[1])
        try:
            _step(cardt, SELECT_SSSE, "9000")
            card_id, _ = _step(cardt, "00B2012C00", "9000")
            card_div, city_div = cardt.atr()[-8:], card_id[2:5].hex().encode() + b"sx"
            _kiosk_authenticate(cardt, psamt, 0x04, 0x12, card_div, city_div)
            _step(cardt, "00DC0A3003" + "0A0131", "9000")                        # EF06 sex by tag (P2 30)
            _step(cardt, "00DC07280B" + "0709" + b"B12345675".hex(), "9000")      # EF05 card number by tag (P2 28)
            _kiosk_authenticate(cardt, psamt, 0x0D, 0x13, card_div, city_div)    # 6: EF0D after key 0D
            _step(cardt, "00DCEA680E" + "EA0C" + b"330300000777".hex(), "9000")
            cardt.reset()
            r = read_card(cardt, prof())
            assert (r.items["sex"], r.items["card_number"], r.items["person_id"]) == ("1", "B12345675", "330300000777")
        finally:
            cardt.close()
            psamt.close()


def _reachable(root, limit=200000):
    """Every object an instance holds through its attributes and containers (not code, classes or modules)."""
    skip = (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.ModuleType)
    seen, todo, out = set(), [root], []
    while todo and len(seen) < limit:
        o = todo.pop()
        if id(o) in seen or isinstance(o, skip):
            continue
        seen.add(id(o))
        out.append(o)
        if isinstance(o, (bytes, bytearray, str, int, float)):
            continue
        if isinstance(o, dict):
            todo += list(o.keys()) + list(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            todo += list(o)
        elif hasattr(o, "__dict__"):
            todo += list(vars(o).values())
        else:
            todo += gc.get_referents(o)
    return out


def test_the_reachability_walk_finds_keys_an_in_process_psam_holds():
    from tests.test_psam import module
    masters = {v for _, v, _ in keys("sm4-3.00")._masters.values()}
    assert masters & {bytes(o) for o in _reachable(module("sm4-3.00")) if isinstance(o, (bytes, bytearray))}


def test_3_00_read_through_pcscd_with_the_psam_in_slot_1_and_no_key_reachable(tmp_path):
    with _Two(tmp_path, "sm4-3.00"):
        r = CliRunner().invoke(main, ["read", "--reader", READERS[0], "--psam", READERS[1], "--profile", "sm4-3.00",
                                      "--json"], env={"SSCARD_KEYS_PASSPHRASE": ""})
        assert r.exit_code == 0, r.output
        doc = json.loads(r.output)
        assert doc["authenticated"] and doc["items"]["ssn"] == "330302199003071215" and doc["refused"] == []
        cardt, psamt = PcscTransport(READERS[0]), PcscTransport(READERS[1])
        try:
            sm = psam.security_module(psamt, prof("sm4-3.00"))
            assert read_card(cardt, prof("sm4-3.00"), sm).items["name"] == "张小燕"
            masters = {v for _, v, _ in keys("sm4-3.00")._masters.values()}
            held = [o for o in _reachable(sm) if isinstance(o, (bytes, bytearray))]
            assert held and not masters & {bytes(b) for b in held}
        finally:
            cardt.close()
            psamt.close()


def test_a_psam_of_other_keys_fails_at_internal_authenticate_through_pcscd(tmp_path):
    with _Two(tmp_path, "sm4-3.00", masters="other"):
        r = CliRunner().invoke(main, ["read", "--reader", READERS[0], "--psam", READERS[1], "--profile", "sm4-3.00"])
        assert r.exit_code == 1 and "INTERNAL AUTHENTICATE" in r.output and "another issuer" in r.output


def test_pin_reload_and_unblock_at_the_counter_with_the_psam(tmp_path):
    with _Two(tmp_path):
        run = CliRunner().invoke
        r = run(main, ["card", "pin", "reload", "--reader", READERS[0], "--psam", READERS[1]], input="246800\n246800\n")
        assert r.exit_code == 0 and "9000  ss: reset PIN" in r.output
        r = run(main, ["card", "pin", "unblock", "--reader", READERS[0], "--psam", READERS[1]])
        assert r.exit_code == 0 and "9000  ss: unblock PIN" in r.output
        t = PcscTransport(READERS[0])
        try:
            assert t.transmit(bytes.fromhex(SELECT_SSSE))[-2:] == b"\x90\x00"
            assert t.transmit(bytes.fromhex("0020000003246800"))[-2:] == b"\x90\x00"
        finally:
            t.close()


def test_the_conformance_suite_runs_its_key_cases_with_the_psam_through_pcscd(tmp_path):
    from conformance import runner
    with _Two(tmp_path, "sm4-3.00"):
        cardt, psamt = PcscTransport(READERS[0]), PcscTransport(READERS[1])
        try:
            out = {o.id: o for o in runner.run(cardt, prof("sm4-3.00"), psam.security_module(psamt, prof("sm4-3.00")),
                                               destructive=True)}
        finally:
            cardt.close()
            psamt.close()
    assert [(o.id, o.message) for o in out.values() if o.status in ("fail", "error")] == []
    assert all(out[i].status == "pass" for i in ("AUTH-01", "AUTH-02", "ACC-04", "PIN-02", "PIN-04", "PIN-05",
                                                  "MAC-01", "LIFE-01", "PSAM-01", "PSAM-02", "PSAM-03"))
