"""Profile → APDU scripts: the initialization of a blank card and the personalization of one card.

Initialization (spec §3b): authenticate with the factory key, erase, then per DF: its key file,
its key 39/00 set to the transport key, its EFs with every record present (zero-filled, or the
profile's constant), its child DFs. Each DF is built in the one session in which it is fresh.
Personalization: per DF, authenticate with the transport key, load every card key diversified
for this card (sealed and MACed, 84 D4), replace 39/00 last, then write the cardholder's items
after authenticating with the key the file's write condition names.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from applets.encoding import encode
from cardos.apdu import build
from cardos.crypto import ALGORITHM_IDS
from cardos.files import KEY_EXTERNAL, KEY_INTERNAL, KEY_PIN, KEY_RSA_PART, KeyRecord
from cardos.tlv import simple_record, tlv

from . import fmcos
from .fmcos import Step
from terminal.factors import Factors, city_factor
from terminal.security import KeyRef
from .profile import DFDecl, FileDecl, Item, KeyDecl, Profile
from .script import Authenticate, Computed, KeyLoad, ScriptItem, SealedLoad

FACTORY_KEY = "FACTORY"      # the blank card's MF key 00, as its vendor ships it
TRANSPORT_KEY = "TRANSPORT"  # every DF's key 39/00 between initialization and personalization


class DataError(ValueError):
    """A cardholder value that cannot be stored; names the field and the rule."""


@dataclass(frozen=True)
class DataRecord:
    """One record the scripts write: the file's path and SFI, the record number and its bytes."""

    path: tuple[int, ...]
    sfi: int
    number: int
    data: bytes
    item: Item


def _path_select(path: tuple[int, ...], note: str) -> list[Step]:
    return [Step(apdu, f"select {fid:04X}" + (f" ({note})" if fid == 0x3F00 else ""))
            for fid, apdu in zip(path, fmcos.select_path(path))]


def _key_record(decl: KeyDecl, value_len: int, pin: bytes | None = None) -> KeyRecord:
    """The key record a declaration loads (its value filled by the provider, or the PIN)."""
    value = pin if pin is not None else bytes(value_len)
    alg_byte = ALGORITHM_IDS[decl.algorithm] if decl.type == KEY_INTERNAL else 0xFF
    return KeyRecord(decl.type, decl.id, decl.use, decl.change, value, decl.algorithm, decl.state,
                     decl.tries, decl.tries, 0, alg_byte)


def _prefix(decl: KeyDecl) -> bytes:
    """WRITE KEY data without the key value (the provider appends the value)."""
    rec = _key_record(decl, 16)
    return rec.write_data()[:-16]


def pin_bytes(digits: str) -> bytes:
    """A PIN as F-padded BCD."""
    return bytes.fromhex(digits + ("F" if len(digits) % 2 else ""))


def _master(df: DFDecl) -> KeyDecl | None:
    return next((k for k in df.keys if k.type == KEY_EXTERNAL and k.id == 0), None)


# ---- initialization -------------------------------------------------------------------------

def init_script(profile: Profile, erase: bool = True) -> list[ScriptItem]:
    """The initialization script of a blank card (factory key 00 in the MF)."""
    out: list[ScriptItem] = [Authenticate(0x00, KeyRef(FACTORY_KEY), "authenticate with the factory key")]
    if erase:
        out.append(Step(fmcos.erase_df(), "erase the card"))
    out += _init_df(profile.mf, (0x3F00,))
    return out


def _init_df(df: DFDecl, path: tuple[int, ...]) -> list[ScriptItem]:
    out: list[ScriptItem] = []
    here = "/".join(f"{f:04X}" for f in path)
    out.append(Step(fmcos.create_file(df.key_file), f"{here}: key file"))
    master = _master(df)
    if master is not None:
        out.append(KeyLoad(0x01, 0x00, _prefix(master), KeyRef(TRANSPORT_KEY), None,
                           f"{here}: key 39/00 = transport key"))
    for f in df.files:
        out.append(Step(fmcos.create_file(f.spec), f"{here}/{f.spec.fid:04X}: create"))
        out += _initial_contents(f, here)
    for child in df.dfs:
        out.append(Step(fmcos.create_file(child.spec), f"{here}/{child.spec.fid:04X}: create DF"))
    for child in df.dfs:
        cpath = path + (child.spec.fid,)
        out.append(Step(fmcos.select_fid(child.spec.fid), f"select {child.spec.fid:04X}"))
        out += _init_df(child, cpath)
        out.append(Step(fmcos.select_fid(path[-1]), f"back to {path[-1]:04X}"))
    return out


