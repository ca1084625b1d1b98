"""A minimal EMV contact terminal (EMV 4.3 Book 3 §10, Book 4): one purchase, every step reported.

Application selection through the PSE (or the AID list), GPO, the AFL's records, processing
restrictions, offline plaintext PIN by the CVM list, floor limit, terminal action analysis,
the first GENERATE AC, online authorisation with an issuer host, issuer authentication and the
second GENERATE AC. Offline data authentication: DDA (INTERNAL AUTHENTICATE) when the card offers
it, else SDA, when the terminal holds the CA public key the card names (else the TVR says ODA
was not performed). Cryptograms,
PINs and keys never appear in the steps: only their presence and length.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from cardos.apdu import build
from cardos.tlv import TlvError, find, parse, parse_dol, parse_tag_list

PSE = b"1PAY.SYS.DDF01"
KNOWN_AIDS = (bytes.fromhex("A000000333010101"), bytes.fromhex("A000000333010102"))
CID_NAMES = {0x00: "AAC", 0x40: "TC", 0x80: "ARQC"}
AAC, TC, ARQC = 0x00, 0x40, 0x80
# Terminal action codes (Book 3 §10.7): go online on anything the IAC online names, decline on none.
TAC_DENIAL, TAC_ONLINE, TAC_DEFAULT = bytes(5), bytes.fromhex("DC4004F800"), bytes.fromhex("0010000000")
DEFAULT_DDOL = bytes.fromhex("9F3704")        # the terminal's, for a card without a DDOL (Book 3 §10.3)


class TerminalError(Exception):
    """The terminal ends the transaction (card error, inconsistent data): the message says where."""


class IssuerHost(Protocol):
    """The issuer's authorisation system as the terminal reaches it online."""

    def authorize(self, request: dict[int, bytes]) -> tuple[bytes, bytes | None]:
        """(authorisation response code, issuer authentication data 91 or None) for a request."""


@dataclass
class Step:
    """One exchange or decision of the transaction, as printed."""

    name: str
    sw: int | None = None
    detail: str = ""

    def line(self) -> str:
        status = f"{self.sw:04X}" if self.sw is not None else "    "
        return f"{status}  {self.name}" + (f": {self.detail}" if self.detail else "")


@dataclass
class Result:
    """How the transaction ended and what the terminal saw on the way."""

    outcome: str = "terminated"
    steps: list[Step] = field(default_factory=list)
    data: dict[int, bytes] = field(default_factory=dict)
    tvr: bytearray = field(default_factory=lambda: bytearray(5))
    cryptograms: list[tuple[int, int]] = field(default_factory=list)   # (CID, ATC) of each GENERATE AC

    def as_dict(self) -> dict:
        return {"outcome": self.outcome, "tvr": self.tvr.hex().upper(),
                "cryptograms": [{"type": CID_NAMES.get(c, f"{c:02X}"), "atc": a} for c, a in self.cryptograms],
                "steps": [{"step": s.name, "sw": None if s.sw is None else f"{s.sw:04X}", "detail": s.detail}
                          for s in self.steps]}


