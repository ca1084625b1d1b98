"""A medical settlement record appended to DF04 the way a hospital terminal does (spec §1, data-items.md).

The terminal selects SSSE and the medical-insurance application DF04 by name, meets the
transaction log's write right the way the profile gives it (the holder's PIN, or a key through
the security module), reads the newest record for its sequence number and appends the new one
(cyclic file: it becomes record 1). [ours] The 28-byte record: sequence b2 ‖ kind an1 ‖
institution cn6 ‖ time cn7 (YYYYMMDDhhmmss) ‖ total, fund-paid, self-paid b4 each (in fen).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from applets.encoding import encode
from cardos.apdu import build
from cardos.files import KEY_EXTERNAL, CyclicEF
from terminal import apdus, flows
from terminal.security import SecurityModule
from terminal.status import sw_name

from .compiler import DataError, admits, card_key, pin_bytes, writer_key_id
from .profile import Profile

MEDICAL_AID = bytes.fromhex("D15600000503")
LOG_FID = 0xEF08


class SettlementError(ValueError):
    """A settlement the card or the input does not allow; names the step, never the PIN."""


@dataclass(frozen=True)
class Settlement:
    """One settlement: kind (1 outpatient, 2 inpatient, 3 pharmacy), institution, amounts in fen."""

    kind: str
    institution: str
    total: int
    fund: int
    when: dt.datetime

    def record(self, sequence: int) -> bytes:
        if self.kind not in ("1", "2", "3"):
            raise SettlementError("kind must be 1 (outpatient), 2 (inpatient) or 3 (pharmacy)")
        if not (self.institution.isdigit() and len(self.institution) <= 12):
            raise SettlementError("institution must be up to 12 digits")
        if not 0 <= self.fund <= self.total < 2**32:
            raise SettlementError("amounts: 0 ≤ fund-paid ≤ total < 2^32 fen")
        return (sequence.to_bytes(2, "big") + encode("an", 1, self.kind) + encode("cn", 6, self.institution)
                + encode("cn", 7, self.when.strftime("%Y%m%d%H%M%S")) + self.total.to_bytes(4, "big")
                + self.fund.to_bytes(4, "big") + (self.total - self.fund).to_bytes(4, "big"))


def _log(profile: Profile):
    for path, df in profile.walk():
        if df.spec.name == MEDICAL_AID:
            for f in df.files:
                if f.spec.fid == LOG_FID and isinstance(f.spec, CyclicEF):
                    return path, df, f
    raise SettlementError(f"profile {profile.name} has no medical transaction log (DF04 EF08, cyclic)")


def append(transport, profile: Profile, settlement: Settlement, pin: str = "",
           sm: SecurityModule | None = None) -> int:
    """Append the settlement to DF04's transaction log; its sequence number."""
    path, df, f = _log(profile)
    send = flows.sender(transport)
    factors = flows.read_factors(send, transport.atr())
    for name, what in ((apdus.SSSE_NAME, "SSSE"), (MEDICAL_AID, "DF04")):
        _, sw = send(apdus.select_name(name), f"select {what}")
        if sw != 0x9000:
            raise SettlementError(f"SELECT {what} answered {sw:04X} ({sw_name(sw)})")
    right = f.spec.write_right
    if "pin" in df.credentials and admits(right, df.credentials["pin"]):
        if not pin:
            raise SettlementError("the transaction log is written after the holder's PIN: give the PIN")
        _, sw = send(build(0x00, 0x20, 0x00, 0x00, pin_bytes(pin)), "VERIFY")
        if sw != 0x9000:
            raise SettlementError(f"VERIFY answered {sw:04X} ({sw_name(sw)})")
    else:
        key_id = writer_key_id(f, df)
        decl = next((k for k in df.keys if k.type == KEY_EXTERNAL and k.id == key_id), None)
        if decl is None or sm is None:
            raise SettlementError("the transaction log's write right needs a key: give --keys or --psam")
        try:
            ref = card_key(decl, factors)
        except DataError as e:
            raise SettlementError(str(e)) from None
        sw = flows.external_authenticate(send, sm, ref, key_id)
        if sw != 0x9000:
            raise SettlementError(f"EXTERNAL AUTHENTICATE {key_id:02X} answered {sw:04X} ({sw_name(sw)})")
    sfi = f.spec.sfi
    newest, sw = send(apdus.read_record(1, sfi), "newest settlement")
    sequence = (int.from_bytes(newest[:2], "big") + 1) & 0xFFFF if sw == 0x9000 and len(newest) >= 2 else 1
    record = settlement.record(sequence)
    if len(record) != f.spec.rec_len:
        raise SettlementError(f"the profile's transaction log takes {f.spec.rec_len}-byte records, not {len(record)}")
    _, sw = send(apdus.append_record(sfi, record), "APPEND RECORD")
    if sw != 0x9000:
        raise SettlementError(f"APPEND RECORD answered {sw:04X} ({sw_name(sw)})")
    back, sw = send(apdus.read_record(1, sfi), "read back")
    if sw != 0x9000 or back != record:
        raise SettlementError("read-back: the newest record is not the settlement written")
    return sequence


def fen(text: str, what: str) -> int:
    """An amount in yuan with at most two decimals, as fen; SettlementError names the option."""
    from decimal import Decimal, InvalidOperation
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = Decimal(-1)
    if value < 0 or value != value.quantize(Decimal("0.01")):
        raise SettlementError(f"--{what} {text!r}: an amount in yuan with at most two decimals")
    return int(value * 100)


def from_text(kind: str, institution: str, total: str, fund: str, when: dt.datetime) -> Settlement:
    """A settlement from what the operator typed, checked before the card is touched."""
    s = Settlement(kind, institution, fen(total, "total"), fen(fund, "fund"), when)
    s.record(0)
    return s
