"""Read-back: after personalization, every record written is read again and compared."""

from __future__ import annotations

from terminal import apdus, flows
from terminal.factors import Factors
from terminal.security import SecurityModule

from .compiler import as_stored, expected_record, oda_once, personal_records
from .profile import Profile
from .readout import authenticate_reader


class VerifyError(RuntimeError):
    """A record read back differs from what was written, or cannot be read; names it, not its value."""


def verify_card(transport, profile: Profile, values: dict[str, str], keys: SecurityModule) -> int:
    """Read back every personal record; return how many were checked."""
    send = flows.sender(transport)
    factors = Factors.of(transport.atr(), values.get("card_id"))
    records = personal_records(profile, values)
    checked, current, oda = 0, None, oda_once(profile, values)
    for rec in records:
        df = rec.path[:-1]
        if df != current:
            for fid, apdu in zip(df, apdus.select_path(df)):
                _, sw = send(apdu, f"select {fid:04X}")
                if sw != 0x9000:
                    raise VerifyError(f"read-back: SELECT {fid:04X} answered {sw:04X}")
            current = df
            if profile.generation == "3.00" and df == profile.role("ssse")[0]:
                authenticate_reader(send, profile, keys, factors)
        data, sw = send(apdus.read_record(rec.number, rec.sfi), "read back")
        where = f"{'/'.join(f'{p:04X}' for p in rec.path)} record {rec.number} (tag {rec.item.tag:02X})"
        if sw != 0x9000:
            raise VerifyError(f"read-back: {where} answered {sw:04X}")
        if as_stored(data) != expected_record(profile, values, rec, keys, oda):
            raise VerifyError(f"read-back: {where} differs from what was written")
        checked += 1
    return checked