class Terminal:
    """One purchase of `amount` (minor units) at a terminal with the given settings."""

    def __init__(self, transmit: Callable[[bytes], bytes], amount: int, pin: str | None = None,
                 issuer: IssuerHost | None = None, floor_limit: int = 0, country: str = "0156",
                 currency: str = "0156", today: dt.datetime | None = None,
                 unpredictable: Callable[[], bytes] | None = None,
                 ca_keys: dict[tuple[bytes, int], tuple[int, int]] | None = None) -> None:
        import os
        self._transmit = transmit
        self.amount, self.pin, self.issuer = amount, pin, issuer
        self.floor_limit, self.country, self.currency = floor_limit, country, currency
        self.now = today or dt.datetime.now()
        self._un = unpredictable or (lambda: os.urandom(4))
        self.result = Result()
        self.ca_keys = dict(ca_keys or {})
        self._static = b""

    # -- the exchange -----------------------------------------------------------------------
    def send(self, name: str, apdu: bytes, detail: str = "", ok: tuple[int, ...] = (0x9000,)) -> tuple[bytes, int]:
        """Send one command, handling 61xx and 6Cxx as Book 1 §9.3 has the terminal do."""
        resp = self._transmit(apdu)
        data, sw = resp[:-2], int.from_bytes(resp[-2:], "big")
        if sw >> 8 == 0x6C:
            # Every command here that can meet 6Cxx carries Le last: send it again with Le = xx.
            resp = self._transmit(apdu[:-1] + bytes([sw & 0xFF]))
            data, sw = resp[:-2], int.from_bytes(resp[-2:], "big")
        while sw >> 8 == 0x61:
            more = self._transmit(build(0x00, 0xC0, 0x00, 0x00, None, sw & 0xFF))
            data, sw = data + more[:-2], int.from_bytes(more[-2:], "big")
        self.result.steps.append(Step(name, sw, detail))
        if sw not in ok:
            raise TerminalError(f"{name}: the card answered {sw:04X}")
        return data, sw

    def note(self, name: str, detail: str = "") -> None:
        self.result.steps.append(Step(name, None, detail))

    # -- the transaction --------------------------------------------------------------------
    def run(self) -> Result:
        self.result.data.update(self._own_data())
        try:
            aid = self.select_application()
            aip, afl = self.initiate(aid)
            self.read_records(afl)
            self.authenticate_offline(aid, aip)
            self.restrictions()
            self.verify_cardholder()
            self.risk_management()
            self.transact(aip)
        except TerminalError as e:
            self.note("transaction terminated", str(e))
            self.result.outcome = "terminated"
        return self.result

    def select_application(self) -> bytes:
        data, sw = self.send("SELECT PSE 1PAY.SYS.DDF01", build(0x00, 0xA4, 0x04, 0x00, PSE, 0), ok=(0x9000, 0x6A82))
        candidates: list[tuple[int, bytes, str]] = []
        if sw == 0x9000:
            sfi = _find(data, 0x88)
            if not sfi:
                raise TerminalError("the PSE's FCI has no SFI of the directory (A5/88)")
            for n in range(1, 32):
                rec, rsw = self.send(f"READ RECORD directory SFI {sfi[0]} record {n}",
                                     build(0x00, 0xB2, n, (sfi[0] << 3) | 4, None, 0), ok=(0x9000, 0x6A83))
                if rsw == 0x6A83:
                    break
                for tag, entry in parse(_find(rec, 0x70) or b""):
                    if tag == 0x61:
                        prio = _find(entry, 0x87) or b"\x0f"
                        candidates.append((prio[0] & 0x0F, _find(entry, 0x4F) or b"", (_find(entry, 0x50) or b"").decode("ascii", "replace")))
        if not candidates:
            candidates = [(1, aid, "") for aid in KNOWN_AIDS]
        for _, aid, label in sorted(candidates):
            fci, fsw = self.send(f"SELECT {aid.hex().upper()}", build(0x00, 0xA4, 0x04, 0x00, aid, 0), ok=(0x9000, 0x6A82, 0x6A81))
            if fsw == 0x9000:
                self.result.data.update(_flatten(fci))
                self.note("application selected", label or (_find(fci, 0x50) or b"").decode("ascii", "replace"))
                return aid
        raise TerminalError("no application the terminal supports")

    def initiate(self, aid: bytes) -> tuple[bytes, bytes]:
        pdol = self.result.data.get(0x9F38, b"")
        data, _ = self.send("GET PROCESSING OPTIONS", build(0x80, 0xA8, 0x00, 0x00, b"\x83" + bytes([len(self._dol(pdol))]) + self._dol(pdol), 0))
        if data[:1] == b"\x80":
            body = _find(data, 0x80) or b""
            aip, afl = body[:2], body[2:]
        else:
            aip, afl = _find(data, 0x82) or b"", _find(data, 0x94) or b""
        if len(aip) != 2 or not afl or len(afl) % 4:
            raise TerminalError("GPO answer without a valid AIP and AFL")
        self.result.data[0x82] = aip
        self.note("AIP and AFL", f"AIP {aip.hex().upper()}, {len(afl) // 4} AFL entries")
        return aip, afl

    def read_records(self, afl: bytes) -> None:
        seen: dict[int, str] = {}
        for i in range(0, len(afl), 4):
            sfi, first, last = afl[i] >> 3, afl[i + 1], afl[i + 2]
            if not 1 <= sfi <= 30 or first == 0 or last < first:
                raise TerminalError(f"AFL entry {afl[i:i + 4].hex().upper()} is invalid")
            for n in range(first, last + 1):
                rec, _ = self.send(f"READ RECORD SFI {sfi} record {n}", build(0x00, 0xB2, n, (sfi << 3) | 4, None, 0))
                if rec[:1] != b"\x70":
                    raise TerminalError(f"SFI {sfi} record {n} is not a template 70")
                if n < first + afl[i + 3]:
                    self._static += _find(rec, 0x70) or b""
                for tag, value in _flatten(rec).items():
                    if tag in seen:
                        # Book 3 §10.2: a primitive data object twice in the AFL's records terminates.
                        raise TerminalError(f"tag {tag:X} in SFI {sfi} record {n} and again in {seen[tag]}")
                    seen[tag] = f"SFI {sfi} record {n}"
                    self.result.data[tag] = value
        for tag in (0x5A, 0x5F24, 0x8C, 0x8D):
            if tag not in self.result.data:
                raise TerminalError(f"mandatory data object {tag:X} missing")
        pan = self.result.data[0x5A].hex().upper().rstrip("F")
        self.note("records read", f"PAN ...{pan[-4:]}, expiry {self.result.data[0x5F24].hex()[:4]}")

    def authenticate_offline(self, aid: bytes, aip: bytes) -> None:
        """Offline data authentication (Book 3 §10.3): DDA when the card offers it, else SDA (Book 2 §5-6)."""
        if not aip[0] & 0x60:
            self.result.tvr[0] |= 0x80
            self.note("offline data authentication", "not performed (the card offers neither SDA nor DDA)")
            return
        d = self.result.data
        ca = self.ca_keys.get((aid[:5], (d.get(0x8F) or b"\xff")[0]))
        if ca is None:
            self.result.tvr[0] |= 0x80
            self.note("offline data authentication", "not performed (no CA public key for the card's index)")
            return
        static = self._static + b"".join(d.get(t, b"") for t in parse_tag_list(d.get(0x9F4A, b"")))
        kind, why = ("DDA", self._dda(ca, static)) if aip[0] & 0x20 else ("SDA", sda_failure(ca, d, static))
        if why:
            self.result.tvr[0] |= 0x08 if kind == "DDA" else 0x40
            self.note("offline data authentication", f"{kind} failed: {why}")
        else:
            self.note("offline data authentication", f"{kind} passed")

    def _dda(self, ca: tuple[int, int], static: bytes) -> str | None:
        """Why DDA fails (None when it passes): issuer key, ICC key, then INTERNAL AUTHENTICATE's signature."""
        d = self.result.data
        try:
            icc = icc_public_key(issuer_public_key(ca, d), d, static, self.now.date())
            ddol = d.get(0x9F49) or DEFAULT_DDOL
            if 0x9F37 not in (tag for tag, _ in parse_dol(ddol)):
                raise TerminalError("the DDOL asks no unpredictable number")
            d[0x9F37] = self._un()
            data = self._dol(ddol)
            answer, _ = self.send("INTERNAL AUTHENTICATE", build(0x00, 0x88, 0x00, 0x00, data, 0),
                                  f"DDOL data of {len(data)} bytes")
            sdad = _find(answer, 0x80) if answer[:1] == b"\x80" else _flatten(answer).get(0x9F4B, b"")
            d[0x9F4C] = dynamic_number(icc, sdad or b"", data)
        except (TerminalError, TlvError) as e:
            return str(e)
        return None

    def restrictions(self) -> None:
        expiry = self.result.data[0x5F24].hex()
        if expiry < self.now.strftime("%y%m%d"):
            self.result.tvr[1] |= 0x40
            self.note("processing restrictions", "application expired")
        effective = self.result.data.get(0x5F25)
        if effective and effective.hex() > self.now.strftime("%y%m%d"):
            self.result.tvr[1] |= 0x20

    def verify_cardholder(self) -> None:
        cvm = self.result.data.get(0x8E)
        aip = self.result.data[0x82]
        if not aip[0] & 0x10 or not cvm:
            self.note("cardholder verification", "not supported by the card")
            return
        for i in range(8, len(cvm) - 1, 2):
            rule, cond = cvm[i], cvm[i + 1]
            method = rule & 0x3F
            if cond not in (0x00, 0x03):
                continue
            if method == 0x01 and self.pin:
                if self._offline_pin():
                    return
                if not rule & 0x40:
                    break
            elif method == 0x02 and self.issuer is not None and self.pin:
                self.result.tvr[2] |= 0x04                       # online PIN entered
                self.note("cardholder verification", "online PIN (sent to the issuer)")
                return
            elif method in (0x1E, 0x1F):
                self.note("cardholder verification", "signature" if method == 0x1E else "no CVM required")
                return
        self.result.tvr[2] |= 0x80
        self.note("cardholder verification", "failed")

    def _offline_pin(self) -> bool:
        pin = self.pin or ""
        block = bytes.fromhex(f"2{len(pin):X}" + pin + "F" * (14 - len(pin)))
        _, sw = self.send("VERIFY offline plaintext PIN", build(0x00, 0x20, 0x00, 0x80, block), ok=(0x9000, 0x6983, 0x6984) + tuple(range(0x63C0, 0x63D0)))
        if sw == 0x9000:
            self.note("cardholder verification", "offline PIN correct")
            return True
        self.result.tvr[2] |= 0x20 if sw in (0x6983, 0x63C0) else 0x80
        self.note("cardholder verification", "offline PIN wrong" + (", PIN blocked" if sw in (0x6983, 0x63C0) else ""))
        return False

    def risk_management(self) -> None:
        if self.amount > self.floor_limit:
            self.result.tvr[3] |= 0x80
        self.note("terminal risk management", "above the floor limit" if self.result.tvr[3] & 0x80 else "below the floor limit")

    def _action(self, iac_tag: int, tac: bytes, default: bytes) -> bool:
        iac = self.result.data.get(iac_tag, default)
        return any(t & (i | a) for t, i, a in zip(self.result.tvr, iac, tac))

    def transact(self, aip: bytes) -> None:
        if self._action(0x9F0E, TAC_DENIAL, bytes(5)):
            asked = AAC
        elif self.issuer is not None and self._action(0x9F0F, TAC_ONLINE, b"\xff" * 5):
            asked = ARQC
        elif self.issuer is None and self._action(0x9F0D, TAC_DEFAULT, b"\xff" * 5):
            asked = AAC
        else:
            asked = TC
        self.note("terminal action analysis", f"TVR {self.result.tvr.hex().upper()}, asks {CID_NAMES[asked]}")
        cid, atc, first = self.generate_ac(asked, 0x8C, "first")
        if cid == TC:
            self.result.outcome = "approved offline"
            return
        if cid == AAC:
            self.result.outcome = "declined offline"
            return
        arc, issuer_data = self.go_online(first)
        if issuer_data and aip[0] & 0x04:
            _, sw = self.send("EXTERNAL AUTHENTICATE (ARPC)", build(0x00, 0x82, 0x00, 0x00, issuer_data), ok=(0x9000, 0x6300))
            if sw != 0x9000:
                self.result.tvr[4] |= 0x40
            issuer_data = None
        self.result.data[0x8A] = arc
        if issuer_data:
            self.result.data[0x91] = issuer_data
        cid, _, _ = self.generate_ac(TC if arc in (b"00", b"Y3") else AAC, 0x8D, "second")
        self.result.outcome = ("approved online" if arc == b"00" else "approved") if cid == TC else "declined"

    def generate_ac(self, asked: int, dol_tag: int, which: str) -> tuple[int, int, dict[int, bytes]]:
        self.result.data.update({0x95: bytes(self.result.tvr), 0x9F37: self._un()})
        data = self._dol(self.result.data[dol_tag])
        answer, _ = self.send(f"GENERATE AC ({which}) asking {CID_NAMES[asked]}", build(0x80, 0xAE, asked, 0x00, data, 0))
        if answer[:1] == b"\x80":
            body = _find(answer, 0x80) or b""
            fields = {0x9F27: body[:1], 0x9F36: body[1:3], 0x9F26: body[3:11], 0x9F10: body[11:]}
        else:
            fields = _flatten(answer)
        cid, atc = fields.get(0x9F27, b"\xff")[0], int.from_bytes(fields.get(0x9F36, b""), "big")
        if cid & 0xC0 == 0xC0 or len(fields.get(0x9F26, b"")) != 8:
            raise TerminalError(f"GENERATE AC ({which}): no cryptogram in the answer")
        if which == "second" and cid & 0xC0 == ARQC:
            raise TerminalError("the card answered an ARQC to the second GENERATE AC")
        cid &= 0xC0
        self.result.cryptograms.append((cid, atc))
        self.note(f"card answers {CID_NAMES[cid]}", f"ATC {atc}, cryptogram of 8 bytes")
        self.result.data.update(fields)
        return cid, atc, fields

    def go_online(self, first: dict[int, bytes]) -> tuple[bytes, bytes | None]:
        if self.issuer is None:
            self.note("online authorisation", "unable to go online (Z3)")
            return b"Z3", None
        request = dict(self.result.data)
        arc, issuer_data = self.issuer.authorize(request)
        self.note("online authorisation", f"issuer answers {arc.decode('ascii', 'replace')}"
                  + (", with issuer authentication data" if issuer_data else ""))
        return arc, issuer_data

    # -- data object lists ------------------------------------------------------------------
    def _own_data(self) -> dict[int, bytes]:
        """The terminal's data objects for this purchase (Book 4 annex A)."""
        own = {0x9F02: f"{self.amount:012d}", 0x9F03: "000000000000", 0x9F1A: self.country,
               0x5F2A: self.currency, 0x9A: self.now.strftime("%y%m%d"), 0x9C: "00",
               0x9F21: self.now.strftime("%H%M%S"), 0x9F35: "22", 0x8A: "0000"}
        return {tag: bytes.fromhex(v) for tag, v in own.items()}

    def _dol(self, dol: bytes) -> bytes:
        """The terminal's data in the order and lengths a DOL asks (Book 3 §5.4)."""
        out = b""
        for tag, n in parse_dol(dol):
            value = self.result.data.get(tag) or b""
            if tag in (0x9F02, 0x9F03, 0x9A, 0x9F21, 0x9C, 0x5F2A, 0x9F1A):   # numeric: left-padded
                value = value.rjust(n, b"\x00")[-n:]
            out += value[:n].ljust(n, b"\x00")
        return out


