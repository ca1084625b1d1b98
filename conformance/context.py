"""What a conformance case works with: the card behind any transport, its profile and keys,
and the record of every exchange (masked) for the report."""

from __future__ import annotations

from dataclasses import dataclass, field

from cardos import redact
from cardos.apdu import build, split_response
from personalize.compile import card_key
from personalize.fmcos import select_path
from personalize.keys import KeyProvider
from personalize.profile import DFDecl, Profile
from reader_bridge.transport import complete

SW_NAMES = {
    0x9000: "ok", 0x6281: "data may be corrupted", 0x6581: "memory failure", 0x6700: "wrong length",
    0x6881: "logical channel not supported", 0x6982: "security status not satisfied", 0x6983: "blocked",
    0x6984: "reference data unusable", 0x6985: "conditions of use not satisfied", 0x6986: "no current EF",
    0x6988: "MAC wrong", 0x6A80: "wrong data", 0x6A81: "function not supported / application blocked",
    0x6A82: "file not found", 0x6A83: "record not found", 0x6A84: "not enough memory", 0x6A86: "wrong P1P2",
    0x6A88: "reference data not found", 0x6B00: "offset beyond file", 0x6D00: "INS unknown",
    0x6E00: "CLA unknown", 0x9302: "MAC wrong (FMCOS)", 0x9303: "application permanently locked",
}


def sw_name(sw: int) -> str:
    hi = sw >> 8
    if hi == 0x61:
        return f"{sw & 0xFF} bytes waiting"
    if hi == 0x6C:
        return f"wrong Le, exact length {sw & 0xFF}"
    if sw & 0xFFF0 == 0x63C0:
        return f"verification failed, {sw & 0xF} tries left"
    return SW_NAMES.get(sw, "unknown")


def _as_bytes(apdu: bytes | str) -> bytes:
    return bytes.fromhex(apdu.replace(" ", "")) if isinstance(apdu, str) else apdu


class CaseFailure(AssertionError):
    """What a case found wrong, in words QA can file."""


class CaseSkipped(Exception):
    """A case that cannot run here (no keys, not destructive, not this generation)."""


@dataclass
class Exchange:
    command: str
    response: str
    sw: int
    note: str

    def line(self) -> str:
        return f"{self.command} -> {self.response} {self.sw:04X} ({sw_name(self.sw)}){'  # ' + self.note if self.note else ''}"


@dataclass
class Context:
    """A card under test."""

    transport: object
    profile: Profile
    keys: KeyProvider | None = None
    destructive: bool = False
    pin: str = ""
    log: list[Exchange] = field(default_factory=list)
    _redactor: redact.Redactor = field(default_factory=redact.Redactor, repr=False)

    # -- talking ----------------------------------------------------------------------------
    def send(self, apdu: bytes | str, note: str = "") -> tuple[bytes, int]:
        """Send as a terminal does: 61xx fetched with GET RESPONSE, 6Cxx resent with that Le;
        every exchange that crossed the interface goes into the log."""
        sent = 0

        def one(cmd: bytes) -> bytes:
            nonlocal sent
            sent += 1
            if sent == 1:
                return self._exchange(cmd, note)
            step = "GET RESPONSE" if cmd[1] == 0xC0 else "resent with the exact Le"
            return self._exchange(cmd, f"{step}: {note}" if note else step)
        return split_response(complete(one, _as_bytes(apdu)))

    def send_raw(self, apdu: bytes | str, note: str = "") -> tuple[bytes, int]:
        """Send once and return the card's own answer, 61xx and 6Cxx included: for the cases
        that judge those answers themselves."""
        return split_response(self._exchange(_as_bytes(apdu), note))

    def _exchange(self, raw: bytes, note: str) -> bytes:
        resp = self.transport.transmit_raw(raw)
        _, sw = split_response(resp)
        self.log.append(Exchange(redact.command(raw), self._redactor.response(raw, resp)[:-4], sw, note))
        return resp

    def expect(self, apdu: bytes | str, *sws: int, note: str = "", raw: bool = False) -> bytes:
        """Send (raw=True: without following 61xx/6Cxx) and require one of the status words; the
        failure message names what came back."""
        data, sw = (self.send_raw if raw else self.send)(apdu, note)
        if sw not in sws:
            want = " or ".join(f"{s:04X}" for s in sws)
            raise CaseFailure(f"{note or 'command'}: expected {want}, card answered {sw:04X} ({sw_name(sw)})")
        return data

    def reset(self) -> None:
        self.transport.reset()

    # -- the card's layout ------------------------------------------------------------------
    def role(self, role: str) -> tuple[tuple[int, ...], DFDecl]:
        return self.profile.role(role)

    def select_path(self, path: tuple[int, ...], *ok: int) -> None:
        apdus = select_path(path)
        self.expect(apdus[0], 0x9000, note="select MF")
        for fid, apdu in zip(path[1:], apdus[1:]):
            self.expect(apdu, *(ok or (0x9000,)), note=f"select {fid:04X}")

    def select_role(self, role: str, *ok: int) -> None:
        self.select_path(self.role(role)[0], *ok)

    @property
    def factor(self) -> bytes:
        return self.transport.atr()[-8:]

    def need_keys(self) -> KeyProvider:
        if self.keys is None:
            raise CaseSkipped("needs the issuer key file (--keys)")
        return self.keys

    def need_destructive(self) -> None:
        if not self.destructive:
            raise CaseSkipped("destructive: run with --destructive")

    def key_ref(self, role: str, key_type: int, key_id: int = 0):
        _, df = self.role(role)
        for k in df.keys:
            if k.type == key_type and k.id == key_id:
                return card_key(k, self.factor)
        raise CaseSkipped(f"the profile's {role} has no key {key_type:02X}/{key_id:02X}")

    def authenticate(self, role: str, key_id: int) -> int:
        keys = self.need_keys()
        ref = self.key_ref(role, 0x39, key_id)
        chal = self.expect("0084000008", 0x9000, note="challenge")
        block = (chal + bytes(16))[: keys.algorithm(ref).block]
        return self.send(build(0x00, 0x82, 0x00, key_id, keys.encrypt(ref, block)), f"EXTERNAL AUTHENTICATE {key_id:02X}")[1]

    def secured(self, cla: int, ins: int, p1: int, p2: int, body: bytes, ref, note: str, good_mac: bool = True) -> int:
        keys = self.need_keys()
        chal = self.expect("0084000008", 0x9000, note="challenge")
        header = bytes((cla, ins, p1, p2, len(body) + 4))
        mac = keys.mac(ref, chal, header + body) if good_mac else bytes(4)
        return self.send(build(cla, ins, p1, p2, body + mac), note)[1]

    def pin_bcd(self, role: str = "ssse") -> bytes:
        digits = self.pin_for(role)
        return bytes.fromhex(digits + ("F" if len(digits) % 2 else ""))

    def pin_for(self, role: str) -> str:
        if role == "ssse" and self.pin:
            return self.pin
        _, df = self.role(role)
        for k in df.keys:
            if k.type == 0x3A:
                return k.initial_pin
        raise CaseSkipped(f"no PIN known for {role}")
