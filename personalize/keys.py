"""Issuer keys: references, the provider interface an HSM can stand behind, and the key file.

A script names keys (master key name + diversification factor) and never holds their values;
the provider computes cryptograms, MACs and sealed key records. The software provider reads a
key file encrypted with a passphrase (scrypt + AES-256-GCM); the passphrase comes from the
environment variable SSCARD_KEYS_PASSPHRASE or a prompt, never from a command-line flag.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from cardos.crypto import Algorithm, diversify, encrypt_ecb, mac4, seal

PASSPHRASE_ENV = "SSCARD_KEYS_PASSPHRASE"
FORMAT = "sscard-issuer-keys"


class UnknownKey(LookupError):
    """A key the script names is not in the key file; the message names it, never a value."""


@dataclass(frozen=True)
class KeyRef:
    """A card key: the issuer master key it derives from and the 8-byte diversification factor."""

    name: str
    factor: bytes | None = None

    def __str__(self) -> str:
        return self.name + (f"⊕{self.factor.hex().upper()}" if self.factor else "")


class KeyProvider(Protocol):
    """What personalization needs from keys, without ever holding a card key outside the provider."""

    def algorithm(self, ref: KeyRef) -> Algorithm: ...

    def encrypt(self, ref: KeyRef, block: bytes) -> bytes: ...

    def mac(self, ref: KeyRef, challenge: bytes, data: bytes) -> bytes: ...

    def seal(self, ref: KeyRef, data: bytes) -> bytes: ...

    def session_encrypt(self, ref: KeyRef, process: bytes, block: bytes) -> bytes:
        """E(SK, block) with SK the card key diversified by `process` (INTERNAL AUTHENTICATE check)."""

    def seal_key_record(self, under: KeyRef, prefix: bytes, target: KeyRef) -> bytes:
        """Seal prefix ‖ value(target) under `under` (secured WRITE KEY)."""

    def value_for_plain_load(self, ref: KeyRef) -> bytes:
        """The card key in clear, for plain 80 D4 into a fresh DF; an HSM may refuse this."""

    def version(self, name: str) -> int: ...

    def audit_mac(self, data: bytes) -> bytes:
        """HMAC-SHA256 of data under the audit-chain key, a key derived inside the provider and never given out."""


AUDIT_LABEL = b"sscard audit chain v1"


class SoftwareKeys:
    """A key provider over master keys held in memory (loaded from a key file)."""

    def __init__(self, masters: dict[str, tuple[Algorithm, bytes, int]]) -> None:
        self._masters = dict(masters)
        self._audit_key: bytes | None = None

    def names(self) -> list[str]:
        return sorted(self._masters)

    def _key(self, ref: KeyRef) -> tuple[Algorithm, bytes]:
        try:
            alg, value, _ = self._masters[ref.name]
        except KeyError:
            raise UnknownKey(f"the key file has no key named {ref.name!r}") from None
        if ref.factor is None:
            return alg, value
        return alg, diversify(alg, value, ref.factor)

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

    def audit_mac(self, data: bytes) -> bytes:
        """HMAC-SHA256 under HKDF-SHA256(every master key, sorted by name; fixed label): the audit
        log verifies only with the key file it was written under."""
        if self._audit_key is None:
            ikm = b"".join(name.encode() + b"\0" + self._masters[name][1] for name in sorted(self._masters))
            self._audit_key = HKDF(hashes.SHA256(), 32, salt=None, info=AUDIT_LABEL).derive(ikm)
        h = hmac.HMAC(self._audit_key, hashes.SHA256())
        h.update(data)
        return h.finalize()


# ---- the key file ------------------------------------------------------------------------------

def _kdf(salt: bytes) -> Scrypt:
    return Scrypt(salt=salt, length=32, n=2**14, r=8, p=1)


class KeyFileError(ValueError):
    """A key file that cannot be opened; never says anything about the keys inside."""


def refuse_loose_rights(path: str | os.PathLike, mode: int) -> None:
    """A key file others may read or replace is refused, with the command that fixes it."""
    if mode & 0o077:
        raise KeyFileError(f"{path}: group or others have rights on this key file (mode {mode & 0o777:o}); "
                           f"run: chmod 600 {path}")


MIN_PASSPHRASE = 12


def passphrase_problem(passphrase: str) -> str | None:
    """Why a passphrase is too weak for a key file (never repeating it), or None."""
    if len(passphrase) < MIN_PASSPHRASE:
        n = len(passphrase)
        return f"the passphrase is {n} character{'' if n == 1 else 's'} long; a key file needs at least {MIN_PASSPHRASE}"
    if len(set(passphrase)) < 5:
        return "the passphrase repeats too few different characters (at least 5 different ones)"
    return None


def save_key_file(path: str | os.PathLike, masters: dict[str, tuple[Algorithm, bytes, int]], passphrase: str,
                  weak_ok: bool = False) -> None:
    """Write master keys encrypted under a passphrase (scrypt + AES-256-GCM), atomically, mode 600;
    a weak passphrase only for published demo keys (weak_ok)."""
    if not weak_ok and (why := passphrase_problem(passphrase)):
        raise KeyFileError(f"{path}: {why}")
    plain = json.dumps({name: {"algorithm": alg.value, "value": v.hex().upper(), "version": ver}
                        for name, (alg, v, ver) in masters.items()}).encode()
    salt, nonce = os.urandom(16), os.urandom(12)
    key = _kdf(salt).derive(passphrase.encode())
    body = AESGCM(key).encrypt(nonce, plain, FORMAT.encode())
    doc = {"format": FORMAT, "version": 1, "kdf": "scrypt-n16384-r8-p1", "salt": salt.hex(),
           "nonce": nonce.hex(), "ciphertext": body.hex(),
           "names": sorted(masters)}
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    # O_EXCL: a temporary left by a crash (perhaps with looser rights) is never reused.
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)                              # whatever the umask
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_key_file(path: str | os.PathLike, passphrase: str | None = None) -> SoftwareKeys:
    """Open a key file; the passphrase defaults to the SSCARD_KEYS_PASSPHRASE environment variable."""
    if passphrase is None:
        passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase is None:
        raise KeyFileError(f"{path}: no passphrase (set {PASSPHRASE_ENV} or answer the prompt)")
    try:
        with open(path, "rb") as f:
            mode, raw = os.fstat(f.fileno()).st_mode, f.read()
    except OSError as e:
        raise KeyFileError(f"{path}: {e.strerror}") from None
    refuse_loose_rights(path, mode)
    try:
        doc = json.loads(raw)
    except ValueError:
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