def _recover(key: tuple[int, int], data: bytes) -> bytes:
    n, e = key
    size = (n.bit_length() + 7) // 8
    if len(data) != size:
        raise TerminalError(f"a signature of {len(data)} bytes under a {size}-byte key")
    return pow(int.from_bytes(data, "big"), e, n).to_bytes(size, "big")


def _recover_signed(key: tuple[int, int], data: bytes, fmt: int, what: str, tail: bytes = b"") -> bytes:
    """A signature recovered and checked as Book 2 says: 6A, the format byte, …, SHA-1 of the
    block's body and the data signed beside it (tail), BC."""
    block = _recover(key, data)
    if block[0] != 0x6A or block[-1] != 0xBC or block[1] != fmt:
        raise TerminalError(f"{what} does not recover")
    if hashlib.sha1(block[1:-21] + tail).digest() != block[-21:-1]:
        raise TerminalError(f"{what}'s hash is wrong")
    return block


def sda_failure(ca: tuple[int, int], d: dict[int, bytes], static: bytes) -> str | None:
    """Why SDA fails (None when it passes): Book 2 §5.3 steps for 90, then §5.4 for 93."""
    try:
        _recover_signed(issuer_public_key(ca, d), d.get(0x93, b""), 0x03, "the signed static data", static)
    except TerminalError as e:
        return str(e)
    return None