def _initial_contents(f: FileDecl, here: str) -> list[Step]:
    sfi = f.spec.sfi
    if f.contents is not None:
        data = bytes.fromhex(f.contents.replace(" ", ""))
        return [Step(build(0x00, 0xD6, 0x80 | sfi, 0x00, data), f"{here}/{f.spec.fid:04X}: contents")]
    # Every record exists from creation: its constant, or zeros until personalization.
    return [Step(build(0x00, 0xE2, 0x00, sfi << 3, encode_item(it, {}, zero=True)),
                 f"{here}/{f.spec.fid:04X}: record {n} (tag {it.tag:02X})")
            for n, it in enumerate(f.items, 1)]


# ---- items ------------------------------------------------------------------------------------

def encode_item(it: Item, values: dict[str, str], zero: bool = False) -> bytes:
    """The record tag ‖ length ‖ value of an item, from the cardholder values or its constant."""
    return simple_record(it.tag, _value(it, values, zero))


def _value(it: Item, values: dict[str, str], zero: bool) -> bytes:
    if it.children:
        return b"".join(tlv(c.tag, _value(c, values, zero)) for c in it.children)
    if it.value is not None:
        source = it.value
    elif it.field is None or zero or not values.get(it.field):
        return bytes(it.length)
    else:
        source = values[it.field]
    try:
        raw = encode(it.fmt, it.length, source)
    except ValueError as e:
        raise DataError(f"{it.field or it.name or f'tag {it.tag:02X}'}: {e}") from None
    if it.variable:
        raw = raw.rstrip(b"\xff" if it.fmt == "cn" else b"\x00")
    return raw


def personal_records(profile: Profile, values: dict[str, str]) -> list[DataRecord]:
    """Every record that holds a cardholder value, encoded, with where it goes."""
    out = []
    for path, df in profile.walk():
        for f in df.files:
            for n, it in enumerate(f.items, 1):
                if _has_field(it):
                    out.append(DataRecord(path + (f.spec.fid,), f.spec.sfi, n, encode_item(it, values), it))
    return out


def _has_field(it: Item) -> bool:
    return it.field is not None or any(_has_field(c) for c in it.children)


# ---- personalization --------------------------------------------------------------------------

def perso_script(profile: Profile, values: dict[str, str], factor: bytes | Factors) -> list[ScriptItem]:
    """Personalize one initialized card: its keys (diversified with `factor` and, for two-level
    keys, the city factor of the card identification code), PINs and data."""
    out: list[ScriptItem] = []
    card_id = values.get("card_id")
    factors = factor if isinstance(factor, Factors) else Factors(factor, city_factor(card_id) if card_id else None)
    records = personal_records(profile, values)
    for path, df in profile.walk():
        master = _master(df)
        if master is None:
            continue
        here = "/".join(f"{f:04X}" for f in path)
        transport = KeyRef(TRANSPORT_KEY)
        out += _path_select(path, here)
        out.append(Authenticate(0x00, transport, f"{here}: transport key"))
        for k in df.keys:
            if k is master:
                continue
            if k.type == KEY_PIN:
                rec = _key_record(k, 0, pin_bytes(k.initial_pin))
                out.append(KeyLoad(0x01, k.id, rec.write_data(), None, transport, f"{here}: PIN {k.id:02X}"))
            elif k.type == KEY_RSA_PART:
                out += _icc_key_loads(k, values, transport, here)
            else:
                out.append(KeyLoad(0x01, k.id, _prefix(k), card_key(k, factors, values), transport,
                                   f"{here}: key {k.type:02X}/{k.id:02X}"))
        out.append(KeyLoad(KEY_EXTERNAL, 0x00, _prefix(master), card_key(master, factors), transport,
                           f"{here}: key 39/00 = card master key"))
        out += _data_steps(profile, df, path, records, factors, here, values)
    return out


def card_key(k: KeyDecl, factor: bytes | Factors, values: dict[str, str] | None = None) -> KeyRef:
    """The reference of a card key: its master key and the factors of the levels the profile gives
    it (an EMV card key: the PAN)."""
    if k.diversify == "pan":
        if not values or not values.get("pan"):
            raise DataError(f"{k.master}: an EMV card key is diversified by the PAN, and the cardholder has none")
        return PanKeyRef(k.master, emv_factor(values["pan"], values.get("psn") or "00"))
    factors = factor if isinstance(factor, Factors) else Factors(factor, None)
    higher = []
    for level in reversed(k.levels):
        if level == "city":
            if factors.city is None:
                raise DataError(f"key {k.master}: its city level needs the card's region (EF05 tag 01)")
            higher.append(factors.city)
        elif level == "province":
            raise DataError(f"key {k.master}: a province level is not supported")
    return KeyRef(k.master, factors.card if "card" in k.levels else None, tuple(higher))


