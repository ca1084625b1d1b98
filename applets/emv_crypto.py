"""EMV application cryptography with 3DES keys (EMV 4.3 Book 2 annex A1, the common core choices).

The card key (ICC master key) is derived from the issuer master key at personalization
(option A, PAN ‖ PSN); here each cryptogram uses a session key from the common session key
derivation (A1.3.1) with R = ATC ‖ 00…, the MAC of ISO 9797-1 algorithm 3 with padding
method 2 (A1.2.1), and ARPC method 1 (A1.2.1, 8.2.1).
"""

from __future__ import annotations

from cardos.crypto import Algorithm, encrypt_ecb, mac_equal, pad80, retail_mac


def session_key(card_key: bytes, atc: int) -> bytes:
    """The AC session key: the common session key with R = ATC ‖ 00×6."""
    return common_session_key(card_key, atc.to_bytes(2, "big") + bytes(6))


def common_session_key(card_key: bytes, r: bytes) -> bytes:
    """A1.3.1: E(MK, R with byte 3 = F0) ‖ E(MK, R with byte 3 = 0F); R is 8 bytes (ATC ‖ 0s, or the ARQC)."""
    left = r[:2] + b"\xf0" + r[3:]
    right = r[:2] + b"\x0f" + r[3:]
    return encrypt_ecb(Algorithm.TDES, card_key, left) + encrypt_ecb(Algorithm.TDES, card_key, right)


def application_cryptogram(card_key: bytes, atc: int, data: bytes) -> bytes:
    """ARQC, TC or AAC: the 8-byte retail MAC of the data under the AC session key."""
    return retail_mac(session_key(card_key, atc), bytes(8), pad80(data, 8))


def arpc(card_key: bytes, atc: int, arqc: bytes, arc: bytes) -> bytes:
    """ARPC method 1: E(SK, ARQC xor (ARC ‖ 00×6))."""
    block = bytes(a ^ b for a, b in zip(arqc, arc.ljust(8, b"\x00")))
    return encrypt_ecb(Algorithm.TDES, session_key(card_key, atc), block)


def arpc_matches(card_key: bytes, atc: int, arqc: bytes, arc: bytes, received: bytes) -> bool:
    return mac_equal(arpc(card_key, atc, arqc, arc), received)
