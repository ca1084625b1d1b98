"""Symmetric crypto of the card: DES, 3DES and SM4 blocks, PBOC MACs and diversification (spec §3)."""

from __future__ import annotations

import enum
import hmac

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class Algorithm(enum.Enum):
    """A symmetric algorithm as the card names it in key records."""

    DES = "des"
    TDES = "3des"
    SM4 = "sm4"

    @property
    def block(self) -> int:
        return 16 if self is Algorithm.SM4 else 8

    @property
    def key_length(self) -> int:
        return 8 if self is Algorithm.DES else 16


# Algorithm byte of FMCOS key records; 04 for SM4 is our convention (spec §3b).
ALGORITHM_IDS = {Algorithm.DES: 0x00, Algorithm.TDES: 0x01, Algorithm.SM4: 0x04}
ALGORITHM_BY_ID = {v: k for k, v in ALGORITHM_IDS.items()}


def _des_key(key: bytes) -> bytes:
    # cryptography deprecates 8-byte TripleDES keys; K‖K‖K is the same single DES.
    if len(key) == 8:
        return key * 3
    if len(key) == 16:
        return key + key[:8]
    raise ValueError(f"DES key must be 8 or 16 bytes, not {len(key)}")


def _cipher(alg: Algorithm, key: bytes, mode) -> Cipher:
    if alg is Algorithm.SM4:
        if len(key) != 16:
            raise ValueError(f"SM4 key must be 16 bytes, not {len(key)}")
        return Cipher(algorithms.SM4(key), mode)
    if alg is Algorithm.DES and len(key) != 8:
        raise ValueError(f"DES key must be 8 bytes, not {len(key)}")
    return Cipher(TripleDES(_des_key(key)), mode)


def encrypt_ecb(alg: Algorithm, key: bytes, data: bytes) -> bytes:
    """ECB encryption of whole blocks."""
    enc = _cipher(alg, key, modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def decrypt_ecb(alg: Algorithm, key: bytes, data: bytes) -> bytes:
    """ECB decryption of whole blocks."""
    dec = _cipher(alg, key, modes.ECB()).decryptor()
    return dec.update(data) + dec.finalize()


def pad80(data: bytes, block: int) -> bytes:
    """ISO 9797-1 method 2: append 80 then 00s; an aligned input gains a whole block."""
    data = data + b"\x80"
    return data + bytes(-len(data) % block)


def _cbc_last_block(alg: Algorithm, key: bytes, iv: bytes, data: bytes) -> bytes:
    enc = _cipher(alg, key, modes.CBC(iv)).encryptor()
    return (enc.update(data) + enc.finalize())[-alg.block:]


def retail_mac(key: bytes, iv: bytes, padded: bytes) -> bytes:
    """ISO 9797-1 MAC algorithm 3 (PBOC 3DES MAC): single-DES CBC, 3DES on the last block."""
    if len(padded) % 8 or not padded:
        raise ValueError("retail MAC input must be whole 8-byte blocks")
    k1 = key[:8]
    head, last = padded[:-8], padded[-8:]
    chain = _cbc_last_block(Algorithm.DES, k1, iv, head) if head else iv
    x = bytes(a ^ b for a, b in zip(chain, last))
    # E_K1(D_K2(E_K1(x))) is two-key EDE 3DES of x.
    return encrypt_ecb(Algorithm.TDES, key, x) if len(key) == 16 else encrypt_ecb(Algorithm.DES, k1, x)


def cbc_mac(alg: Algorithm, key: bytes, iv: bytes, padded: bytes) -> bytes:
    """Plain CBC-MAC: the last cipher block (SM4, or single DES with an 8-byte key)."""
    return _cbc_last_block(alg, key, iv, padded)


def mac4(alg: Algorithm, key: bytes, challenge: bytes, data: bytes) -> bytes:
    """The 4-byte line-protection MAC of spec §3: IV = challenge ‖ 00…, data padded 80 00…."""
    iv = (challenge + bytes(alg.block))[: alg.block]
    padded = pad80(data, alg.block)
    if alg is Algorithm.TDES:
        return retail_mac(key, iv, padded)[:4]
    return cbc_mac(alg, key, iv, padded)[:4]


def mac_equal(a: bytes, b: bytes) -> bool:
    """Compare MACs or cryptograms in constant time."""
    return hmac.compare_digest(a, b)


def diversify(alg: Algorithm, master: bytes, factor: bytes) -> bytes:
    """PBOC diversification: E(MK, D) ‖ E(MK, ~D) for 3DES, E(MK, D ‖ ~D) for SM4; D is 8 bytes."""
    if len(factor) != 8:
        raise ValueError(f"diversification factor must be 8 bytes, not {len(factor)}")
    inverse = bytes(b ^ 0xFF for b in factor)
    if alg is Algorithm.SM4:
        return encrypt_ecb(alg, master, factor + inverse)
    if alg is Algorithm.DES:
        return encrypt_ecb(alg, master, factor)
    return encrypt_ecb(alg, master, factor) + encrypt_ecb(alg, master, inverse)


def diversify_levels(alg: Algorithm, master: bytes, factors: tuple[bytes, ...] | list[bytes]) -> bytes:
    """PSAM multi-level diversification: factors lowest level first, applied from the highest down."""
    key = master
    for factor in reversed(tuple(factors)):
        key = diversify(alg, key, factor)
    return key


def envelope(alg: Algorithm, data: bytes) -> bytes:
    """The plaintext of a secured-data envelope: LD ‖ data, then 80 00… only when not block-aligned (PBOC)."""
    plain = bytes([len(data)]) + data
    return pad80(plain, alg.block) if len(plain) % alg.block else plain


def seal(alg: Algorithm, key: bytes, data: bytes) -> bytes:
    """Secured-data envelope: ECB of the envelope plaintext (PBOC)."""
    return encrypt_ecb(alg, key, envelope(alg, data))


def unseal(alg: Algorithm, key: bytes, cipher: bytes) -> bytes:
    """Open a secured-data envelope; ValueError when its length byte does not fit."""
    if not cipher or len(cipher) % alg.block:
        raise ValueError("ciphertext is not whole blocks")
    plain = decrypt_ecb(alg, key, cipher)
    n = plain[0]
    if n + 1 > len(plain):
        raise ValueError("length byte exceeds the ciphertext")
    return plain[1 : 1 + n]