class PanKeyRef(KeyRef):
    """A card key diversified by the PAN: printed scripts and journals name it without the PAN."""

    def __str__(self) -> str:
        return f"{self.name}⊕PAN"


def emv_factor(pan: str, psn: str = "00") -> bytes:
    """EMV Book 2 A1.4.1 option A: the rightmost 16 digits of PAN ‖ PSN (left-padded with 0s)."""
    return bytes.fromhex((pan + psn)[-16:].rjust(16, "0"))


def _data_steps(profile: Profile, df: DFDecl, path, records: list[DataRecord], factor: Factors, here: str,
                values: dict[str, str]) -> list[ScriptItem]:
    out: list[ScriptItem] = []
    authenticated, oda = None, oda_once(profile, values)
    for f in df.files:
        mine = [r for r in records if r.path == path + (f.spec.fid,)]
        if not mine:
            continue
        key_id = writer_key_id(f, df)
        if key_id is None:
            raise DataError(f"{here}/{f.spec.fid:04X}: its write condition names no key the perso can use")
        if authenticated != key_id:
            ref = card_key(_key_for(profile, path, key_id), factor)
            out.append(Authenticate(key_id, ref, f"{here}: key {key_id:02X} to write {f.spec.fid:04X}"))
            authenticated = key_id
        for r in mine:
            note = f"{here}/{f.spec.fid:04X}: record {r.number} (tag {r.item.tag:02X})"
            if _signed(r.item):
                out.append(Computed(_signed_record(r, values, oda), f"00DC{r.number:02X}{(r.sfi << 3) | 4:02X}.. "
                                    "<signed by the issuer RSA key>", note))
            else:
                out.append(Step(build(0x00, 0xDC, r.number, (r.sfi << 3) | 0x04, r.data), note, secret=True))
    return out


def writer_key_id(f: FileDecl, df: DFDecl) -> int | None:
    """The external-authentication key whose state meets a file's write right."""
    if f.write_with:
        return int(f.write_with.split(":")[-1], 16)
    right = f.spec.write_right
    for name, state in sorted(df.credentials.items(), key=lambda kv: kv[1]):
        if name.startswith("key:") and admits(right, state):
            return int(name[4:], 16)
    return None


def admits(right: int, state: int) -> bool:
    """True when a DF security state meets an access byte XY with X ≥ Y (spec §3b)."""
    x, y = right >> 4, right & 0xF
    return (x > y and y <= state <= x) or (x == y and state == x and x != 0)


def _key_for(profile: Profile, path: tuple[int, ...], key_id: int) -> KeyDecl:
    for depth in range(len(path), 0, -1):
        for p, df in profile.walk():
            if p == path[:depth]:
                for k in df.keys:
                    if k.type == KEY_EXTERNAL and k.id == key_id:
                        return k
    raise DataError(f"no external key {key_id:02X} above {path}")


# ---- offline data authentication ----------------------------------------------------------------

ODA_FIELDS = ("emv_ca_index", "emv_issuer_cert", "emv_issuer_remainder", "emv_issuer_exponent", "emv_ssad")
DDA_FIELDS = ("emv_icc_cert", "emv_icc_exponent", "emv_icc_remainder")


def _signed(it: Item) -> bool:
    return it.field in ODA_FIELDS + DDA_FIELDS or any(_signed(c) for c in it.children)


def _asks_dda(profile: Profile) -> bool:
    """Whether the profile's records hold an ICC key certificate (its cards do DDA)."""
    def holds(it: Item) -> bool:
        return it.field in DDA_FIELDS or any(holds(c) for c in it.children)
    return any(holds(it) for _, df in profile.walk() for f in df.files for it in f.items)


def _icc_key(values: dict[str, str], keys):
    from .emv_icc import derive
    if not values.get("pan"):
        raise DataError("pan: the ICC key of the bank application is derived from the PAN")
    return derive(keys, values["pan"], values.get("psn") or "00")


