"""The ICC's own RSA key for dynamic data authentication (EMV 4.3 Book 2 §6.1, §6.4): one per card,
certified by the issuer.

[ours] 1024 bits, exponent 3: the longest ICC key a 1024-bit issuer key can certify (N_ICC ≤ N_I),
the shortest pycryptodome generates, and EMV's cheaper exponent for the terminal's recovery.
The key is derived, never drawn: a resumed batch, or a batch on more workers, makes the same card
byte for byte. The issuer key signs a fixed label inside the key provider (key file or HSM alike,
and the issuer key never leaves it); HKDF-SHA256 of that signature with the PAN and PAN sequence
number is the card's seed; SHAKE256 of the seed is the random stream of pycryptodome's RSA key
generation (FIPS 186-4 B.3.3). No seed or key part is ever printed, journalled or raised.
"""

from __future__ import annotations

import functools
import hashlib
import weakref
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .emv_keys import ISSUER_KEY, RSA, SHA1, certificate

ICC_BITS, ICC_EXPONENT = 1024, 3
PARTS = 2                      # key records of the card OS: 01 the modulus, 02 the private exponent
PART_BYTES = ICC_BITS // 8
SEED_LABEL = b"sscard emv icc key v1"


@dataclass(frozen=True)
class IccKey:
    """A card's RSA key pair: the public numbers, and the parts the card stores (never shown)."""

    modulus: int
    exponent: int
    parts: tuple[bytes, ...] = field(repr=False)


def derive(keys, pan: str, psn: str = "00") -> IccKey:
    """The ICC key of the card with this PAN and PAN sequence number, under the provider's issuer key."""
    info = b"|".join((SEED_LABEL, str(ICC_BITS).encode(), pan.encode(), psn.encode()))
    seed = HKDF(hashes.SHA256(), 32, salt=None, info=info).derive(_issuer_secret(keys))
    return _generate(seed)


def _issuer_secret(keys) -> bytes:
    """The issuer key's raw signature of a label block no EMV format starts with (00 ‖ SHAKE256),
    kept as long as the provider lives (it holds the issuer key anyway)."""
    try:
        return _SECRETS[keys]
    except (KeyError, TypeError):          # TypeError: a provider that cannot be weakly referenced
        pass
    n, _ = keys.rsa_public(ISSUER_KEY)
    block = b"\x00" + hashlib.shake_256(SEED_LABEL).digest((n.bit_length() + 7) // 8 - 1)
    secret = keys.rsa_private_op(ISSUER_KEY, block)
    try:
        _SECRETS[keys] = secret
    except TypeError:
        pass
    return secret


_SECRETS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# A card's key is needed for its key records, its certificate and the read-back: made once.
@functools.lru_cache(maxsize=8)
def _generate(seed: bytes) -> IccKey:
    from Crypto.Hash import SHAKE256
    from Crypto.PublicKey import RSA as PyRsa
    key = PyRsa.generate(ICC_BITS, randfunc=SHAKE256.new(seed).read, e=ICC_EXPONENT)
    n, d = int(key.n), int(key.d)
    return IccKey(n, ICC_EXPONENT, (n.to_bytes(PART_BYTES, "big"), d.to_bytes(PART_BYTES, "big")))


def icc_certificate(keys, icc: IccKey, pan: str, psn: str, expiry_yymmdd: str, static_data: bytes) -> dict[int, bytes]:
    """9F46, 9F47, 9F48: the ICC public key certificate the issuer signs (Book 2 §6.4, table 14); its
    hash covers the static data to be authenticated. It expires with the application [ours]."""
    modulus = icc.modulus.to_bytes(PART_BYTES, "big")
    exponent = icc.exponent.to_bytes((icc.exponent.bit_length() + 7) // 8, "big")
    mmyy = expiry_yymmdd[2:4] + expiry_yymmdd[:2]
    serial = hashlib.sha256(f"{pan}/{psn}".encode()).digest()[:3]        # [ours] per card, reproducible
    head = bytes([0x04]) + bytes.fromhex(pan.ljust(20, "F")) + bytes.fromhex(mmyy) + serial \
        + bytes([SHA1, RSA, len(modulus), len(exponent)])
    cert, remainder = certificate(keys, ISSUER_KEY, head, modulus, exponent, static_data)
    out = {0x9F46: cert, 0x9F47: exponent}
    if remainder:
        out[0x9F48] = remainder
    return out
