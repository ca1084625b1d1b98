"""A security module over a PKCS#11 token (an HSM): issuer master keys that never leave it.

Keys are named by RFC 7512 URIs (`pkcs11:token=LABEL`, optionally `;object=NAME`); the module
library comes from --pkcs11-module, SSCARD_PKCS11_MODULE or SoftHSM2's default path, and the
token PIN from SSCARD_PKCS11_PIN or a prompt, never from a flag.

A master key is a non-extractable, sensitive 2-key 3DES object labelled with its name. Card keys
are derived inside the token with CKM_DES3_ECB_ENCRYPT_DATA (D ‖ ~D is PBOC diversification);
cryptograms and MACs are computed by the token. What must reach the host is said per method.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from dataclasses import dataclass

import PyKCS11
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from PyKCS11 import LowLevel as LL

from cardos.crypto import Algorithm, envelope, pad80
from personalize.emv_keys import CA_KEY, ISSUER_KEY
from personalize.keys import AUDIT_LABEL, KeyRef, UnknownKey

from .uri import PIN_ENV, Pkcs11Error, Uri, module_path, parse_uri

# The single-DES half K1 of an undiversified master, for its retail MAC (stored as K1 ‖ K1).
HALF_SUFFIX = ".K1"
# No PKCS#11 version up to 3.1 defines SM4: modules that have it use a vendor-defined mechanism.
SM4_MECHANISM = "CKM_SM4_ECB"
TDES_MECHANISMS = ("CKM_DES3_ECB", "CKM_DES3_CBC", "CKM_DES3_ECB_ENCRYPT_DATA")


# ---- opening a token ----------------------------------------------------------------------------

def _load(path: str) -> PyKCS11.PyKCS11Lib:
    lib = PyKCS11.PyKCS11Lib()
    try:
        lib.load(path)
    except PyKCS11.PyKCS11Error:
        why = "no such file" if not os.path.exists(path) else "not a PKCS#11 library, or its C_Initialize failed"
        raise Pkcs11Error(f"PKCS#11 module {path}: cannot load it ({why})") from None
    return lib


def _rv(e: PyKCS11.PyKCS11Error) -> str:
    return PyKCS11.CKR[e.value] if e.value in PyKCS11.CKR else str(e.value)


def open_session(uri: Uri, path: str, pin: str):
    """Log in to the token the URI names; return (library, session, mechanism names)."""
    lib = _load(path)
    for slot in lib.getSlotList(tokenPresent=True):
        info = lib.getTokenInfo(slot)
        if info.label.strip() != uri.token or (uri.serial and info.serialNumber.strip() != uri.serial):
            continue
        session = lib.openSession(slot, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
        try:
            session.login(pin)
        except PyKCS11.PyKCS11Error as e:
            if e.value != LL.CKR_USER_ALREADY_LOGGED_IN:
                raise Pkcs11Error(f"token {uri.token}: login refused ({_rv(e)})") from None
        mechanisms = {m if isinstance(m, str) else PyKCS11.CKM.get(m, hex(m)) for m in lib.getMechanismList(slot)}
        return lib, session, mechanisms
    raise Pkcs11Error(f"PKCS#11 module {path}: no token labelled {uri.token!r}")


def _pin(pin: str | None) -> str:
    pin = pin if pin is not None else os.environ.get(PIN_ENV)
    if pin is None:
        raise Pkcs11Error(f"no token PIN (set {PIN_ENV} or answer the prompt)")
    return pin


# ---- key objects ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class KeyObject:
    """A master key in the token: its handle, algorithm, version and whether the token lets it out."""

    handle: object
    algorithm: Algorithm
    version: int
    extractable: bool


def _key_id(alg: Algorithm, version: int) -> bytes:
    return f"{alg.value}/{version}".encode()


def _parse_id(raw) -> tuple[Algorithm, int] | None:
    try:
        alg, version = bytes(raw).decode().split("/")
        return Algorithm(alg), int(version)
    except (ValueError, UnicodeDecodeError):
        return None


def _key_template(name: str, alg: Algorithm, version: int, extractable: bool, derive: bool = True) -> list:
    return [(LL.CKA_CLASS, LL.CKO_SECRET_KEY), (LL.CKA_KEY_TYPE, LL.CKK_DES2), (LL.CKA_TOKEN, True),
            (LL.CKA_PRIVATE, True), (LL.CKA_SENSITIVE, True), (LL.CKA_EXTRACTABLE, extractable),
            (LL.CKA_ENCRYPT, True), (LL.CKA_DECRYPT, False), (LL.CKA_DERIVE, derive), (LL.CKA_WRAP, False),
            (LL.CKA_UNWRAP, False), (LL.CKA_SIGN, False), (LL.CKA_VERIFY, False),
            (LL.CKA_LABEL, name), (LL.CKA_ID, _key_id(alg, version))]


def _as_des2(alg: Algorithm, value: bytes) -> bytes:
    # The token runs single DES as 2-key 3DES K ‖ K: SoftHSM2 on OpenSSL 3 has no working CKM_DES_*.
    return value * 2 if alg is Algorithm.DES else value


def _session_template() -> list:
    return [(LL.CKA_CLASS, LL.CKO_SECRET_KEY), (LL.CKA_KEY_TYPE, LL.CKK_DES2), (LL.CKA_TOKEN, False),
            (LL.CKA_SENSITIVE, True), (LL.CKA_EXTRACTABLE, False), (LL.CKA_ENCRYPT, True),
            (LL.CKA_DERIVE, True)]


def _inverse(factor: bytes) -> bytes:
    return bytes(b ^ 0xFF for b in factor)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


class Pkcs11Keys:
    """The KeyProvider interface over master keys in a PKCS#11 token."""

    CACHE = 48  # derived card keys kept as session objects (a card uses ~15)

    def __init__(self, session, mechanisms: set[str], uri: Uri, path: str) -> None:
        self._session, self._mechanisms, self.uri, self.module = session, mechanisms, uri, path
        self._lock = threading.RLock()
        self._derived: dict[tuple, object] = {}
        self._audit_key: bytes | None = None
        self._keys, self._halves = self._find()
        self._rsa = self._find_rsa()

    @classmethod
    def open(cls, text: str, module: str | None = None, pin: str | None = None) -> Pkcs11Keys:
        """Open the token a URI names (PIN from the argument or SSCARD_PKCS11_PIN)."""
        uri = parse_uri(text)
        path = module_path(module, uri)
        _, session, mechanisms = open_session(uri, path, _pin(pin))
        return cls(session, mechanisms, uri, path)

    def _find(self) -> tuple[dict[str, KeyObject], dict[str, object]]:
        keys, halves = {}, {}
        for h in self._session.findObjects([(LL.CKA_CLASS, LL.CKO_SECRET_KEY), (LL.CKA_TOKEN, True)]):
            label, raw_id, extractable = self._session.getAttributeValue(h, [LL.CKA_LABEL, LL.CKA_ID, LL.CKA_EXTRACTABLE])
            label, meta = str(label or "").strip(), _parse_id(raw_id or b"")
            if label.endswith(HALF_SUFFIX):
                halves[label[: -len(HALF_SUFFIX)]] = h
            elif meta and (self.uri.object is None or label == self.uri.object):
                keys[label] = KeyObject(h, meta[0], meta[1], bool(extractable))
        return keys, halves

    def _find_rsa(self) -> dict[str, object]:
        found = self._session.findObjects([(LL.CKA_CLASS, LL.CKO_PRIVATE_KEY), (LL.CKA_KEY_TYPE, LL.CKK_RSA),
                                           (LL.CKA_TOKEN, True)])
        return {str(self._session.getAttributeValue(h, [LL.CKA_LABEL])[0] or "").strip(): h for h in found}

    # ---- start-up checks ---------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self._keys)

    def describe_one(self, name: str) -> KeyObject:
        return self._master(name)

    def holds(self, name: str) -> bool:
        """Whether the token has an object of this name (a master, its K1 companion or an RSA key)."""
        return name in self._keys or name in self._halves or name in self._rsa

    def require_profile(self, profile) -> None:
        """Refuse, before any card, a profile this token cannot serve (see require)."""
        from personalize.virtual import master_names
        algorithms = {profile.algorithm, profile.config.key_algorithm} | \
                     {k.algorithm for _, df in profile.walk() for k in df.keys if k.algorithm}
        self.require(master_names(profile), algorithms, profile.name)
        if _signs_records(profile):
            absent = [n for n in RSA_KEYS if n not in self._rsa]
            if absent:
                raise Pkcs11Error(f"token {self.uri.token} has no RSA key named {absent[0]!r}: profile "
                                  f"{profile.name} signs EMV records (sscard keys import-hsm loads them)")

    def require(self, names: list[str], algorithms: set[Algorithm], profile_name: str) -> None:
        """Refuse, before any card, a profile whose mechanisms or keys the token lacks."""
        if Algorithm.SM4 in algorithms and SM4_MECHANISM not in self._mechanisms:
            raise Pkcs11Error(f"PKCS#11 module {self.module} has no {SM4_MECHANISM} mechanism: "
                              f"profile {profile_name} needs SM4 keys")
        missing = [m for m in TDES_MECHANISMS if m not in self._mechanisms]
        if missing:
            raise Pkcs11Error(f"PKCS#11 module {self.module} has no {missing[0]} mechanism")
        absent = [n for n in names if n not in self._keys]
        if absent:
            raise Pkcs11Error(f"token {self.uri.token} has no key named {absent[0]!r} "
                              f"(sscard keys import-hsm loads a key file into it)")

    def close(self) -> None:
        with self._lock:
            self._forget()
            try:
                self._session.logout()
            except PyKCS11.PyKCS11Error:
                pass
            self._session.closeSession()

    # ---- the keys ------------------------------------------------------------------------------

    def _master(self, name: str) -> KeyObject:
        try:
            return self._keys[name]
        except KeyError:
            raise UnknownKey(f"token {self.uri.token} has no key named {name!r}") from None

    def _derive(self, base, data: bytes, cache_key: tuple | None):
        if cache_key is not None and cache_key in self._derived:
            return self._derived[cache_key]
        mech = PyKCS11.KEY_DERIVATION_STRING_DATA_MechanismBase(data, LL.CKM_DES3_ECB_ENCRYPT_DATA)
        h = self._session.deriveKey(base, _session_template(), mech)
        if cache_key is not None:
            self._derived[cache_key] = h
        return h

    @contextlib.contextmanager
    def _op(self):
        """One provider call: serialized (one session), the derived-key cache trimmed between calls."""
        with self._lock:
            if len(self._derived) >= self.CACHE:
                self._forget()
            yield

    def _forget(self) -> None:
        for h in self._derived.values():
            self._session.destroyObject(h)
        self._derived.clear()

    def _parent(self, ref: KeyRef):
        """The key the card factor diversifies: the master, or the master diversified inside the token
        by the levels above the card (city, province), from the highest level down (psam.md §2)."""
        m = self._master(ref.name)
        handle, path = m.handle, ()
        for factor in reversed(ref.levels[1:]):
            path += (factor,)
            handle = self._derive(handle, _factor_data(m.algorithm, factor), ("level", ref.name, path))
        return m, handle

    def _card_key(self, ref: KeyRef):
        """The card key as a token object: the master, or derived from it level by level with E(K, D ‖ ~D)."""
        m, parent = self._parent(ref)
        if not ref.levels:
            return m.algorithm, m.handle
        return m.algorithm, self._derive(parent, _factor_data(m.algorithm, ref.levels[0]), ("card", ref.name, ref.levels))

    def _half(self, ref: KeyRef):
        """K1 ‖ K1 of the card key (single DES K1 as 3DES), for the retail MAC's CBC part."""
        m, parent = self._parent(ref)
        if m.algorithm is Algorithm.DES:
            return self._card_key(ref)[1]
        if not ref.levels:
            if ref.name not in self._halves:
                raise Pkcs11Error(f"token {self.uri.token}: no {ref.name}{HALF_SUFFIX} object for MACs under "
                                  f"the undiversified {ref.name} (re-import the key)")
            return self._halves[ref.name]
        # E(K, D ‖ D) = K1 ‖ K1: the first half of the diversified key, derived without leaving the token.
        return self._derive(parent, _checked(ref.levels[0]) * 2, ("half", ref.name, ref.levels))

    def _encrypt(self, handle, data: bytes, iv: bytes | None = None) -> bytes:
        mech = PyKCS11.Mechanism(LL.CKM_DES3_CBC, iv) if iv is not None else PyKCS11.Mechanism(LL.CKM_DES3_ECB)
        return bytes(self._session.encrypt(handle, data, mech))

    def _tdes(self, alg: Algorithm) -> Algorithm:
        if alg is Algorithm.SM4:
            raise Pkcs11Error(f"PKCS#11 module {self.module} has no {SM4_MECHANISM} mechanism")
        return alg

    # ---- KeyProvider ---------------------------------------------------------------------------

    def algorithm(self, ref: KeyRef) -> Algorithm:
        return self._master(ref.name).algorithm

    def version(self, name: str) -> int:
        return self._keys[name].version if name in self._keys else 0

    def _rsa_key(self, name: str):
        if name not in self._rsa:
            raise UnknownKey(f"token {self.uri.token} has no RSA key named {name!r}")
        return self._rsa[name]

    def rsa_public(self, name: str) -> tuple[int, int]:
        """(modulus, exponent) of an RSA key: public attributes of the token's private key object."""
        with self._op():
            n, e = self._session.getAttributeValue(self._rsa_key(name), [LL.CKA_MODULUS, LL.CKA_PUBLIC_EXPONENT])
        return int.from_bytes(bytes(n), "big"), int.from_bytes(bytes(e), "big")

    def rsa_private_op(self, name: str, block: bytes) -> bytes:
        """The RSA private operation on a formatted block, inside the token (raw RSA, CKM_RSA_X_509)."""
        with self._op():
            return bytes(self._session.sign(self._rsa_key(name), block, PyKCS11.Mechanism(LL.CKM_RSA_X_509)))

    def audit_mac(self, data: bytes) -> bytes:
        """HMAC-SHA256 under the audit-chain key: the token's cryptogram of a fixed label under the
        first non-extractable master key (by name), so the master never leaves and a forger needs the token."""
        with self._op():
            if self._audit_key is None:
                m = self._master(min(n for n, k in self._keys.items() if not k.extractable))
                self._audit_key = self._encrypt(m.handle, hashlib.sha256(AUDIT_LABEL).digest())
        h = hmac.HMAC(self._audit_key, hashes.SHA256())
        h.update(data)
        return h.finalize()

    def encrypt(self, ref: KeyRef, block: bytes) -> bytes:
        """E(card key, block) inside the token (EXTERNAL AUTHENTICATE cryptograms)."""
        with self._op():
            _, k = self._card_key(ref)
            return self._encrypt(k, block)

    def mac(self, ref: KeyRef, challenge: bytes, data: bytes) -> bytes:
        """The 4-byte line-protection MAC (ISO 9797-1 algorithm 3), every DES pass inside the token."""
        with self._op():
            alg, k = self._card_key(ref)
            self._tdes(alg)
            iv, padded = (challenge + bytes(8))[:8], pad80(data, 8)
            if alg is Algorithm.DES:
                return self._encrypt(k, padded, iv)[-8:][:4]
            head, last = padded[:-8], padded[-8:]
            chain = self._encrypt(self._half(ref), head, iv)[-8:] if head else iv
            return self._encrypt(k, _xor(chain, last))[:4]

    def seal(self, ref: KeyRef, data: bytes) -> bytes:
        """Secured-data envelope of non-key data (a PIN record), encrypted inside the token."""
        with self._op():
            alg, k = self._card_key(ref)
            return self._encrypt(k, envelope(self._tdes(alg), data))

    def session_encrypt(self, ref: KeyRef, process: bytes, block: bytes) -> bytes:
        """E(SK, block), SK derived in the token from the card key with `process` (INTERNAL AUTHENTICATE check)."""
        with self._op():
            alg, k = self._card_key(ref)
            sk = self._derive(k, _factor_data(self._tdes(alg), process), None)
            try:
                return self._encrypt(sk, block)
            finally:
                self._session.destroyObject(sk)

    def seal_key_record(self, under: KeyRef, prefix: bytes, target: KeyRef) -> bytes:
        """Seal prefix ‖ card key under `under`: the token encrypts; the card key value passes through
        the host because SoftHSM2 cannot concatenate data with a key (README: Keys in an HSM)."""
        with self._op():
            alg, k = self._card_key(under)
            value = self._card_key_value(target)
            try:
                return self._encrypt(k, envelope(self._tdes(alg), prefix + value))
            finally:
                del value

    def value_for_plain_load(self, ref: KeyRef) -> bytes:
        """A card key in clear for plain 80 D4: a diversified key as the token's cryptogram E(MK, D ‖ ~D);
        an undiversified one only when imported extractable (the transport key), by wrapping."""
        with self._op():
            return self._card_key_value(ref)

    def _card_key_value(self, ref: KeyRef) -> bytes:
        m, parent = self._parent(ref)
        self._tdes(m.algorithm)
        if ref.levels:
            # The cryptogram of D ‖ ~D under the level above is the card key, byte for byte (derived key
            # objects have their parity bits set by SoftHSM2, so they could not be read out as is; DES
            # ignores parity, so a parity-set level above still encrypts the same).
            out = self._encrypt(parent, _factor_data(m.algorithm, ref.levels[0]))
            return out[:8] if m.algorithm is Algorithm.DES else out
        if not m.extractable:
            raise Pkcs11Error(f"token {self.uri.token}: {ref.name} is non-extractable and undiversified, "
                              f"so it cannot be loaded into a card in clear")
        value = self._unwrap_here(m.handle)
        return value[:8] if m.algorithm is Algorithm.DES else value

    def _unwrap_here(self, handle) -> bytes:
        """An extractable key's value, wrapped by the token under a one-time AES key (RFC 3394) and opened here."""
        wrap_key = os.urandom(16)
        w = self._session.createObject([(LL.CKA_CLASS, LL.CKO_SECRET_KEY), (LL.CKA_KEY_TYPE, LL.CKK_AES),
                                        (LL.CKA_TOKEN, False), (LL.CKA_WRAP, True), (LL.CKA_VALUE, wrap_key)])
        try:
            wrapped = bytes(self._session.wrapKey(w, handle, PyKCS11.Mechanism(LL.CKM_AES_KEY_WRAP)))
        finally:
            self._session.destroyObject(w)
        return aes_key_unwrap(wrap_key, wrapped)


