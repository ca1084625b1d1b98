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
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from cardos.crypto import Algorithm, diversify, diversify_levels, encrypt_ecb, mac4, seal
from terminal.security import KeyRef, SecurityModule

PASSPHRASE_ENV = "SSCARD_KEYS_PASSPHRASE"
FORMAT = "sscard-issuer-keys"


class UnknownKey(LookupError):
    """A key the script names is not in the key file; the message names it, never a value."""


# The interface moved to the terminal layer; the old names stay for existing callers.
KeyProvider = SecurityModule


AUDIT_LABEL = b"sscard audit chain v1"


class SoftwareKeys:
    """A key provider over master keys held in memory (loaded from a key file)."""

    def __init__(self, masters: dict[str, tuple[Algorithm, bytes, int]], rsa: dict[str, bytes] | None = None) -> None:
        self._masters = dict(masters)
        self._audit_key: bytes | None = None
        self._rsa = dict(rsa or {})  # EMV CA and issuer keys, PKCS#8 DER (personalize.emv_keys)

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

    def audit_mac(self, data: bytes) -> bytes:
        """HMAC-SHA256 under HKDF-SHA256(every master key, sorted by name; fixed label): the audit
        log verifies only with the key file it was written under."""
        if self._audit_key is None:
            ikm = b"".join(name.encode() + b"\0" + self._masters[name][1] for name in sorted(self._masters))
            self._audit_key = HKDF(hashes.SHA256(), 32, salt=None, info=AUDIT_LABEL).derive(ikm)
        h = hmac.HMAC(self._audit_key, hashes.SHA256())
        h.update(data)
        return h.finalize()

    def _rsa_key(self, name: str) -> bytes:
        if name not in self._rsa:
            raise UnknownKey(f"the key file has no RSA key named {name!r} (a key file of `sscard keys new` has)")
        return self._rsa[name]

    def rsa_public(self, name: str) -> tuple[int, int]:
        """(modulus, exponent) of an RSA key."""
        from .emv_keys import public_numbers
        return public_numbers(self._rsa_key(name))

    def rsa_private_op(self, name: str, block: bytes) -> bytes:
        """The RSA private operation on a formatted block (EMV certificates and signatures)."""
        from .emv_keys import private_op
        return private_op(self._rsa_key(name), block)

    def rsa_keys(self) -> dict[str, bytes]:
        return dict(self._rsa)


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
                  weak_ok: bool = False, rsa: dict[str, bytes] | None = None) -> None:
    """Write master keys (and RSA keys) encrypted under a passphrase (scrypt + AES-256-GCM), atomically,
    mode 600; a weak passphrase only for published demo keys (weak_ok).

    The EMV CA's public key is published in clear beside them, for terminals to load.
    """
    if not weak_ok and (why := passphrase_problem(passphrase)):
        raise KeyFileError(f"{path}: {why}")
    secret = {name: {"algorithm": alg.value, "value": v.hex().upper(), "version": ver}
              for name, (alg, v, ver) in masters.items()}
    if rsa:
        secret[RSA_SECTION] = {name: der.hex().upper() for name, der in rsa.items()}
    plain = json.dumps(secret).encode()
    salt, nonce = os.urandom(16), os.urandom(12)
    key = _kdf(salt).derive(passphrase.encode())
    body = AESGCM(key).encrypt(nonce, plain, FORMAT.encode())
    doc = {"format": FORMAT, "version": 1, "kdf": "scrypt-n16384-r8-p1", "salt": salt.hex(),
           "nonce": nonce.hex(), "ciphertext": body.hex(),
           "names": sorted(masters)}
    if rsa:
        doc["ca_public"] = _ca_public(rsa)
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
    secret = json.loads(plain)
    rsa = {name: bytes.fromhex(v) for name, v in secret.pop(RSA_SECTION, {}).items()}
    for name, k in secret.items():
        masters[name] = (Algorithm(k["algorithm"]), bytes.fromhex(k["value"]), int(k.get("version", 1)))
    return SoftwareKeys(masters, rsa)


RSA_SECTION = "__rsa__"  # inside the encrypted part, beside the master keys


def _ca_public(rsa: dict[str, bytes]) -> dict:
    from .emv_keys import CA_INDEX, CA_KEY, RID, public_numbers
    if CA_KEY not in rsa:
        return {}
    n, e = public_numbers(rsa[CA_KEY])
    return {"rid": RID.hex().upper(), "index": f"{CA_INDEX:02X}", "modulus": f"{n:X}", "exponent": f"{e:X}"}


def ca_public_key(path: str | os.PathLike) -> tuple[bytes, int, int, int] | None:
    """The CA public key a key file publishes in clear: (RID, index, modulus, exponent), no passphrase."""
    doc = json.loads(Path(path).read_text())
    ca = doc.get("ca_public")
    if not ca:
        return None
    return bytes.fromhex(ca["rid"]), int(ca["index"], 16), int(ca["modulus"], 16), int(ca["exponent"], 16)


def trusted_ca_keys(paths) -> dict[tuple[bytes, int], tuple[int, int]]:
    """The CA public keys key files publish, by (RID, index), as a terminal trusts them for SDA."""
    out = {}
    for path in paths:
        try:
            published = ca_public_key(path)
        except (OSError, ValueError, KeyError):
            raise KeyFileError(f"{path}: no readable CA public key in it") from None
        if published:
            rid, index, n, e = published
            out[(rid, index)] = (n, e)
    return out
