"""The debit application through real pcscd + vpcd: PyPI emvtool reads it, and whole online and
offline purchases have their ARQC, TC and ARPC checked with PyPI pyemv, not with our own code."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyemv import ac as pyemv_ac
from pyemv import kd as pyemv_kd

from cardos import image
from cardos.tlv import find
from personalize import cardholders, lifecycle, virtual
from personalize.keys import KeyRef
from reader_bridge.transport import InProcess
from terminal.emv import Terminal
from tests.pcsc_env import READERS, ROOT, serving, start_pcscd, stop_pcscd
from tests.ss import key_file, keys, prof

pytestmark = [pytest.mark.pcsc,
              pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")]
AC_TAGS = (0x9F02, 0x9F03, 0x9F1A, 0x95, 0x5F2A, 0x9A, 0x9C, 0x9F37)
EMVTOOL = Path(sys.executable).parent.parent / "emvtool" / "bin" / "emvtool"   # scripts/setup.sh


@pytest.fixture(scope="module", autouse=True)
def pcscd():
    start_pcscd()
    yield
    stop_pcscd()


def _image(tmp_path, name="default"):
    c = virtual.make(prof(name), cardholders.sample(), keys(name), virtual.chip_serial(str(tmp_path)))
    lifecycle.perform(InProcess(c), lifecycle.life_script("activate", prof(name), c.atr[-8:]), keys(name))
    path = tmp_path / "card.json"
    image.save(c, path)
    return path, c.atr


def _session_key(atc: int) -> bytes:
    imk = keys().value_for_plain_load(KeyRef("IMK_AC"))
    icc_mk = pyemv_kd.derive_icc_mk_a(imk, cardholders.sample()["pan"], "00")
    return pyemv_kd.derive_common_sk(icc_mk, atc.to_bytes(2, "big") + bytes(6))


class PyemvIssuer:
    """An issuer host built on pyemv alone: checks the ARQC and makes the ARPC."""

    def __init__(self):
        self.checked = []

    def authorize(self, req):
        atc = int.from_bytes(req[0x9F36], "big")
        data = b"".join(req[t] for t in AC_TAGS) + req[0x82] + req[0x9F36] + req[0x9F10][3:7]
        sk = _session_key(atc)
        self.checked.append(pyemv_ac.generate_ac(sk, data) == req[0x9F26])
        return b"00", pyemv_ac.generate_arpc_1(sk, req[0x9F26], b"00") + b"00"


class Recorder:
    """Keeps every command and answer a transport carried."""

    def __init__(self, t):
        self.t, self.log = t, []

    def transmit(self, apdu):
        resp = self.t.transmit(apdu)
        self.log.append((apdu, resp))
        return resp


def _check_ac(exchange, terminal_values, aip) -> int:
    apdu, resp = exchange
    body = find(resp[:-2], 0x80)
    cid, atc, ac, iad = body[0], body[1:3], body[3:11], body[11:]
    data = b"".join(terminal_values[t] for t in AC_TAGS) + aip + atc + iad[3:7]
    assert ac == pyemv_ac.generate_ac(_session_key(int.from_bytes(atc, "big")), data)
    return cid


def _gacs(log):
    return [(a, r) for a, r in log if a[:2] == b"\x80\xae" and r[-2:] == b"\x90\x00"]


@pytest.mark.parametrize("name", ["default", "dda"])
def test_emvtool_lists_the_application_and_reads_its_data(tmp_path, name):
    path, atr = _image(tmp_path, name)
    with serving(path, atr) as (t, _):
        t.close()
        from smartcard.System import readers
        index = [str(r) for r in readers()].index(READERS[0])
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        for args in (["listapps"], ["info"], ["appdata", "0"]):
            r = subprocess.run([str(EMVTOOL), "-r", str(index), *args], capture_output=True, text=True,
                               timeout=60, env=env)
            assert r.returncode == 0 and "Traceback" not in r.stderr + r.stdout, (args, r.stdout, r.stderr)
            if args == ["listapps"]:
                assert "A000000333010101" in r.stdout.replace(" ", "").upper() and "PBOC DEBIT" in r.stdout
            if args == ["appdata", "0"]:
                assert "Application Data" in r.stdout and "Error" not in r.stdout


def test_offline_and_online_purchases_checked_with_pyemv(tmp_path):
    path, atr = _image(tmp_path)
    with serving(path, atr) as (t, _):
        rec = Recorder(t)
        offline = Terminal(rec.transmit, 1234, pin="888888", floor_limit=10000).run()
        assert offline.outcome == "approved offline"
        (gac,) = _gacs(rec.log)
        assert _check_ac(gac, offline.data, offline.data[0x82]) == 0x40

        rec.log.clear()
        issuer = PyemvIssuer()
        online = Terminal(rec.transmit, 123456, pin="888888", issuer=issuer).run()
        assert online.outcome == "approved online" and issuer.checked == [True]
        first, second = _gacs(rec.log)
        ext = [(a, r) for a, r in rec.log if a[:2] == b"\x00\x82"]
        assert ext and ext[0][1][-2:] == b"\x90\x00"                    # the card accepted pyemv's ARPC
        assert find(first[1][:-2], 0x80)[0] == 0x80
        # The second cryptogram covers the CDOL2's TVR and unpredictable number.
        cdol2 = second[0][5:-1]
        values = {**online.data, 0x95: cdol2[12:17], 0x9F37: cdol2[17:21]}
        assert _check_ac(second, values, online.data[0x82]) == 0x40


def test_atc_survives_a_power_cycle_and_a_serve_restart(tmp_path):
    path, atr = _image(tmp_path)
    with serving(path, atr) as (t, served):
        r = Terminal(t.transmit, 100, floor_limit=10000).run()
        atc = r.cryptograms[-1][1]
        t.reset()                                                          # power cycle through the reader
        assert t.transmit(bytes.fromhex("00A4040008A000000333010101"))[-2:] == b"\x90\x00"
        assert t.transmit(bytes.fromhex("80CA9F3600"))[:-2] == bytes.fromhex("9F3602") + atc.to_bytes(2, "big")
        t.close()
        code, err = served.stop()
        assert code == 0, err
    with serving(path, atr) as (t, _):
        r = Terminal(t.transmit, 100, floor_limit=10000).run()
        assert r.cryptograms[0][1] == atc + 1


def test_sscard_pay_performs_dda_through_pcscd(tmp_path):
    path, atr = _image(tmp_path, "dda")
    keyfile = key_file(tmp_path / "keys.json", "pcsc test passphrase", "dda")
    with serving(path, atr) as (t, _):
        t.close()
        r = subprocess.run([sys.executable, "-m", "cli", "pay", "--reader", READERS[0], "--amount", "12.34",
                            "--floor-limit", "100", "--pin", "--ca", keyfile], input="888888\n", cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert any(line.startswith("9000  INTERNAL AUTHENTICATE") for line in lines), r.stdout
    assert "offline data authentication: DDA passed" in r.stdout and r.stdout.strip().endswith("12.34: approved offline")