def _icc_key_loads(k: KeyDecl, values: dict[str, str], under: KeyRef, here: str) -> list[SealedLoad]:
    """The ICC private key's parts as key records, made by the provider when the script runs."""
    from .emv_icc import PARTS, PART_BYTES

    def part(n: int):
        return lambda keys: _key_record(replace(k, id=n), PART_BYTES).with_value(_icc_key(values, keys).parts[n - 1]).write_data()
    return [SealedLoad(0x01, n, part(n), under, f"ICC private key part {n}", f"{here}: key {KEY_RSA_PART:02X}/{n:02X}")
            for n in range(1, PARTS + 1)]


def _signed_record(r: DataRecord, values: dict[str, str], oda):
    def make(keys) -> bytes:
        data = encode_item(r.item, {**values, **oda(keys)})
        return build(0x00, 0xDC, r.number, (r.sfi << 3) | 0x04, data)
    return make


def oda_once(profile: Profile, values: dict[str, str]):
    """oda_values of one card as a function of the provider, computed once for all its signed records."""
    memo: dict = {}

    def get(keys) -> dict[str, str]:
        if memo.get("keys") is not keys:
            memo.clear()
            memo.update(keys=keys, values=oda_values(profile, values, keys))
        return memo["values"]
    return get


def oda_values(profile: Profile, values: dict[str, str], keys) -> dict[str, str]:
    """The CA index, issuer certificate and signed static data of one card (EMV Book 2 §5)."""
    from .emv_keys import issuer_certificate, signed_static_data
    if not values.get("pan"):
        raise DataError("pan: the signed static data of the bank application needs the PAN")
    cert = issuer_certificate(keys, values["pan"], ISSUER_CERT_EXPIRY)
    static = static_data(profile, values)
    ssad = signed_static_data(keys, static)
    out = {"emv_ca_index": cert[0x8F].hex(), "emv_issuer_cert": cert[0x90].hex(),
           "emv_issuer_remainder": cert.get(0x92, b"").hex(), "emv_issuer_exponent": cert[0x9F32].hex(),
           "emv_ssad": ssad.hex()}
    if _asks_dda(profile):
        out.update(_dda_values(profile, values, keys, static))
    return out


def _dda_values(profile: Profile, values: dict[str, str], keys, static: bytes) -> dict[str, str]:
    """The ICC public key certificate, exponent and remainder of one card (EMV Book 2 §6.4)."""
    from .emv_icc import icc_certificate
    _, df = profile.role("financial")
    if not any(k.type == KEY_RSA_PART for k in df.keys):
        raise DataError("the bank application's records hold an ICC certificate and it has no icc_rsa key")
    if not values.get("pan_expiry"):
        raise DataError("pan_expiry: the ICC certificate expires with the bank application")
    psn = values.get("psn") or "00"
    cert = icc_certificate(keys, _icc_key(values, keys), values["pan"], psn, values["pan_expiry"], static)
    return {"emv_icc_cert": cert[0x9F46].hex(), "emv_icc_exponent": cert[0x9F47].hex(),
            "emv_icc_remainder": cert.get(0x9F48, b"").hex()}


ISSUER_CERT_EXPIRY = "1250"  # [ours] MMYY: the test issuer certificate outlives every card


def static_data(profile: Profile, values: dict[str, str]) -> bytes:
    """What SDA signs: the AFL's ODA records (template values, SFI 1-10) and the 9F4A tags (AIP)."""
    path, df = profile.role("financial")
    params = {c.tag: _value(c, values, False) for f in df.files for it in f.items for c in it.children}
    afl, aip = params.get(0x94, b""), params.get(0x82, b"")
    files = {f.spec.sfi: f for f in df.files}
    out = b""
    for i in range(0, len(afl), 4):
        sfi, first, oda = afl[i] >> 3, afl[i + 1], afl[i + 3]
        for n in range(first, first + oda):
            record = encode_item(files[sfi].items[n - 1], values)
            out += record[2:]
    return out + (aip if params.get(0x9F4A, b"\x82") == b"\x82" else b"")


def as_stored(record: bytes) -> bytes:
    """A record as written (SIMPLE-TLV) from its answer to READ RECORD, which gives templates of
    128 bytes or more in BER (70 81 xx)."""
    if len(record) > 3 and record[1] == 0x81 and record[2] == len(record) - 3:
        return record[:1] + record[2:]
    return record


def expected_record(profile: Profile, values: dict[str, str], rec: DataRecord, keys, oda=None) -> bytes:
    """What a personal record holds once written: signed records need the issuer keys (and oda,
    the card's oda_once, spares computing them again for each)."""
    if not _signed(rec.item):
        return rec.data
    return encode_item(rec.item, {**values, **(oda or oda_once(profile, values))(keys)})
