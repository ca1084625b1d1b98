"""Issuer keys: references, the provider interface an HSM can stand behind, and the key file.

A script names keys (master key name + diversification factor) and never holds their values;
the provider computes cryptograms, MACs and sealed key records. The software provider reads a
key file encrypted with a passphrase (scrypt + AES-256-GCM); the passphrase comes from the
environment variable SSCARD_KEYS_PASSPHRASE or a prompt, never from a command-line flag.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from cardos.crypto import Algorithm, diversify, diversify_levels, encrypt_ecb, mac4, seal
from terminal.security import KeyRef, SecurityModule

PASSPHRASE_ENV = "SSCARD_KEYS_PASSPHRASE"
FORMAT = "sscard-issuer-keys"


class UnknownKey(LookupError):
    """A key the script names is not in the key file; the message names it, never a value."""


# The interface moved to the terminal layer; the old names stay for existing callers.
KeyProvider = SecurityModule


class SoftwareKeys:
    """A key provider over master keys held in memory (loaded from a key file)."""

    def __init__(self, masters: dict[str, tuple[Algorithm, bytes, int]]) -> None:
        self._masters = dict(masters)

    def names(self) -> list[str]:
        return sorted(self._masters)

    def _key(self, ref: KeyRef) -> tuple[Algorithm, bytes]:
        try:
            alg, value, _ = self._masters[ref.name]
        except KeyError:
            raise UnknownKey(f"the key file has no key named {ref.name!r}") from None
        return alg, diversify_levels(alg, value, ref.levels)

    def algorithm(self, ref: KeyRef) -> Algorithm:
        return self._key(ref)[0]

    def encrypt(self, ref: KeyRef, block: bytes) -> bytes:
        alg, k = self._key(ref)
        return encrypt_ecb(alg, k, block)

    def mac(self, ref: KeyRef, challenge: bytes, data: bytes) -> bytes:
        alg, k = self._key(ref)
        return mac4(alg, k, challenge, data)

    def seal(self, ref: KeyRef, data: bytes) -> bytes:
        alg, k = self._key(ref)
        return seal(alg, k, data)

    def session_encrypt(self, ref: KeyRef, process: bytes, block: bytes) -> bytes:
        alg, k = self._key(ref)
        return encrypt_ecb(alg, diversify(alg, k, process), block)

    def seal_key_record(self, under: KeyRef, prefix: bytes, target: KeyRef) -> bytes:
        alg, k = self._key(under)
        return seal(alg, k, prefix + self._key(target)[1])

    def value_for_plain_load(self, ref: KeyRef) -> bytes:
        """A card key in clear, only for plain 80 D4 loading into a fresh DF at initialization."""
        return self._key(ref)[1]

    def version(self, name: str) -> int:
        return self._masters[name][2] if name in self._masters else 0


# ---- the key file ------------------------------------------------------------------------------

def _kdf(salt: bytes) -> Scrypt:
    return Scrypt(salt=salt, length=32, n=2**14, r=8, p=1)


def save_key_file(path: str | os.PathLike, masters: dict[str, tuple[Algorithm, bytes, int]], passphrase: str) -> None:
    """Write master keys encrypted under a passphrase (scrypt + AES-256-GCM), atomically, mode 600."""
    plain = json.dumps({name: {"algorithm": alg.value, "value": v.hex().upper(), "version": ver}
                        for name, (alg, v, ver) in masters.items()}).encode()
    salt, nonce = os.urandom(16), os.urandom(12)
    key = _kdf(salt).derive(passphrase.encode())
    body = AESGCM(key).encrypt(nonce, plain, FORMAT.encode())
    doc = {"format": FORMAT, "version": 1, "kdf": "scrypt-n16384-r8-p1", "salt": salt.hex(),
           "nonce": nonce.hex(), "ciphertext": body.hex(),
           "names": sorted(masters)}
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)


class KeyFileError(ValueError):
    """A key file that cannot be opened; never says anything about the keys inside."""


def load_key_file(path: str | os.PathLike, passphrase: str | None = None) -> SoftwareKeys:
    """Open a key file; the passphrase defaults to the SSCARD_KEYS_PASSPHRASE environment variable."""
    if passphrase is None:
        passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase is None:
        raise KeyFileError(f"{path}: no passphrase (set {PASSPHRASE_ENV} or answer the prompt)")
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as e:
        raise KeyFileError(f"{path}: {e.strerror}") from None
    except json.JSONDecodeError:
        raise KeyFileError(f"{path}: not a key file (not JSON)") from None
    if doc.get("format") != FORMAT:
        raise KeyFileError(f"{path}: not an sscard issuer key file")
    try:
        key = _kdf(bytes.fromhex(doc["salt"])).derive(passphrase.encode())
        plain = AESGCM(key).decrypt(bytes.fromhex(doc["nonce"]), bytes.fromhex(doc["ciphertext"]), FORMAT.encode())
    except InvalidTag:
        raise KeyFileError(f"{path}: wrong passphrase, or the file was altered") from None
    except (KeyError, ValueError):
        raise KeyFileError(f"{path}: key file is damaged") from None
    masters = {}
    for name, k in json.loads(plain).items():
        masters[name] = (Algorithm(k["algorithm"]), bytes.fromhex(k["value"]), int(k.get("version", 1)))
    return SoftwareKeys(masters)
