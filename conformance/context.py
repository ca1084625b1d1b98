"""What a conformance case works with: the card behind any transport, its profile and keys,
and the record of every exchange (masked) for the report."""

from __future__ import annotations

from dataclasses import dataclass, field

from cardos import redact
from cardos.apdu import split_response
from personalize.compiler import DataError, card_key
from personalize.profile import DFDecl, Profile
from reader_bridge.transport import complete
from terminal import apdus, flows
from terminal.factors import Factors
from terminal.security import SecurityModule
from terminal.status import sw_name

def _as_bytes(apdu: bytes | str) -> bytes:
    return bytes.fromhex(apdu.replace(" ", "")) if isinstance(apdu, str) else apdu


class CaseFailure(AssertionError):
    """What a case found wrong, in words QA can file."""


class CaseSkipped(Exception):
    """A case that cannot run here (no keys, not destructive, not this generation)."""


@dataclass
class ReportedExchange:
    """One exchange as a report shows it: command and answer redacted, with the status word and the step."""

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
    keys: SecurityModule | None = None
    destructive: bool = False
    pin: str = ""
    log: list[ReportedExchange] = field(default_factory=list)
    factors: Factors | None = None
    _redactors: dict[int, redact.Redactor] = field(default_factory=dict, repr=False)

    # -- talking ----------------------------------------------------------------------------
    def send(self, apdu: bytes | str, note: str = "", to=None) -> tuple[bytes, int]:
        """Send as a terminal does: 61xx fetched with GET RESPONSE, 6Cxx resent with that Le;
        every exchange that crossed the interface goes into the log."""
        sent = 0

        def one(cmd: bytes) -> bytes:
            nonlocal sent
            sent += 1
            if sent == 1:
                return self._exchange(cmd, note, to)
            step = "GET RESPONSE" if cmd[1] == 0xC0 else "resent with the exact Le"
            return self._exchange(cmd, f"{step}: {note}" if note else step, to)
        return split_response(complete(one, _as_bytes(apdu)))

    def send_raw(self, apdu: bytes | str, note: str = "", to=None) -> tuple[bytes, int]:
        """Send once and return the card's own answer, 61xx and 6Cxx included: for the cases
        that judge those answers themselves."""
        return split_response(self._exchange(_as_bytes(apdu), note, to))

    def _exchange(self, raw: bytes, note: str, to=None) -> bytes:
        target = to or self.transport
        resp = target.transmit_raw(raw)
        _, sw = split_response(resp)
        # One redactor per conversation: the card's and the PSAM's pending answers are their own.
        shown = self._redactors.setdefault(id(target), redact.Redactor()).response(raw, resp)[:-4]
        self.log.append(ReportedExchange(redact.command(raw), shown, sw, ("PSAM: " if to else "") + note))
        return resp

    def need_psam(self):
        """The PSAM's transport, when the suite runs with --psam."""
        t = getattr(self.keys, "transport", None)
        if t is None:
            raise CaseSkipped("a PSAM case: run with --psam")
        return t

    def expect(self, apdu: bytes | str, *sws: int, note: str = "", raw: bool = False, to=None) -> bytes:
        """Send (raw=True: without following 61xx/6Cxx) and require one of the status words; the
        failure message names what came back."""
        data, sw = (self.send_raw if raw else self.send)(apdu, note, to)
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
        walk = apdus.select_path(path)
        self.expect(walk[0], 0x9000, note="select MF")
        for fid, apdu in zip(path[1:], walk[1:]):
            self.expect(apdu, *(ok or (0x9000,)), note=f"select {fid:04X}")

    def select_role(self, role: str, *ok: int) -> None:
        self.select_path(self.role(role)[0], *ok)

    @property
    def factor(self) -> Factors:
        """The card's factors: read once by the runner (ATR, and the region for city-level keys)."""
        return self.factors or Factors.of(self.transport.atr())

    def need_keys(self) -> SecurityModule:
        if self.keys is None:
            raise CaseSkipped("needs the issuer key file (--keys) or a PSAM (--psam)")
        return self.keys

    def usable(self, ref):
        """ref, or a skip when the security module (a PSAM's key table, say) lacks its master key."""
        if self.keys is not None and not self.keys.version(ref.name):
            raise CaseSkipped(f"the security module holds no key {ref.name}")
        return ref

    def need_destructive(self) -> None:
        if not self.destructive:
            raise CaseSkipped("destructive: run with --destructive")

    def key_ref(self, role: str, key_type: int, key_id: int = 0):
        _, df = self.role(role)
        for k in df.keys:
            if k.type == key_type and k.id == key_id:
                try:
                    ref = card_key(k, self.factor)
                except DataError as e:
                    raise CaseSkipped(str(e)) from None
                return self.usable(ref)
        raise CaseSkipped(f"the profile's {role} has no key {key_type:02X}/{key_id:02X}")

    def authenticate(self, role: str, key_id: int) -> int:
        keys = self.need_keys()
        return flows.external_authenticate(self.send, keys, self.key_ref(role, 0x39, key_id), key_id)

    def secured(self, cla: int, ins: int, p1: int, p2: int, body: bytes, ref, note: str, good_mac: bool = True) -> int:
        return flows.secured(self.send, self.need_keys(), ref, cla, ins, p1, p2, body, note, good_mac)

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