def issuer_public_key(ca: tuple[int, int], d: dict[int, bytes]) -> tuple[int, int]:
    """The issuer public key from its certificate 90 (Book 2 §5.3, §6.3)."""
    exponent, remainder = d.get(0x9F32, b""), d.get(0x92, b"")
    cert = _recover_signed(ca, d.get(0x90, b""), 0x02, "the issuer certificate", remainder + exponent)
    pan = d.get(0x5A, b"").hex().upper()
    if not pan.startswith(cert[2:6].hex().upper().rstrip("F")):
        raise TerminalError("the issuer identifier does not match the PAN")
    modulus = (cert[15:-21] + remainder)[:cert[13]]
    return int.from_bytes(modulus, "big"), int.from_bytes(exponent, "big")


def icc_public_key(issuer: tuple[int, int], d: dict[int, bytes], static: bytes, today: dt.date) -> tuple[int, int]:
    """The ICC public key from its certificate 9F46, whose hash covers the static data (Book 2 §6.4)."""
    exponent, remainder = d.get(0x9F47, b""), d.get(0x9F48, b"")
    cert = _recover_signed(issuer, d.get(0x9F46, b""), 0x04, "the ICC certificate", remainder + exponent + static)
    if cert[2:12].hex().upper().rstrip("F") != d.get(0x5A, b"").hex().upper().rstrip("F"):
        raise TerminalError("the ICC certificate is for another PAN")
    mmyy = cert[12:14].hex()
    if not mmyy.isdigit() or mmyy[2:] + mmyy[:2] < today.strftime("%y%m"):
        raise TerminalError("the ICC certificate has expired")
    modulus = (cert[21:-21] + remainder)[:cert[19]]
    return int.from_bytes(modulus, "big"), int.from_bytes(exponent, "big")


