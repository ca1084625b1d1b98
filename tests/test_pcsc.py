"""The simulated card behind real pcscd + vpcd, driven by pyscard, opensc-tool and pcsc_scan."""

import json
import signal
import subprocess
from pathlib import Path

import pytest

from cardos import image
from personalize import cardholders, virtual
from personalize.readout import read_card
from reader_bridge.pcsc import PcscTransport, list_readers
from tests.pcsc_env import READERS, Served, serving, start_pcscd, stop_pcscd, wait_for_card
from tests.ss import SELECT_SSSE, factor, keys, prof

pytestmark = pytest.mark.pcsc


@pytest.fixture(scope="module", autouse=True)
def pcscd():
    start_pcscd()
    yield
    stop_pcscd()


def _image(tmp_path, filename="card.json", **holder):
    # Each test's chip gets its own serial, so a reader still showing the last test's card
    # cannot pass for this one.
    c = virtual.make(prof(), dict(cardholders.sample(), **holder), keys(), virtual.chip_serial(str(tmp_path / filename)))
    from personalize import lifecycle
    from reader_bridge.transport import InProcess
    lifecycle.perform(InProcess(c), lifecycle.life_script("activate", prof(), factor(c)), keys())
    path = tmp_path / filename
    image.save(c, path)
    return path, c.atr


def _sw(t, hexapdu):
    return t.transmit(bytes.fromhex(hexapdu))[-2:].hex().upper()


def test_select_read_verify_and_power_cycle_persistence(tmp_path):
    path, atr = _image(tmp_path)
    with serving(path, atr) as (t, served):
        assert t.atr() == atr
        assert _sw(t, SELECT_SSSE) == "9000"
        r = read_card(t, prof())
        assert r.full_name == "张小燕" and r.items["ssn"] == "330302199003071215"
        assert _sw(t, SELECT_SSSE) == "9000"
        assert _sw(t, "0020000003999999") == "63C5"
        assert _sw(t, "0020000003999999") == "63C4"
        t.close()
        code, err = served.stop()
        assert code == 0, err
    assert image.load(path).fs.key((0x3F00, 0xDDF1), 0x3A, 0).tries_left == 4
    with serving(path, atr) as (t, _):                      # power cycle: the counter stays where it was
        assert _sw(t, SELECT_SSSE) == "9000"
        assert _sw(t, "00200000") == "63C4"
        assert _sw(t, "0020000003123456") == "9000"


def test_serve_reconnects_when_pcscd_and_vpcd_restart(tmp_path):
    path, atr = _image(tmp_path)
    served = Served(path)
    try:
        wait_for_card(READERS[0], atr)
        stop_pcscd()
        start_pcscd()
        wait_for_card(READERS[0], atr)                      # the same server found the new vpcd
        t = PcscTransport(READERS[0])
        try:
            assert _sw(t, SELECT_SSSE) == "9000"
        finally:
            t.close()
        assert served.proc.poll() is None
    finally:
        served.stop()


def test_opensc_tool_and_pcsc_scan_see_the_card(tmp_path):
    path, atr = _image(tmp_path)
    served = Served(path)
    try:
        wait_for_card(READERS[0], atr)
        out = subprocess.run(["opensc-tool", "-r", READERS[0], "-s", "00A40000023F00"],
                             capture_output=True, text=True, timeout=30).stdout
        assert "Received (SW1=0x90, SW2=0x00)" in out and "6F 04 83 02 3F 00" in out
        scan = subprocess.run(["pcsc_scan", "-n", "-t", "2"], capture_output=True, text=True, timeout=30).stdout
        spaced = " ".join(f"{b:02X}" for b in atr)
        assert READERS[0] in scan and spaced in scan
    finally:
        served.stop()


def test_two_slots_serve_two_cards(tmp_path):
    a, atr_a = _image(tmp_path, "a.json")
    b, atr_b = _image(tmp_path, "b.json", name="李四", card_number="X00000019", ssn="11010519491231002X", sex="2",
                      birth_date="19491231")
    assert atr_a != atr_b
    served = Served(a, b)
    try:
        wait_for_card(READERS[0], atr_a)
        wait_for_card(READERS[1], atr_b)
        names = []
        for reader in READERS:
            t = PcscTransport(reader)
            try:
                names.append(read_card(t, prof()).full_name)
            finally:
                t.close()
        assert names == ["张小燕", "李四"]
    finally:
        served.stop()


