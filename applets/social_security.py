"""The social-security application's own rules on top of the COS (spec §1-§4).

- PIN operations (VERIFY, CHANGE PIN) answer 6985 until the card is activated.
- On a 3.00 card (EF05 record 03 reads "3.00") EF05 records 05 and 06 answer 6982 unless the
  DF's state is the one EXTERNAL AUTHENTICATE with key 0A sets (spec §4): file rights cannot
  protect single records, so the application does.
- Extension area [ours]: a DF whose SFI-1E record file lists (tag E1) FID ‖ access byte ‖
  maximum size lets the department whose key meets that access byte, and only it, create that
  DF, however the DF's own create right reads. Everything else is the COS's.
"""

from __future__ import annotations

from cardos import sw
from cardos.command import Command
from cardos.files import KEY_EXTERNAL, DedicatedFile, parse_create
from cardos.sw import CardError

from .life import require_active, wrap

DIRECTORY_SFI = 0x1E
DIRECTORY_TAG = 0xE1


def install(table: dict[int, Command]) -> None:
    """Add the social-security rules to a COS command table."""
    wrap(table, 0x20, _pin_guard)
    wrap(table, 0x5E, _change_guard)
    wrap(table, 0xE0, _extension_create)
    wrap(table, 0xB2, _protected_records)


PROTECTED_3_00 = (0x05, 0x06)
READ_KEY = 0x0A
ISSUER_DATA_SFI = 0x05


def _protected_records(base):
    def read_record(card, cmd):
        data = base(card, cmd)
        if data[:1] and data[0] in PROTECTED_3_00 and _is_issuer_data_3_00(card):
            try:
                _, key = card.find_key(KEY_EXTERNAL, READ_KEY)
            except CardError:
                return data
            if not card.session.fresh and card.session.df_state != key.next_state:
                raise CardError(sw.SECURITY_NOT_SATISFIED, "3.00: issue and expiry dates need key 0A")
        return data
    return read_record


def _is_issuer_data_3_00(card) -> bool:
    ef = card.session.current_ef
    if ef is None or ef[-1] & 0x1F != ISSUER_DATA_SFI or ef != card.fs.ef_by_sfi(ef[:-1], ISSUER_DATA_SFI):
        return False
    return any(r[:2] == b"\x03\x04" and r[2:6] == b"3.00" for r in card.fs.records_by_sfi(ef[:-1], ISSUER_DATA_SFI))


def _pin_guard(base):
    def verify(card, cmd):
        if cmd.lc_present:
            require_active(card)
        return base(card, cmd)
    return verify


def _change_guard(base):
    def change_or_reload(card, cmd):
        if cmd.p1 == 0x01:
            require_active(card)
        return base(card, cmd)
    return change_or_reload


def extension_entry(card, df, fid: int) -> tuple[int, int] | None:
    """(access byte, maximum size) that the extension directory of df gives DF fid, if listed."""
    for rec in card.fs.records_by_sfi(df, DIRECTORY_SFI):
        if rec[:1] == bytes([DIRECTORY_TAG]) and len(rec) == 7 and int.from_bytes(rec[2:4], "big") == fid:
            return rec[4], int.from_bytes(rec[5:7], "big")
    return None


def _extension_create(base):
    def create_file(card, cmd):
        fid = (cmd.p1 << 8) | cmd.p2
        entry = extension_entry(card, card.session.current_df, fid) if cmd.lc_present else None
        if entry is None:
            return base(card, cmd)
        spec = parse_create(fid, cmd.data)
        if not isinstance(spec, DedicatedFile):
            raise CardError(sw.SECURITY_NOT_SATISFIED, "the extension area reserves this FID for a DF")
        right, limit = entry
        card.require(right, "department key")
        if spec.size > limit:
            raise CardError(sw.NOT_ENOUGH_MEMORY, f"the department may reserve {limit} bytes, not {spec.size}")
        card.fs.create(card.session.current_df, spec)
        return b""
    return create_file
