"""The debit application's data as an EMV terminal reads it (Book 1 §11-12, Book 3 §10): PSE, FCI,
AFL and records, GET DATA, and the Luhn check on every PAN the toolkit prepares."""

import csv
import json

from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from applets.encoding import check_pan
from cli import main
from cardos.tlv import find, parse
from personalize import cardholders
from tests.ss import card
from tests.util import ok, sw

SELECT_PSE = "00A404000E" + b"1PAY.SYS.DDF01".hex()
SELECT_BANK = "00A4040008A000000333010101"


def afl_records(c) -> list[bytes]:
    """Every record the GPO's AFL names, read as a terminal reads them."""
    ok(c, SELECT_BANK)
    gpo = ok(c, "80A8000002830000")
    afl = find(gpo, 0x80)[2:]
    out = []
    for i in range(0, len(afl), 4):
        sfi, first, last = afl[i] >> 3, afl[i + 1], afl[i + 2]
        for n in range(first, last + 1):
            out.append(ok(c, f"00B2{n:02X}{(sfi << 3) | 4:02X}00"))
    return out


def tags_in(records: list[bytes]) -> list[int]:
    tags = []
    for rec in records:
        assert rec[0] == 0x70
        tags += [t for t, _ in parse(find(rec, 0x70))]
    return tags


def test_pse_fci_names_the_directory_sfi_in_a5_88():
    fci = ok(card(), SELECT_PSE)
    a5 = find(fci, 0xA5)
    assert a5 is not None and find(a5, 0x88) == b"\x01"


def test_the_directory_record_lists_the_adf():
    c = card()
    ok(c, SELECT_PSE)
    entry = find(ok(c, "00B2010C00"), 0x61)
    assert find(entry, 0x4F) == bytes.fromhex("A000000333010101")


def test_afl_records_carry_the_pan_once_and_every_mandatory_item():
    tags = tags_in(afl_records(card()))
    assert tags.count(0x5A) == 1
    for tag in (0x5F24, 0x8C, 0x8D, 0x8E, 0x57, 0x5F20):
        assert tags.count(tag) == 1, f"{tag:X}"


def test_track2_equivalent_agrees_with_pan_and_expiry():
    records = b"".join(afl_records(card()))
    pan = find(records, 0x5A).hex().upper().rstrip("F")
    track2 = find(records, 0x57).hex().upper()
    assert track2.startswith(pan + "D" + find(records, 0x5F24).hex()[:4])
    assert check_pan(pan) is None


def test_terminals_that_read_sfi_2_and_3_directly_still_find_the_pan():
    c = card()
    ok(c, SELECT_BANK)
    assert find(ok(c, "00B2011400"), 0x5A) == find(ok(c, "00B2011C00"), 0x5A)


def test_second_gpo_in_one_selection_is_refused():
    c = card()
    ok(c, SELECT_BANK)
    ok(c, "80A8000002830000")
    assert sw(c, "80A8000002830000") == 0x6985
    ok(c, SELECT_BANK)                                  # a new selection starts a new transaction
    ok(c, "80A8000002830000")


def test_select_next_occurrence_without_another_application_is_6a82():
    c = card()
    ok(c, "00A4040007A0000003330101")
    assert sw(c, "00A4040207A0000003330101") == 0x6A82


def test_get_data_atc_last_online_atc_and_log_format():
    c = card()
    ok(c, SELECT_BANK)
    assert ok(c, "80CA9F3600")[:3] == bytes.fromhex("9F3602")
    assert ok(c, "80CA9F1300")[:3] == bytes.fromhex("9F1302")
    log_format = find(ok(c, "80CA9F4F00"), 0x9F4F)
    assert log_format and 0x9F36 in [t for t, _ in _dol(log_format)]


def test_cvm_list_offers_offline_plaintext_then_online_pin():
    cvm = find(b"".join(afl_records(card())), 0x8E)
    rules = [cvm[i] & 0x3F for i in range(8, len(cvm), 2)]
    assert rules[:2] == [0x01, 0x02]