def test_sigkill_loses_at_most_the_command_in_flight(tmp_path):
    path, atr = _image(tmp_path)
    with serving(path, atr) as (t, served):
        assert _sw(t, SELECT_SSSE) == "9000"
        for _ in range(3):
            assert _sw(t, "0020000003999999")[:3] == "63C"
        served.proc.send_signal(signal.SIGKILL)
        served.proc.wait()
    card = image.load(path)                                   # loads: never half-written
    assert card.fs.key((0x3F00, 0xDDF1), 0x3A, 0).tries_left == 3


def test_readers_lists_presence(tmp_path):
    path, atr = _image(tmp_path)
    served = Served(path)
    try:
        wait_for_card(READERS[0], atr)
        found = {r.name: r for r in list_readers()}
        assert found[READERS[0]].present and found[READERS[0]].atr == atr
        assert not found[READERS[1]].present
    finally:
        served.stop()


def test_a_batch_of_200_blank_cards_through_two_readers(tmp_path):
    from personalize import batch
    from personalize.keys import KeyRef, save_key_file  # noqa: F401
    holders = cardholders.generate(200, seed=21)
    csv_path = tmp_path / "holders.csv"
    cardholders.write_csv(str(csv_path), holders)
    hoppers = [tmp_path / "feeder0", tmp_path / "feeder1"]
    # Uneven stock on purpose: the second feeder runs dry first, its worker hands its cardholder
    # back, and the first reader must finish the batch.
    for n, (folder, stock) in enumerate(zip(hoppers, (120, 80))):
        folder.mkdir()
        for i in range(stock):
            chip = virtual.blank(prof(), virtual.chip_serial(f"{tmp_path}:{n}:{i}"))
            image.save(chip, folder / f"chip{i:03d}.json")
    feeders = [Served(hopper=hoppers[0], port=35963), Served(hopper=hoppers[1], port=35964)]
    try:
        opts = batch.Options(prof(), keys(), str(csv_path), str(tmp_path / "journal.sqlite"),
                             str(tmp_path / "audit.jsonl"), readers=READERS, init=True, card_timeout=8)
        result = batch.run_batch(opts)
    finally:
        for f in feeders:
            f.proc.send_signal(signal.SIGTERM)
            f.proc.wait(timeout=15)
    assert (result.done, result.quarantined, result.pending) == (200, 0, 0), result.stopped
    assert result.stopped is None
    numbers = set()
    for folder in hoppers:
        for path in sorted(folder.glob("*.json")):
            card = image.load(path)
            card.power_on()
            from reader_bridge.transport import InProcess
            r = read_card(InProcess(card), prof())
            numbers.add(r.items["card_number"])
            assert r.items["card_id"].endswith(card.atr[-8:].hex().upper())
    assert numbers == {h["card_number"] for h in holders}
    from personalize.audit import verify
    from personalize.journal import open_journal
    assert verify(opts.audit, keys().audit_mac, open_journal(opts.journal, create=False))[1] == []
    per_reader = {}
    for line in Path(opts.audit).read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "card-done":
            per_reader[event["reader"]] = per_reader.get(event["reader"], 0) + 1
    assert per_reader == {READERS[0]: 120, READERS[1]: 80}        # each feeder emptied, none left over


def test_the_conformance_suite_passes_through_pcscd(tmp_path):
    from conformance import runner
    path, atr = _image(tmp_path)
    served = Served(path)
    try:
        wait_for_card(READERS[0], atr)
        t = PcscTransport(READERS[0])
        try:
            out = runner.run(t, prof(), keys(), destructive=True)
        finally:
            t.close()
    finally:
        served.stop()
    bad = [(o.id, o.message) for o in out if o.status in ("fail", "error")]
    assert bad == [] and len(out) > 50


def test_cli_apdu_read_and_readers_through_a_real_reader(tmp_path):
    from click.testing import CliRunner

    from cli import main
    path, atr = _image(tmp_path)
    served = Served(path)
    try:
        wait_for_card(READERS[0], atr)
        runner = CliRunner()
        r = runner.invoke(main, ["readers"])
        assert f"{READERS[0]}: card, ATR {atr.hex().upper()}" in r.output and f"{READERS[1]}: no card" in r.output
        r = runner.invoke(main, ["apdu", "--reader", READERS[0], SELECT_SSSE, "00B2072C00", "0020000003999999"])
        assert r.exit_code == 0 and r.output.splitlines()[1].endswith(" 9000") and r.output.splitlines()[2] == "63C5"
        r = runner.invoke(main, ["read", "--reader", "Virtual PCD 00 00", "--json"])
        assert r.exit_code == 0 and json.loads(r.output)["full_name"] == "张小燕"
        r = runner.invoke(main, ["read", "--reader", "No Such Reader"])
        assert r.exit_code != 0 and "no reader named 'No Such Reader'" in r.output
    finally:
        served.stop()
