"""Read-back: after personalization, every record written is read again and compared."""

from __future__ import annotations

from cardos.apdu import build
from reader_bridge.transport import exchange

from .compile import as_stored, expected_record, personal_records
from .fmcos import select_path
from .keys import KeyProvider
from .profile import Profile
from .readout import authenticate_reader


class VerifyError(RuntimeError):
    """A record read back differs from what was written, or cannot be read; names it, not its value."""


def verify_card(transport, profile: Profile, values: dict[str, str], keys: KeyProvider) -> int:
    """Read back every personal record; return how many were checked."""
    factor = transport.atr()[-8:]
    records = personal_records(profile, values)
    checked, current = 0, None
    for rec in records:
        df = rec.path[:-1]
        if df != current:
            for fid, apdu in zip(df, select_path(df)):
                _, sw = exchange(transport, apdu)
                if sw != 0x9000:
                    raise VerifyError(f"read-back: SELECT {fid:04X} answered {sw:04X}")
            current = df
            if profile.generation == "3.00" and df == profile.role("ssse")[0]:
                authenticate_reader(transport, profile, keys, factor)
        data, sw = exchange(transport, build(0x00, 0xB2, rec.number, (rec.sfi << 3) | 0x04, le=0))
        where = f"{'/'.join(f'{p:04X}' for p in rec.path)} record {rec.number} (tag {rec.item.tag:02X})"
        if sw != 0x9000:
            raise VerifyError(f"read-back: {where} answered {sw:04X}")
        if as_stored(data) != expected_record(profile, values, rec, keys):
            raise VerifyError(f"read-back: {where} differs from what was written")
        checked += 1
    return checked
