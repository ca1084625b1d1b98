"""The security module a terminal asks for every cryptogram and MAC: the keys never reach the terminal.

Three kinds stand behind this one interface: the encrypted issuer key file (personalize.keys.SoftwareKeys),
a PSAM reached through any transport (terminal.psam.PsamSecurityModule), and later an HSM. A key is
named by a KeyRef: the issuer master key and the diversification factors of the card it is for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cardos.crypto import Algorithm


@dataclass(frozen=True)
class KeyRef:
    """A card key: the master key it derives from, the card factor and any higher levels (psam.md §2).

    `factor` is the lowest level (the card: its ATR's last 8 bytes); `higher` lists the levels
    above it, lowest first (the city factor, then a province factor). Derivation runs from the
    highest level down, so KeyRef(name, card, (city,)) is Div(Div(MK, city), card).
    """

    name: str
    factor: bytes | None = None
    higher: tuple[bytes, ...] = ()

    @property
    def levels(self) -> tuple[bytes, ...]:
        """Every diversification factor, lowest level first (the order of 80 1A data)."""
        return ((self.factor,) if self.factor else ()) + tuple(self.higher)

    def __str__(self) -> str:
        return self.name + "".join(f"⊕{f.hex().upper()}" for f in self.levels)


class SecurityModule(Protocol):
    """What a terminal needs from keys, without ever holding a card key outside the module."""

    def algorithm(self, ref: KeyRef) -> Algorithm: ...

    def encrypt(self, ref: KeyRef, block: bytes) -> bytes:
        """E(card key, block): EXTERNAL AUTHENTICATE cryptograms."""

    def mac(self, ref: KeyRef, challenge: bytes, data: bytes) -> bytes:
        """The 4-byte line-protection MAC of data, initial value = challenge ‖ 00… (spec §3)."""

    def seal(self, ref: KeyRef, data: bytes) -> bytes:
        """The secured-data envelope of data (LD ‖ data, padded, ECB) under the card key."""

    def session_encrypt(self, ref: KeyRef, process: bytes, block: bytes) -> bytes:
        """E(SK, block) with SK the card key diversified by `process` (INTERNAL AUTHENTICATE check)."""

    def seal_key_record(self, under: KeyRef, prefix: bytes, target: KeyRef) -> bytes:
        """Seal prefix ‖ value(target) under `under` (secured WRITE KEY); a PSAM refuses."""

    def value_for_plain_load(self, ref: KeyRef) -> bytes:
        """The card key in clear, for plain 80 D4 into a fresh DF; a PSAM or HSM refuses."""

    def version(self, name: str) -> int: ...

    def audit_mac(self, data: bytes) -> bytes:
        """HMAC-SHA256 of data under the audit-chain key, derived inside the module and never given out."""


class Refused(RuntimeError):
    """The security module will not do this (a PSAM never exports or wraps card keys)."""


class SecurityModuleError(RuntimeError):
    """The security module failed or answered an unexpected status word; never carries key material."""