RSA_KEYS = (CA_KEY, ISSUER_KEY)


def _checked(factor: bytes) -> bytes:
    if len(factor) != 8:
        raise ValueError(f"diversification factor must be 8 bytes, not {len(factor)}")
    return factor


def _factor_data(alg: Algorithm, factor: bytes) -> bytes:
    """What the master encrypts to give the card key: D ‖ ~D (3DES) or D ‖ D (single DES as K ‖ K)."""
    factor = _checked(factor)
    return factor * 2 if alg is Algorithm.DES else factor + _inverse(factor)


def _signs_records(profile) -> bool:
    """Whether the profile writes records signed by the issuer RSA key (EMV SDA)."""
    from personalize.compiler import _signed
    return any(_signed(it) for _, df in profile.walk() for f in df.files for it in f.items)


def _rsa_template(name: str, der: bytes) -> list:
    """A sensitive, non-extractable RSA private key object that can only sign (raw RSA)."""
    from cryptography.hazmat.primitives import serialization
    try:
        nums = serialization.load_der_private_key(der, None).private_numbers()
    except ValueError:
        raise Pkcs11Error(f"{name}: not an RSA private key (PKCS#8 DER)") from None

    def b(n: int) -> bytes:
        return n.to_bytes((n.bit_length() + 7) // 8, "big")
    pub = nums.public_numbers
    return [(LL.CKA_CLASS, LL.CKO_PRIVATE_KEY), (LL.CKA_KEY_TYPE, LL.CKK_RSA), (LL.CKA_TOKEN, True),
            (LL.CKA_PRIVATE, True), (LL.CKA_SENSITIVE, True), (LL.CKA_EXTRACTABLE, False),
            (LL.CKA_SIGN, True), (LL.CKA_DECRYPT, False), (LL.CKA_LABEL, name),
            (LL.CKA_MODULUS, b(pub.n)), (LL.CKA_PUBLIC_EXPONENT, b(pub.e)), (LL.CKA_PRIVATE_EXPONENT, b(nums.d)),
            (LL.CKA_PRIME_1, b(nums.p)), (LL.CKA_PRIME_2, b(nums.q)), (LL.CKA_EXPONENT_1, b(nums.dmp1)),
            (LL.CKA_EXPONENT_2, b(nums.dmq1)), (LL.CKA_COEFFICIENT, b(nums.iqmp))]


# ---- import -------------------------------------------------------------------------------------

def import_keys(text: str, masters: dict[str, tuple[Algorithm, bytes, int]], extractable: set[str],
                module: str | None = None, pin: str | None = None, rsa: dict[str, bytes] | None = None) -> list[str]:
    """Create every master key (and RSA key, PKCS#8 DER) in the token as a sensitive object,
    non-extractable unless named in `extractable`; checks everything before creating anything.
    Returns the names imported."""
    rsa = dict(rsa or {})
    uri = parse_uri(text)
    path = module_path(module, uri)
    _, session, mechanisms = open_session(uri, path, _pin(pin))
    created: list = []
    try:
        existing = Pkcs11Keys(session, mechanisms, Uri(uri.token, None, uri.serial), path)
        for name, (alg, value, _) in sorted(masters.items()):
            if alg is Algorithm.SM4 and SM4_MECHANISM not in mechanisms:
                raise Pkcs11Error(f"PKCS#11 module {path} has no {SM4_MECHANISM} mechanism: {name} is an SM4 key")
            if len(value) != alg.key_length:
                raise Pkcs11Error(f"{name}: a {alg.value} key is {alg.key_length} bytes, not {len(value)}")
            if existing.holds(name):
                raise Pkcs11Error(f"token {uri.token} already holds a key named {name!r}")
        for name in sorted(rsa):
            if existing.holds(name):
                raise Pkcs11Error(f"token {uri.token} already holds a key named {name!r}")
        rsa_templates = {name: _rsa_template(name, der) for name, der in rsa.items()}
        for name, (alg, value, version) in sorted(masters.items()):
            created.append(session.createObject(_key_template(name, alg, version, name in extractable)
                                                + [(LL.CKA_VALUE, _as_des2(alg, value))]))
            if alg is Algorithm.TDES:
                created.append(session.createObject(_key_template(name + HALF_SUFFIX, alg, version, False, False)
                                                    + [(LL.CKA_VALUE, value[:8] * 2)]))
        for name, template in sorted(rsa_templates.items()):
            created.append(session.createObject(template))
        created.clear()
        return sorted(masters) + sorted(rsa)
    except PyKCS11.PyKCS11Error as e:
        raise Pkcs11Error(f"token {uri.token}: import failed ({_rv(e)}); nothing was imported") from None
    finally:
        for h in created:                        # a failure part way leaves the token as it was
            session.destroyObject(h)
        session.logout()
        session.closeSession()