def dynamic_number(icc: tuple[int, int], sdad: bytes, ddol_data: bytes) -> bytes:
    """The ICC dynamic number (9F4C) of signed dynamic application data that verifies (Book 2 §6.5.2)."""
    block = _recover_signed(icc, sdad, 0x05, "the signed dynamic data", ddol_data)
    dynamic = block[4 : 4 + block[3]]
    if block[2] != 0x01 or not dynamic or dynamic[0] + 1 > len(dynamic):
        raise TerminalError("the signed dynamic data holds no ICC dynamic number")
    return dynamic[1 : 1 + dynamic[0]]


def _find(data: bytes, tag: int) -> bytes | None:
    try:
        return find(data, tag)
    except TlvError:
        return None


def _flatten(data: bytes) -> dict[int, bytes]:
    """Every primitive data object of a run of BER-TLV, constructed templates opened."""
    out: dict[int, bytes] = {}
    try:
        objects = parse(data)
    except TlvError:
        raise TerminalError("the card's answer is not BER-TLV") from None
    for tag, value in objects:
        first = tag >> 8 if tag > 0xFF else tag
        if first & 0x20:
            out.update(_flatten(value))
        else:
            out[tag] = value
    return out


class KeyFileIssuer:
    """An issuer host over the key file: checks the ARQC and answers an ARPC (method 1).

    The cryptogram's data is the card's [ours] CVN 01: the common core's terminal data, AIP,
    ATC and the CVR (IAD bytes 4-7); the card key is IMK_AC diversified by PAN ‖ PSN.
    """

    AC_TAGS = (0x9F02, 0x9F03, 0x9F1A, 0x95, 0x5F2A, 0x9A, 0x9C, 0x9F37)

    def __init__(self, provider, master: str = "IMK_AC") -> None:
        self.provider, self.master = provider, master

    def authorize(self, request: dict[int, bytes]) -> tuple[bytes, bytes | None]:
        from applets import emv_crypto
        from cardos.crypto import mac_equal
        from personalize.compiler import emv_factor
        from personalize.keys import KeyRef

        pan = request[0x5A].hex().upper().rstrip("F")
        psn = request.get(0x5F34, b"\x00").hex()
        card_key = self.provider.value_for_plain_load(KeyRef(self.master, emv_factor(pan, psn)))
        atc = int.from_bytes(request[0x9F36], "big")
        data = b"".join(request.get(t, b"") for t in self.AC_TAGS) + request[0x82] + request[0x9F36] \
            + request.get(0x9F10, bytes(7))[3:7]
        arc = b"00" if mac_equal(emv_crypto.application_cryptogram(card_key, atc, data), request[0x9F26]) else b"05"
        return arc, emv_crypto.arpc(card_key, atc, request[0x9F26], arc) + arc