def _dol(dol: bytes):
    from cardos.tlv import parse_dol
    return parse_dol(dol)


# ---- Luhn ---------------------------------------------------------------------------------

def test_sample_pan_passes_luhn():
    assert check_pan(cardholders.sample()["pan"]) is None


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10**9), st.integers(1, 30))
def test_generated_batches_carry_valid_pans(start, n):
    for h in cardholders.generate(n, start=start):
        assert check_pan(h["pan"]) is None, h["pan"]


@given(st.text("0123456789", min_size=12, max_size=19))
def test_luhn_changes_with_any_single_digit(pan):
    if check_pan(pan) is None:
        i = len(pan) // 2
        other = pan[:i] + str((int(pan[i]) + 1) % 10) + pan[i + 1:]
        assert check_pan(other) is not None


def test_perso_check_rejects_a_pan_with_a_wrong_check_digit(tmp_path):
    h = dict(cardholders.sample(), pan="6217990000001234567")
    path = tmp_path / "holders.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(h))
        w.writeheader()
        w.writerow(h)
    r = CliRunner().invoke(main, ["perso", "check", "--cardholders", str(path), "--json"])
    assert r.exit_code == 1
    problems = json.loads(r.output)["problems"]
    assert [(p["line"], p["field"]) for p in problems] == [(2, "pan")] and "Luhn" in problems[0]["reason"]


def test_the_example_cardholder_file_has_only_valid_pans():
    rows = cardholders.read_csv("examples/cardholders.csv")
    assert rows and all(check_pan(h["pan"]) is None for _, h in rows)


# ---- SDA, checked with cryptography's RSA keys and hashes (not with our terminal) ------------

def _recover(pub, data: bytes) -> bytes:
    nums = pub.public_numbers()
    size = pub.key_size // 8
    return pow(int.from_bytes(data, "big"), nums.e, nums.n).to_bytes(size, "big")


def _sha1(data: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    h = hashes.Hash(hashes.SHA1())
    h.update(data)
    return h.finalize()


def test_sda_issuer_certificate_and_signed_static_data_verify_under_the_published_ca_key(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import rsa

    from personalize.keys import ca_public_key
    keys_path = tmp_path / "keys.json"
    assert CliRunner().invoke(main, ["keys", "new", str(keys_path), "--demo"],
                              env={"SSCARD_KEYS_PASSPHRASE": "x"}).exit_code == 0
    rid, index, n, e = ca_public_key(keys_path)                    # published: no passphrase needed
    ca = rsa.RSAPublicNumbers(e, n).public_key()
    c = card()
    records = afl_records(c)
    data = {}
    for rec in records:
        data.update(dict(parse(find(rec, 0x70))))
    assert rid == bytes.fromhex("A000000333") and data[0x8F][0] == index
    cert = _recover(ca, data[0x90])
    assert cert[:2] == b"\x6a\x02" and cert[-1] == 0xBC
    assert _sha1(cert[1:-21] + data.get(0x92, b"") + data[0x9F32]) == cert[-21:-1]
    modulus = (cert[15:-21] + data.get(0x92, b""))[: cert[13]]
    issuer = rsa.RSAPublicNumbers(int.from_bytes(data[0x9F32], "big"), int.from_bytes(modulus, "big")).public_key()
    ssad = _recover(issuer, data[0x93])
    assert ssad[:2] == b"\x6a\x03" and ssad[-1] == 0xBC
    gpo = find(ok(c, SELECT_BANK) and ok(c, "80A8000002830000"), 0x80)
    aip, afl = gpo[:2], gpo[2:]
    static = b""
    for i in range(0, len(afl), 4):
        sfi, first, oda = afl[i] >> 3, afl[i + 1], afl[i + 3]
        for n_ in range(first, first + oda):
            static += find(ok(c, f"00B2{n_:02X}{(sfi << 3) | 4:02X}00"), 0x70)
    assert data[0x9F4A] == b"\x82"
    assert _sha1(ssad[1:-21] + static + aip) == ssad[-21:-1]
