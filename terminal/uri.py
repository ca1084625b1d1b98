"""RFC 7512 PKCS#11 URIs as --keys takes them, and where the module library and the PIN come from.

Kept apart from the PKCS#11 binding so the CLI can tell a URI from a key file without loading it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote

MODULE_ENV = "SSCARD_PKCS11_MODULE"
PIN_ENV = "SSCARD_PKCS11_PIN"
DEFAULT_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
URI_SCHEME = "pkcs11:"


class Pkcs11Error(RuntimeError):
    """The token or its module cannot do what was asked; one line, never a key value or PIN."""


def is_uri(text: str | None) -> bool:
    return bool(text) and text.startswith(URI_SCHEME)


@dataclass(frozen=True)
class Uri:
    """The parts of an RFC 7512 URI this module uses: the token, one object, the module path."""

    token: str
    object: str | None = None
    serial: str | None = None
    module_path: str | None = None


_PATH_ATTRS = {"token", "object", "serial", "type", "id", "manufacturer", "model", "library-manufacturer",
               "library-description", "library-version", "slot-description", "slot-manufacturer", "slot-id"}


def parse_uri(text: str) -> Uri:
    """Read `pkcs11:token=…;object=…[?module-path=…]`; a PIN in the URI is refused."""
    if not is_uri(text):
        raise Pkcs11Error(f"{text!r}: a PKCS#11 URI starts with {URI_SCHEME}")
    body = text[len(URI_SCHEME):]
    path, _, query = body.partition("?")
    attrs: dict[str, str] = {}
    for part in filter(None, path.split(";")):
        name, eq, value = part.partition("=")
        if not eq or name not in _PATH_ATTRS:
            raise Pkcs11Error(f"PKCS#11 URI: unknown path attribute {name!r}")
        attrs[name] = unquote(value)
    for part in filter(None, query.split("&")):
        name, _, value = part.partition("=")
        if name in ("pin-value", "pin-source"):
            raise Pkcs11Error(f"PKCS#11 URI: {name} is refused; the PIN comes from {PIN_ENV} or the prompt")
        if name == "module-path":
            attrs["module-path"] = unquote(value)
    if attrs.get("type", "secret-key") != "secret-key":
        raise Pkcs11Error("PKCS#11 URI: issuer keys are secret keys (type=secret-key)")
    if "token" not in attrs:
        raise Pkcs11Error("PKCS#11 URI: name the token (token=LABEL)")
    return Uri(attrs["token"], attrs.get("object"), attrs.get("serial"), attrs.get("module-path"))


def module_path(option: str | None = None, uri: Uri | None = None) -> str:
    """The PKCS#11 library: the option, else the URI's module-path, else the environment, else SoftHSM2."""
    return option or (uri.module_path if uri else None) or os.environ.get(MODULE_ENV) or DEFAULT_MODULE
