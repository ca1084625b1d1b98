"""A SecurityModule that asks a PSAM for every cryptogram and MAC, through any transport (psam.md).

The terminal never sees a key: it sends the PSAM the card's factors and the data, and gets the
cryptogram back. Key export (plain key loads, sealed key records) is refused: a PSAM does not
personalize cards.
"""

from __future__ import annotations

from dataclasses import dataclass

from cardos.apdu import build
from cardos.crypto import Algorithm, envelope

from .security import KeyRef, Refused, SecurityModuleError
from .status import sw_name

PSAM_AID = bytes.fromhex("D15600000590")
BFDE, DES_INIT = "bfde", "801a"
ENCRYPT, MAC_ONE, MAC_FIRST, MAC_MIDDLE, MAC_LAST = 0x00, 0x05, 0x07, 0x03, 0x01
MAX_PIECE = 0xF0                        # bytes of MAC input per DES CRYPT command (whole blocks)


@dataclass(frozen=True)
class PsamKeySlot:
    """Where a PSAM keeps the master key a card key derives from: key usage and index, and how to init."""

    usage: int
    index: int
    init: str = DES_INIT


class PsamSecurityModule:
    """SecurityModule over a PSAM card behind a transport; slots map master names to PSAM keys."""

    appends_challenge = True            # EXTERNAL AUTHENTICATE as PSAM terminals send it: E(K, R) ‖ R

    def __init__(self, transport, slots: dict[str, PsamKeySlot], algorithm: Algorithm,
                 aid: bytes = PSAM_AID) -> None:
        self.transport = self._t = transport
        self._slots = dict(slots)
        self._alg = algorithm
        self._aid = aid

    # -- talking to the PSAM ------------------------------------------------------------------
    def _send(self, apdu: bytes, what: str) -> bytes:
        resp = self._t.transmit(apdu)
        sw = (resp[-2] << 8) | resp[-1]
        if sw != 0x9000:
            raise SecurityModuleError(f"PSAM: {what} answered {sw:04X} ({sw_name(sw)})")
        return resp[:-2]

    def _slot(self, ref: KeyRef) -> PsamKeySlot:
        try:
            return self._slots[ref.name]
        except KeyError:
            raise SecurityModuleError(f"the PSAM key table has no key for {ref.name}") from None

    def _init(self, ref: KeyRef, factors: bytes, random: bytes | None = None) -> None:
        slot = self._slot(ref)
        self._send(build(0x00, 0xA4, 0x04, 0x00, self._aid), "SELECT of the PSAM application")
        if slot.init == BFDE and random is not None:
            self._send(build(0xBF, 0xDE, slot.usage, slot.index, factors + random[:8]), f"init of {ref.name}")
        else:
            self._send(build(0x80, 0x1A, slot.usage, slot.index, factors), f"DES INIT of {ref.name}")

    def _encrypt(self, data: bytes, what: str) -> bytes:
        return self._send(build(0x80, 0xFA, ENCRYPT, 0x00, data), what)

    # -- SecurityModule -----------------------------------------------------------------------
    def algorithm(self, ref: KeyRef) -> Algorithm:
        self._slot(ref)
        return self._alg

    def encrypt(self, ref: KeyRef, block: bytes) -> bytes:
        self._init(ref, b"".join(ref.levels), block)
        return self._encrypt(block, f"DES CRYPT under {ref.name}")

    def mac(self, ref: KeyRef, challenge: bytes, data: bytes) -> bytes:
        self._init(ref, b"".join(ref.levels))
        size = self._alg.block
        iv = (challenge + bytes(size))[:size]
        head_len = max(0, (len(data) - 1) // size * size)   # whole blocks before the last piece
        head, last = data[:head_len], data[head_len:]
        if len(iv + data) <= MAX_PIECE:
            return self._send(build(0x80, 0xFA, MAC_ONE, 0x00, iv + data), f"MAC under {ref.name}")
        piece = MAX_PIECE - MAX_PIECE % size - size
        self._send(build(0x80, 0xFA, MAC_FIRST, 0x00, iv + head[:piece]), f"MAC under {ref.name}")
        for i in range(piece, len(head), MAX_PIECE - MAX_PIECE % size):
            self._send(build(0x80, 0xFA, MAC_MIDDLE, 0x00, head[i:i + MAX_PIECE - MAX_PIECE % size]),
                       f"MAC under {ref.name}")
        return self._send(build(0x80, 0xFA, MAC_LAST, 0x00, last), f"MAC under {ref.name}")

    def seal(self, ref: KeyRef, data: bytes) -> bytes:
        self._init(ref, b"".join(ref.levels))
        return self._encrypt(envelope(self._alg, data), f"sealing under {ref.name}")

    def session_encrypt(self, ref: KeyRef, process: bytes, block: bytes) -> bytes:
        # One more level below the card's: SK = Div(card key, process) (psam.md §2).
        self._init(ref, process + b"".join(ref.levels))
        return self._encrypt(block, f"INTERNAL AUTHENTICATE check under {ref.name}")

    def seal_key_record(self, under: KeyRef, prefix: bytes, target: KeyRef) -> bytes:
        raise Refused("a PSAM never exports card keys: loading keys needs the issuer key file or an HSM")

    def value_for_plain_load(self, ref: KeyRef) -> bytes:
        raise Refused("a PSAM never exports card keys: loading keys needs the issuer key file or an HSM")

    def version(self, name: str) -> int:
        return 1 if name in self._slots else 0

    def audit_mac(self, data: bytes) -> bytes:
        raise Refused("a PSAM holds no audit-chain key: personalization batches need the issuer key file or an HSM")
