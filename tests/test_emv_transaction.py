"""GENERATE AC, issuer authentication, ATC and the transaction log, checked against PyPI pyemv
(an independent implementation of EMV Book 2's key derivation, cryptograms and ARPC)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyemv import ac as pyemv_ac
from pyemv import kd as pyemv_kd

from cardos.apdu import build
from cardos.card import Card
from cardos.nvm import PowerLoss, Store
from cardos.tlv import find
from personalize import cardholders
from personalize.keys import KeyRef
from tests.ss import card, keys
from tests.util import ok, sw

pytestmark = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")  # pyemv's 3DES

SELECT_BANK = "00A4040008A000000333010101"
AC_TAGS = ("9F02", "9F03", "9F1A", "95", "5F2A", "9A", "9C", "9F37")
AIP = "5C00"                                                    # SDA, CVM, risk management, issuer auth.


def terminal_data(amount: int = 1234, un: str = "11223344", tvr: str = "0000000000") -> dict[str, str]:
    return {"9F02": f"{amount:012d}", "9F03": "000000000000", "9F1A": "0156", "95": tvr, "5F2A": "0156",
            "9A": "261127", "9C": "00", "9F37": un, "9F21": "120000"}


def cdol1(t: dict[str, str]) -> bytes:
    return bytes.fromhex("".join(t[k] for k in ("9F02", "9F03", "9F1A", "95", "5F2A", "9A", "9C", "9F37", "9F21")))


def cdol2(arc: bytes, issuer_data: bytes = bytes(10), tvr: str = "0000000000", un: str = "55667788") -> bytes:
    return arc + issuer_data + bytes.fromhex(tvr + un)


def icc_ac_key() -> bytes:
    imk = keys().value_for_plain_load(KeyRef("IMK_AC"))
    return pyemv_kd.derive_icc_mk_a(imk, cardholders.sample()["pan"], "00")


def expected_ac(t: dict[str, str], atc: int, iad: bytes) -> bytes:
    """The cryptogram as an issuer host computes it, with pyemv (not our code)."""
    sk = pyemv_kd.derive_common_sk(icc_ac_key(), atc.to_bytes(2, "big") + bytes(6))
    data = bytes.fromhex("".join(t[k] for k in AC_TAGS) + AIP) + atc.to_bytes(2, "big") + iad[3:7]
    return pyemv_ac.generate_ac(sk, data)


def arpc(arqc: bytes, atc: int, arc: bytes) -> bytes:
    sk = pyemv_kd.derive_common_sk(icc_ac_key(), atc.to_bytes(2, "big") + bytes(6))
    return pyemv_ac.generate_arpc_1(sk, arqc, arc)


def start(c):
    ok(c, SELECT_BANK)
    ok(c, "80A8000002830000")


def gac(c, p1: int, data: bytes) -> tuple[int, int, bytes, bytes]:
    """CID, ATC, AC and IAD of a GENERATE AC answer (format 1)."""
    body = find(ok(c, build(0x80, 0xAE, p1, 0x00, data, 0)), 0x80)
    return body[0], int.from_bytes(body[1:3], "big"), body[3:11], body[11:]




def test_offline_tc_matches_pyemv():
    c = card()
    start(c)
    t = terminal_data()
    cid, atc, ac, iad = gac(c, 0x40, cdol1(t))
    assert cid == 0x40 and atc == 1
    assert ac == expected_ac(t, atc, iad)


def test_online_arqc_then_arpc_by_external_authenticate_then_tc():
    c = card()
    start(c)
    t = terminal_data(amount=99999999)                      # above the offline limit: the card goes online
    cid, atc, arqc, iad = gac(c, 0x40, cdol1(t))
    assert cid == 0x80 and arqc == expected_ac(t, atc, iad)
    ok(c, build(0x00, 0x82, 0x00, 0x00, arpc(arqc, atc, b"00") + b"00"))
    cid2, atc2, tc, iad2 = gac(c, 0x40, cdol2(b"00"))
    t2 = dict(t, **{"95": "0000000000", "9F37": "55667788"})
    assert (cid2, atc2) == (0x40, atc) and tc == expected_ac(t2, atc, iad2)
    start(c)
    assert ok(c, "80CA9F1300")[3:] == atc.to_bytes(2, "big")      # the last online ATC moved


def test_arpc_in_tag_91_of_the_second_generate_ac():
    c = card()
    start(c)
    t = terminal_data()
    _, atc, arqc, _ = gac(c, 0x80, cdol1(t))
    cid, _, _, _ = gac(c, 0x40, cdol2(b"00", arpc(arqc, atc, b"00") + b"00"))
    assert cid == 0x40


def test_a_wrong_arpc_is_6300_and_the_card_declines_then_goes_online_next_time():
    c = card()
    start(c)
    _, atc, arqc, _ = gac(c, 0x80, cdol1(terminal_data()))
    bad = bytearray(arpc(arqc, atc, b"00"))
    bad[0] ^= 1
    assert sw(c, build(0x00, 0x82, 0x00, 0x00, bytes(bad) + b"00")) == 0x6300
    cid, _, _, iad = gac(c, 0x40, cdol2(b"00"))
    assert cid == 0x00 and iad[4] & 0x08                                # AAC; CVR: issuer authentication failed
    start(c)
    assert gac(c, 0x40, cdol1(terminal_data()))[0] == 0x80             # no offline TC after that


def test_declined_by_the_issuer_is_an_aac():
    c = card()
    start(c)
    _, atc, arqc, _ = gac(c, 0x80, cdol1(terminal_data()))
    ok(c, build(0x00, 0x82, 0x00, 0x00, arpc(arqc, atc, b"05") + b"05"))
    assert gac(c, 0x40, cdol2(b"05"))[0] == 0x00


def test_the_terminal_asking_an_aac_gets_one():
    c = card()
    start(c)
    assert gac(c, 0x00, cdol1(terminal_data()))[0] == 0x00


def test_consecutive_offline_limit_sends_the_card_online():
    c = card()
    cids = []
    for _ in range(4):
        start(c)
        cids.append(gac(c, 0x40, cdol1(terminal_data()))[0])
    assert cids == [0x40, 0x40, 0x40, 0x80]                            # 9F14 = 3


def test_sequence_rules():
    c = card()
    ok(c, SELECT_BANK)
    assert sw(c, build(0x80, 0xAE, 0x40, 0x00, cdol1(terminal_data()), 0)) == 0x6985   # no GPO
    ok(c, "80A8000002830000")
    assert sw(c, build(0x80, 0xAE, 0x40, 0x00, b"\x00" * 5, 0)) == 0x6700               # CDOL1 length
    gac(c, 0x40, cdol1(terminal_data()))
    assert sw(c, build(0x80, 0xAE, 0x40, 0x00, cdol2(b"00"), 0)) == 0x6985              # TC was final
    start(c)
    gac(c, 0x80, cdol1(terminal_data()))
    assert sw(c, build(0x80, 0xAE, 0x80, 0x00, cdol2(b"00"), 0)) == 0x6A86              # no ARQC twice
    gac(c, 0x00, cdol2(b"00"))
    assert sw(c, build(0x80, 0xAE, 0x00, 0x00, cdol2(b"00"), 0)) == 0x6985              # no third


def test_transaction_log_records_approved_transactions_newest_first():
    c = card()
    for amount in (100, 200):
        start(c)
        gac(c, 0x40, cdol1(terminal_data(amount=amount)))
    ok(c, SELECT_BANK)
    fmt = find(ok(c, "80CA9F4F00"), 0x9F4F)
    newest, older = ok(c, "00B2015C00"), ok(c, "00B2025C00")
    assert len(newest) == 25 and fmt.startswith(bytes.fromhex("9A03"))
    assert newest[6:12] == bytes.fromhex(f"{200:012d}")
    assert older[6:12] == bytes.fromhex(f"{100:012d}") and newest[-2:] == b"\x00\x02"
    assert sw(c, "00B2035C00") == 0x6A83


def test_atc_survives_a_power_cycle():
    c = card()
    start(c)
    _, atc, _, _ = gac(c, 0x40, cdol1(terminal_data()))
    c.power_off()
    c.power_on()
    ok(c, SELECT_BANK)
    assert ok(c, "80CA9F3600")[3:] == (atc).to_bytes(2, "big")


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40))
def test_a_torn_generate_ac_never_reuses_an_atc(step):
    base = card()
    seen = set()
    c = Card(Store(dict(base.store.data)), base.config)
    for _ in range(2):
        c.power_on()
        start(c)
        c.store.arm_tear(step)
        try:
            answer = c.transmit(build(0x80, 0xAE, 0x40, 0x00, cdol1(terminal_data()), 0))
        except PowerLoss:
            c.store.tear_at = None
            continue
        c.store.tear_at = None
        if answer[-2:] == b"\x90\x00":
            atc = int.from_bytes(find(answer[:-2], 0x80)[1:3], "big")
            assert atc not in seen
            seen.add(atc)
    c.power_on()
    ok(c, SELECT_BANK)
    final = int.from_bytes(ok(c, "80CA9F3600")[3:], "big")
    assert all(a <= final for a in seen)
    start(c)
    assert gac(c, 0x40, cdol1(terminal_data()))[1] == final + 1 and final + 1 not in seen
