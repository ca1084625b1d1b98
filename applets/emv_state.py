"""What an EMV application remembers between transactions: its counters and its transaction log.

[ours] The counters are one binary EF of the ADF (SFI 1D, never readable): ATC (2 bytes), last
online ATC (2), consecutive offline transactions (1), flags (1). Each change is committed to the
card's tear-safe store at once, so a cryptogram never leaves the card with an ATC a power cut
could hand out again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cardos import sw
from cardos.sw import CardError
from cardos.tlv import TlvError, find

COUNTERS_SFI = 0x1D
ISSUER_AUTH_FAILED = 0x01      # the last online transaction's ARPC was wrong
ONLINE_UNFINISHED = 0x02       # an ARQC left the card and no second GENERATE AC followed


@dataclass(frozen=True)
class Counters:
    """The application's persistent counters."""

    atc: int = 0
    last_online_atc: int = 0
    offline_count: int = 0
    flags: int = 0

    def encode(self) -> bytes:
        return (self.atc.to_bytes(2, "big") + self.last_online_atc.to_bytes(2, "big")
                + bytes([min(self.offline_count, 0xFF), self.flags]))

    @classmethod
    def decode(cls, raw: bytes) -> Counters:
        return cls(int.from_bytes(raw[0:2], "big"), int.from_bytes(raw[2:4], "big"), raw[4], raw[5])


def _counters_ef(card, df):
    path = card.fs.ef_by_sfi(df, COUNTERS_SFI)
    if path is None or len(card.fs.body(path)) < 6:
        raise CardError(sw.CONDITIONS_NOT_SATISFIED, "the application has no counters file")
    return path


def load(card, df) -> Counters:
    return Counters.decode(card.fs.body(_counters_ef(card, df)))


def save(card, df, counters: Counters) -> None:
    """Write the counters and commit them before anything that depends on them leaves the card."""
    path = _counters_ef(card, df)
    body = card.fs.body(path)
    card.fs.set_body(path, counters.encode() + body[6:])
    card.store.commit()


def next_atc(card, df, **changes) -> Counters:
    """Increment the ATC (with other changes) and commit it; 6985 once the ATC has reached FFFF."""
    c = load(card, df)
    if c.atc >= 0xFFFF:
        raise CardError(sw.CONDITIONS_NOT_SATISFIED, "ATC exhausted")
    c = replace(c, atc=c.atc + 1, **changes)
    save(card, df, c)
    return c


def log_sfi(card, df) -> int | None:
    """The log entry's SFI (9F4D in the FCI discretionary data BF0C), or None without a log."""
    spec = card.fs.spec(df)
    fci = card.fs.ef_by_sfi(df, spec.fci_sfi) if getattr(spec, "fci_sfi", None) is not None else None
    if fci is None:
        return None
    try:
        entry = find(bytes(card.fs.body(fci)), 0x9F4D)
    except TlvError:
        return None
    return entry[0] if entry else None


def append_log(card, df, entry: bytes) -> None:
    """Add a transaction to the cyclic log file: record 1 is the newest, the oldest falls off."""
    sfi = log_sfi(card, df)
    path = card.fs.ef_by_sfi(df, sfi) if sfi else None
    if path is None:
        return
    spec = card.fs.spec(path)
    entry = entry[: spec.rec_len].ljust(spec.rec_len, b"\x00")
    card.fs.set_body(path, ((entry,) + tuple(card.fs.body(path)))[: spec.count])
