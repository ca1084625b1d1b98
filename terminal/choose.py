"""Choosing what a command works with: the card (an image file or a PC/SC reader) and the security
module (the issuer key file, a PKCS#11 token or a PSAM), each refused with one line when it cannot be used."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from cardos import image as card_image

BAD_INPUT = 2  # exit status for input that cannot be used (a damaged or invalid card image, …)

Ask = Callable[[str], str]  # asks the user for a secret, e.g. a passphrase, by its label


class Refusal(Exception):
    """A command cannot go on: one line for the user and the exit status (2 for bad input)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def bad(message: str) -> Refusal:
    return Refusal(message, BAD_INPUT)


def load_image(path: str, verify: bool = True):
    try:
        return card_image.load(path, verify)
    except card_image.ImageError as e:
        raise bad(str(e)) from None


def token_uri(label: str) -> str:
    return f"pkcs11:token={quote(label, safe='')}"


def pkcs11():
    try:
        from terminal import pkcs11 as module
    except ImportError:
        raise Refusal("PKCS#11 keys need the PyKCS11 package (pip install 'sscard[hsm]')") from None
    return module


def token_pin(label: str, ask: Ask) -> str:
    from terminal.uri import PIN_ENV
    return os.environ.get(PIN_ENV) or ask(f"PIN of token {label}")


def issuer_keys(path: str | None, ask: Ask, module: str | None, required: bool = True, profile=None):
    """The issuer keys a path names: a key file, or a PKCS#11 token URI (checked against the profile)."""
    from personalize.keys import PASSPHRASE_ENV, KeyFileError, load_key_file
    from terminal.uri import is_uri
    if path is None:
        if required:
            raise Refusal("this operation needs the issuer keys: --keys FILE or --keys pkcs11:token=LABEL")
        return None
    if is_uri(path):
        return hsm_keys(path, ask, module, profile)
    passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase is None:
        passphrase = ask(f"passphrase of {path}")
    try:
        return load_key_file(path, passphrase)
    except KeyFileError as e:
        raise bad(str(e)) from None


def hsm_keys(uri: str, ask: Ask, module: str | None, profile=None):
    """Open the token a PKCS#11 URI names; with a profile, refuse at once what it cannot do (SM4, keys)."""
    from terminal.uri import Pkcs11Error, parse_uri
    try:
        provider = pkcs11().Pkcs11Keys.open(uri, module, token_pin(parse_uri(uri).token, ask))
        if profile is not None:
            provider.require_profile(profile)
    except Pkcs11Error as e:
        raise Refusal(str(e)) from None
    return provider


@contextlib.contextmanager
def security_module(keys_path: str | None, psam: str | None, prof, ask: Ask, module: str | None,
                    required: bool = True):
    """The security module the user named: the issuer key file (--keys) or a PSAM (--psam READER|IMAGE).

    With a PSAM the key file is never opened; its errors (a PSAM of other keys, a key it lacks,
    a key it will not export) end the command with one line.
    """
    from terminal.security import Refused, SecurityModuleError
    if keys_path and psam:
        raise bad("give the issuer key file (--keys) or a PSAM (--psam), not both")
    if not psam:
        try:
            yield issuer_keys(keys_path, ask, module, required, prof)
        except (Refused, SecurityModuleError) as e:
            raise Refusal(str(e)) from None
        return
    from personalize import psam as psam_mod
    with psam_transport(psam) as t:
        try:
            yield psam_mod.security_module(t, prof)
        except psam_mod.PsamError as e:
            raise bad(str(e)) from None
        except (Refused, SecurityModuleError) as e:
            raise Refusal(str(e)) from None


@contextlib.contextmanager
def psam_transport(name: str):
    """A PSAM image file (in process, left unchanged) or a PC/SC reader holding one."""
    from reader_bridge.transport import InProcess
    if Path(name).is_file():
        card = load_image(name)
        card.power_on()
        yield InProcess(card, name=name)
        return
    with _reader(name, f"--psam {name}: no such image file, and as a reader: ", "PSAM: ") as t:
        yield t


@contextlib.contextmanager
def _reader(name: str, opening: str = "", using: str = ""):
    from reader_bridge.pcsc import PcscTransport
    from reader_bridge.transport import TransportError
    try:
        t = PcscTransport(name)
    except TransportError as e:
        raise Refusal(f"{opening}{e}") from None
    try:
        yield t
    except TransportError as e:
        raise Refusal(f"{using}{e}") from None
    finally:
        t.close()


def one_card(image_path: str | None, reader: str | None) -> None:
    if bool(image_path) == bool(reader):
        raise Refusal("name the card with exactly one of --image FILE or --reader NAME")


@contextlib.contextmanager
def card_transport(image_path: str | None, reader: str | None, save: bool = True):
    """The transport the user named: a saved card image (saved again afterwards unless save is
    False: then the image file is left as it was) or a PC/SC reader."""
    from reader_bridge.transport import InProcess
    one_card(image_path, reader)
    if not image_path:
        with _reader(reader) as t:
            yield t
        return
    from reader_bridge.persist import ImageSaver
    card = load_image(image_path)
    card.power_on()
    saver = ImageSaver(image_path, card) if save else None
    try:
        yield InProcess(card, name=image_path)
    finally:
        # Written only when the commands changed the card: reading leaves the file as it was.
        if saver is not None:
            saver(card)
            if saver.error:
                raise Refusal(f"the card changed but was not saved: {saver.error}")


def import_key_file(software, label: str, in_clear: set[str], ask: Ask, module: str | None) -> list[str]:
    """A key file's master keys loaded into a PKCS#11 token; those named in_clear stay extractable."""
    from personalize.keys import KeyRef
    from terminal.uri import Pkcs11Error
    masters = {n: (software.algorithm(KeyRef(n)), software.value_for_plain_load(KeyRef(n)), software.version(n))
               for n in software.names()}
    try:
        return pkcs11().import_keys(token_uri(label), masters, in_clear, module, token_pin(label, ask),
                                    software.rsa_keys())
    except Pkcs11Error as e:
        raise Refusal(str(e)) from None
    finally:
        masters.clear()
