"""Read-back: after personalization, every record written is read again and compared."""

from __future__ import annotations

from cardos.apdu import build, split_response

from .compile import personal_records
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
            _send(transport, build(0x00, 0xA4, 0x00, 0x00, b"\x3f\x00"))
            for fid in df[1:]:
                _, sw = _send(transport, build(0x00, 0xA4, 0x00, 0x00, fid.to_bytes(2, "big")))
                if sw != 0x9000:
                    raise VerifyError(f"read-back: SELECT {fid:04X} answered {sw:04X}")
            current = df
            if profile.generation == "3.00" and df == profile.role("ssse")[0]:
                authenticate_reader(transport, profile, keys, factor)
        data, sw = _send(transport, build(0x00, 0xB2, rec.number, (rec.sfi << 3) | 0x04, le=0))
        where = f"{'/'.join(f'{p:04X}' for p in rec.path)} record {rec.number} (tag {rec.item.tag:02X})"
        if sw != 0x9000:
            raise VerifyError(f"read-back: {where} answered {sw:04X}")
        if data != rec.data:
            raise VerifyError(f"read-back: {where} differs from what was written")
        checked += 1
    return checked


def _send(transport, apdu: bytes):
    return split_response(transport.transmit(apdu))
