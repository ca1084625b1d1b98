"""The `sscard` command: card images, keys, APDUs, reading, card life, serving and personalizing."""

from __future__ import annotations

import contextlib
import json
import os
import string
import sys
import time
from pathlib import Path

import click

from cardos import image as card_image
from cardos import redact
from cardos.access import describe
from cardos.apdu import split_response
from cardos.files import DedicatedFile, ElementaryFile, KeyFile, LinearFixedEF, TransparentEF, VariableRecordEF


BAD_INPUT = 2  # exit status for input that cannot be used (a damaged or invalid card image, …)


def _fail(message: str, exit_code: int = 1) -> None:
    e = click.ClickException(message)
    e.exit_code = exit_code
    raise e


def _bad(message: str) -> None:
    """Input the command refuses (a file, a value): one line, exit status 2."""
    _fail(message, BAD_INPUT)


def _load_image(path: str, verify: bool = True):
    try:
        return card_image.load(path, verify)
    except card_image.ImageError as e:
        _fail(str(e), BAD_INPUT)


def _save_image(card, path: str) -> None:
    try:
        card_image.save(card, path)
    except card_image.SaveError as e:
        _fail(str(e))


def _profile(name: str | None):
    from personalize.profile import ProfileError, load
    try:
        return load(name)
    except ProfileError as e:
        _fail(f"profile: {e}")


def _keys(path: str | None, required: bool = True, profile=None):
    """The issuer keys --keys names: a key file, or a PKCS#11 token URI (checked against the profile)."""
    from personalize.keys import PASSPHRASE_ENV, KeyFileError, load_key_file
    if path is None:
        if required:
            _fail("this operation needs the issuer keys: --keys FILE or --keys pkcs11:token=LABEL")
        return None
    from terminal.uri import is_uri
    if is_uri(path):
        return _hsm_keys(path, profile)
    passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase is None:
        passphrase = click.prompt(f"passphrase of {path}", hide_input=True, err=True)
    try:
        return load_key_file(path, passphrase)
    except KeyFileError as e:
        _bad(str(e))


@contextlib.contextmanager
def _security(keys_path: str | None, psam: str | None, prof, required: bool = True):
    """The security module the user named: the issuer key file (--keys) or a PSAM (--psam READER|IMAGE).

    With a PSAM the key file is never opened; its errors (a PSAM of other keys, a key it lacks,
    a key it will not export) end the command with one line.
    """
    from terminal.security import Refused, SecurityModuleError
    if keys_path and psam:
        _bad("give the issuer key file (--keys) or a PSAM (--psam), not both")
    if not psam:
        try:
            yield _keys(keys_path, required, prof)
        except (Refused, SecurityModuleError) as e:
            _fail(str(e))
        return
    from personalize import psam as psam_mod
    with _psam_transport(psam) as t:
        try:
            yield psam_mod.security_module(t, prof)
        except psam_mod.PsamError as e:
            _bad(str(e))
        except (Refused, SecurityModuleError) as e:
            _fail(str(e))


@contextlib.contextmanager
def _psam_transport(name: str):
    """A PSAM image file (in process, left unchanged) or a PC/SC reader holding one."""
    from reader_bridge.transport import InProcess, TransportError
    if Path(name).is_file():
        card = _load_image(name)
        card.power_on()
        yield InProcess(card, name=name)
        return
    from reader_bridge.pcsc import PcscTransport
    try:
        t = PcscTransport(name)
    except TransportError as e:
        _fail(f"--psam {name}: no such image file, and as a reader: {e}")
    try:
        yield t
    except TransportError as e:
        _fail(f"PSAM: {e}")
    finally:
        t.close()


def _factors(t):
    """The card's diversification factors, read as a terminal reads them (ATR, region of EF05 tag 01)."""
    from terminal import flows
    return flows.read_factors(flows.sender(t), t.atr())


psam_option = click.option("--psam", help="A PSAM instead of --keys: its reader name, or a PSAM image file.")


def _pkcs11_module() -> str | None:
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx else None
    return root.params.get("pkcs11_module") if root else None


def _token_pin(label: str) -> str:
    from terminal.uri import PIN_ENV
    return os.environ.get(PIN_ENV) or click.prompt(f"PIN of token {label}", hide_input=True, err=True)


def _pkcs11():
    try:
        from terminal import pkcs11
    except ImportError:
        _fail("PKCS#11 keys need the PyKCS11 package (pip install 'sscard[hsm]')")
    return pkcs11


def _hsm_keys(uri: str, profile=None):
    """Open the token a PKCS#11 URI names; with a profile, refuse at once what it cannot do (SM4, keys)."""
    from terminal.uri import Pkcs11Error, parse_uri
    Pkcs11Keys = _pkcs11().Pkcs11Keys
    try:
        provider = Pkcs11Keys.open(uri, _pkcs11_module(), _token_pin(parse_uri(uri).token))
        if profile is not None:
            provider.require_profile(profile)
    except Pkcs11Error as e:
        _fail(str(e))
    return provider


@contextlib.contextmanager
def _card_transport(image_path: str | None, reader: str | None):
    """The transport the user named: a saved card image (saved again afterwards) or a PC/SC reader."""
    from reader_bridge.transport import InProcess, TransportError
    if bool(image_path) == bool(reader):
        _fail("name the card with exactly one of --image FILE or --reader NAME")
    if image_path:
        from reader_bridge.persist import ImageSaver
        card = _load_image(image_path)
        card.power_on()
        saver = ImageSaver(image_path, card)
        try:
            yield InProcess(card, name=image_path)
        finally:
            # Written only when the commands changed the card: reading leaves the file as it was.
            saver(card)
            if saver.error:
                _fail(f"the card changed but was not saved: {saver.error}")
        return
    from reader_bridge.pcsc import PcscTransport
    try:
        t = PcscTransport(reader)
    except TransportError as e:
        _fail(str(e))
    try:
        yield t
    except TransportError as e:
        _fail(str(e))
    finally:
        t.close()


card_options = [
    click.option("--image", "image_path", type=click.Path(dir_okay=False), help="A card image file."),
    click.option("--reader", help="A PC/SC reader name (or its start)."),
]


def with_card(f):
    for opt in reversed(card_options):
        f = opt(f)
    return f


def _parse_apdus(texts: tuple[str, ...]) -> list[bytes]:
    """Hex APDUs (spaces and colons allowed); an error names the APDU and the position, never its
    content, which may hold a PIN or a key."""
    out = []
    for i, text in enumerate(texts, 1):
        bad = next((j for j, ch in enumerate(text, 1) if not (ch.isspace() or ch == ":" or ch in string.hexdigits)),
                   None)
        if bad is not None:
            _bad(f"APDU {i}: not hex at character {bad}")
        clean = "".join(text.split()).replace(":", "")
        if len(clean) % 2:
            _bad(f"APDU {i}: odd number of hex digits")
        raw = bytes.fromhex(clean)
        if len(raw) < 4:
            _bad(f"APDU {i}: {len(raw)} bytes, a command has at least 4")
        out.append(raw)
    return out


def _exchanges(log, as_json: bool) -> None:
    rows = [{"step": ex.note, "command": redact.command(ex.apdu), "sw": f"{ex.sw:04X}"} for ex in log]
    if as_json:
        click.echo(json.dumps(rows, indent=1, ensure_ascii=False))
    else:
        for r in rows:
            click.echo(f"{r['sw']}  {r['step']}")


@click.group()
@click.version_option(package_name="sscard")
@click.option("--pkcs11-module", type=click.Path(dir_okay=False),
              help="PKCS#11 library for --keys pkcs11:… (default: $SSCARD_PKCS11_MODULE, else SoftHSM2's).")
def main(pkcs11_module: str | None) -> None:
    """sscard: simulate, personalize and test Chinese social security cards."""


# ---- images -----------------------------------------------------------------------------------

@main.group()
def image() -> None:
    """Create and inspect card images (JSON files holding a virtual card)."""


@image.command("new")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--profile", default=None, help="Card profile: default, sm4-3.00, ss-1.00 or a YAML file.")
@click.option("--keys", "keys_path", type=click.Path(dir_okay=False),
              help="Issuer key file; without it the card gets the published demo keys.")
@click.option("--blank", is_flag=True, help="A factory-blank chip of the profile's COS (MF, factory key 00 = FF…FF).")
@click.option("--activate", is_flag=True, help="Also activate the card (as the bank counter does).")
@click.option("--serial", help="The chip's 8-byte serial (hex), the ATR's last bytes; default: derived from PATH.")
@click.option("--fault", "faults", multiple=True, help="A deliberate defect (QA): pin-counter-stuck, read-rights-ignored.")
@click.option("--force", is_flag=True, help="Overwrite an existing image.")
@click.option("--psam", "make_psam", is_flag=True, help="A PSAM (the terminal's security module) instead of a card: "
              "the profile's key table, masters from --keys.")
@click.option("--region", help="--psam: the 6-digit region code of its terminal number (e.g. 330300).")
def image_new(path: str, profile: str | None, keys_path: str | None, blank: bool, activate: bool,
              serial: str | None, faults: tuple[str, ...], force: bool, make_psam: bool, region: str | None) -> None:
    """Write a new card image: the profile's card personalized for a sample cardholder, or a PSAM."""
    from personalize import cardholders, lifecycle, virtual
    from personalize.script import ScriptError
    from reader_bridge.transport import InProcess

    if Path(path).exists() and not force:
        _fail(f"{path} exists; pass --force to overwrite it")
    prof = _profile(profile)
    if make_psam:
        return _new_psam(path, prof, keys_path, region, serial)
    holder = cardholders.sample()
    if serial is not None:
        try:
            chip = bytes.fromhex(serial)
        except ValueError:
            chip = b""
        if len(chip) != 8:
            _fail(f"--serial {serial!r}: 8 bytes of hex are needed")
    else:
        chip = virtual.chip_serial(holder["card_number"] if not blank else str(Path(path).resolve()))
    if blank:
        card = virtual.blank(prof, chip)
        _save_image(card, path)
        click.echo(f"{path}: blank {prof.name} chip, {card.fs.used()} of {card.config.capacity} bytes used")
        return
    keys = _keys(keys_path, required=False, profile=prof) or virtual.demo_issuer_keys(prof)
    try:
        card = virtual.make(prof, holder, keys, chip)
        if activate:
            lifecycle.perform(InProcess(card), lifecycle.life_script("activate", prof, virtual.factor(card.atr)), keys)
    except ScriptError as e:
        _fail(f"making the card: {e}")
    if faults:
        from dataclasses import replace as _replace
        from cardos.card import Card
        try:
            card = Card(card.store, _replace(card.config, faults=frozenset(faults)))
        except ValueError as e:
            _fail(f"--fault: {e}")
    _save_image(card, path)
    note = "" if keys_path else " (published demo keys: never for real cards)"
    click.echo(f"{path}: {prof.name} card of {holder['name']} {holder['card_number']}, "
               f"{card.fs.used()} of {card.config.capacity} bytes used{note}")


def _new_psam(path: str, prof, keys_path: str | None, region: str | None, serial: str | None) -> None:
    from personalize import psam, virtual
    from personalize.script import ScriptError
    if not region:
        _bad("--psam needs --region (the 6-digit region code of its terminal number)")
    try:
        chip = bytes.fromhex(serial) if serial else psam.psam_serial(str(Path(path).resolve()))
    except ValueError:
        chip = b""
    if len(chip) != 8:
        _bad(f"--serial {serial!r}: 8 bytes of hex are needed")
    keys = _keys(keys_path, required=False) or virtual.demo_issuer_keys(prof)
    try:
        card = psam.make(prof, keys, region, chip)
    except psam.PsamError as e:
        _bad(str(e))
    except ScriptError as e:
        _fail(f"making the PSAM: {e}")
    card_image.save(card, path)
    note = "" if keys_path else " (published demo keys: never for real terminals)"
    click.echo(f"{path}: PSAM for {prof.name}, region {region}, {len(prof.psam.keys)} keys{note}")


@image.command("info")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def image_info(path: str, as_json: bool) -> None:
    """Show capacity used and free, and the file tree, of a card image."""
    card = _load_image(path)
    card.power_on()
    files = [_describe(p, spec, card) for p, spec in card.fs.walk()]
    used, cap = card.fs.used(), card.config.capacity
    if as_json:
        click.echo(json.dumps({"capacity": cap, "used": used, "free": cap - used, "atr": card.config.atr.hex().upper(),
                               "applets": list(card.config.applets), "files": files}, indent=1))
        return
    click.echo(f"ATR {card.config.atr.hex().upper()}   applets: {', '.join(card.config.applets) or 'none'}")
    click.echo(f"EEPROM {used} of {cap} bytes used, {cap - used} free")
    for f in files:
        indent = "  " * (f["path"].count("/"))
        click.echo(f"{indent}{f['fid']} {f['kind']}: {f['detail']}")


def _df_name(name: bytes) -> str:
    """A DF name as a person reads it: 'text' when it is printable GBK text, else hex (an AID)."""
    if not name:
        return ""
    try:
        text = name.decode("gbk")
    except UnicodeDecodeError:
        text = ""
    return repr(text) if text.isprintable() and text.strip() == text and text else name.hex().upper()


def _describe(path, spec, card) -> dict:
    fid = f"{spec.fid:04X}"
    if isinstance(spec, DedicatedFile):
        name = _df_name(spec.name)
        detail = (f"name {name}, " if name else "") + \
            f"{card.fs.used_in(path)} of {card.fs.space(path)} bytes used, create {describe(spec.create_right)}"
    elif isinstance(spec, KeyFile):
        keys = card.fs.keys(path[:-1])
        detail = f"{len(keys)} keys/PINs, {card.fs.key_space_left(path[:-1])} of {spec.size} bytes free"
    elif isinstance(spec, TransparentEF):
        detail = f"SFI {spec.sfi:02X}, {spec.size} bytes, read {describe(spec.read_right)}, write {describe(spec.write_right)}"
    elif isinstance(spec, (LinearFixedEF, VariableRecordEF)):
        n = len(card.fs.body(path))
        shape = f"{spec.count}×{spec.rec_len}" if isinstance(spec, LinearFixedEF) else f"{spec.size} bytes"
        detail = f"SFI {spec.sfi:02X}, {n} records ({shape}), read {describe(spec.read_right)}, write {describe(spec.write_right)}"
    else:
        detail = ""
    if isinstance(spec, ElementaryFile) and (spec.mac or spec.enc):
        detail += ", writes under " + ("MAC + encryption" if spec.enc else "MAC")
    return {"path": "/".join(f"{p:04X}" for p in path), "fid": fid, "kind": spec.KIND, "detail": detail}


@image.command("repair")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--accept", is_flag=True, help="Accept the contents as they now are and write a new digest.")
def image_repair(path: str, accept: bool) -> None:
    """After a deliberate hand edit of a card image: check it as loading does, and with --accept
    give it a digest that matches its new contents. Contents that fail a check are never accepted."""
    try:
        doc = card_image.read_document(path)
        try:
            card = card_image.from_document(doc, path)
            if doc.get("schema") == card_image.SCHEMA:
                click.echo(f"{path}: its digest matches its contents; nothing to repair")
                return
        except card_image.DamagedImage:
            card = card_image.from_document(doc, path, verify=False)
    except card_image.ImageError as e:
        _fail(str(e), BAD_INPUT)
    if not accept:
        _fail(f"{path}: the contents are valid but carry no matching digest; "
              "if they are as you meant them, run again with --accept", BAD_INPUT)
    _save_image(card, path)
    click.echo(f"{path}: contents accepted, new digest written")


# ---- keys ---------------------------------------------------------------------------------------

@main.group()
def keys() -> None:
    """Issuer key files (encrypted; the passphrase comes from SSCARD_KEYS_PASSPHRASE or a prompt)."""


@keys.command("new")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--profile", default=None, help="The profile whose master keys the file must hold.")
@click.option("--demo", is_flag=True, help="The published demo keys instead of random ones (tests and demos only).")
@click.option("--force", is_flag=True, help="Overwrite an existing key file.")
def keys_new(path: str, profile: str | None, demo: bool, force: bool) -> None:
    """Write a key file with every master key the profile names (random, or the demo keys)."""
    from personalize.compile import FACTORY_KEY
    from personalize.demo import FACTORY_KEY_VALUE
    from personalize.keys import PASSPHRASE_ENV, KeyFileError, passphrase_problem, save_key_file
    from personalize.virtual import demo_issuer_keys, master_names

    if Path(path).exists() and not force:
        _fail(f"{path} exists; pass --force to overwrite it")
    prof = _profile(profile)
    passphrase = os.environ.get(PASSPHRASE_ENV) or click.prompt("new passphrase", hide_input=True,
                                                               confirmation_prompt=True, err=True)
    if not demo and (why := passphrase_problem(passphrase)):
        _bad(f"{path}: {why} (only --demo key files may have a weak one)")
    if demo:
        provider = demo_issuer_keys(prof)
        masters = {n: (provider.algorithm(_ref(n)), provider.value_for_plain_load(_ref(n)), 1) for n in provider.names()}
        rsa = provider.rsa_keys()
    else:
        from personalize import emv_keys
        masters = {n: (prof.algorithm, FACTORY_KEY_VALUE if n == FACTORY_KEY else os.urandom(16), 1)
                   for n in master_names(prof)}
        rsa = emv_keys.generate()
    try:
        save_key_file(path, masters, passphrase, weak_ok=demo, rsa=rsa)
    except KeyFileError as e:
        _bad(str(e))
    click.echo(f"{path}: {len(masters)} master keys and the EMV CA and issuer RSA keys for {prof.name}"
               f"{' (demo keys)' if demo else ''}; the CA public key is published in the file")


def _ref(name):
    from personalize.keys import KeyRef
    return KeyRef(name)


@keys.command("list")
@click.argument("path", type=click.Path(dir_okay=False), required=False)
@click.option("--token", help="List the issuer keys in this PKCS#11 token instead (by label).")
def keys_list(path: str | None, token: str | None) -> None:
    """The names, algorithms and versions in a key file or an HSM token (never the values)."""
    if bool(path) == bool(token):
        _fail("name a key file or --token LABEL, not both")
    provider = _keys(path or _token_uri(token))
    for n in provider.names():
        extra = ""
        if token:
            extra = "  extractable (loaded in clear by design)" if provider.describe_one(n).extractable \
                else "  non-extractable"
        click.echo(f"{n:14} {provider.algorithm(_ref(n)).value:5} version {provider.version(n)}{extra}")


def _token_uri(label: str) -> str:
    from urllib.parse import quote
    return f"pkcs11:token={quote(label, safe='')}"


@keys.command("import-hsm")
@click.argument("path", type=click.Path(dir_okay=False, exists=True))
@click.option("--token", required=True, help="Label of the PKCS#11 token to load the keys into.")
def keys_import_hsm(path: str, token: str) -> None:
    """Load a key file's master keys into an HSM token as sensitive, non-extractable objects.

    The transport key is the one exception: initialization loads it into each fresh DF in clear
    (plain 80 D4), so it is imported extractable; every other master key never leaves the token.
    """
    from personalize.compile import TRANSPORT_KEY
    from terminal.uri import Pkcs11Error
    software = _keys(path)
    masters = {n: (software.algorithm(_ref(n)), software.value_for_plain_load(_ref(n)), software.version(n))
               for n in software.names()}
    try:
        names = _pkcs11().import_keys(_token_uri(token), masters, {TRANSPORT_KEY}, _pkcs11_module(), _token_pin(token),
                                      software.rsa_keys())
    except Pkcs11Error as e:
        _fail(str(e))
    finally:
        masters.clear()
    click.echo(f"token {token}: {len(names)} master keys imported "
               f"({TRANSPORT_KEY} extractable for plain loading, the rest non-extractable)")


# ---- talking to a card ---------------------------------------------------------------------------

@main.command()
@click.argument("apdus", nargs=-1, required=True)
@with_card
@click.option("--raw", is_flag=True, help="Send each APDU once and print the card's own answer, 61xx and 6Cxx "
                                           "included (default: follow them as a terminal does).")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of exchanges (secrets redacted).")
def apdu(apdus: tuple[str, ...], image_path: str | None, reader: str | None, raw: bool, as_json: bool) -> None:
    """Send hex APDUs to a card and print `response-hex SW` for each.

    By default 61xx is fetched with GET RESPONSE and 6Cxx resent with that Le, as a terminal does,
    and the whole answer is printed; --raw shows what the card itself answered to each APDU.
    """
    commands = _parse_apdus(apdus)
    rows = []
    redactor = redact.Redactor()
    with _card_transport(image_path, reader) as t:
        send = t.transmit_raw if raw else t.transmit
        for cmd in commands:
            resp = send(cmd)
            _, sw = split_response(resp)
            rows.append({"command": redact.command(cmd), "response": redactor.response(cmd, resp)[:-4],
                         "sw": f"{sw:04X}"})
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        for r in rows:
            click.echo(f"{r['response']} {r['sw']}".strip())


def _amount(ctx, param, text: str) -> int:
    """An amount in yuan with at most two decimals, as minor units."""
    import decimal
    try:
        value = decimal.Decimal(text)
    except decimal.InvalidOperation:
        raise click.BadParameter(f"{text!r} is not an amount like 12.34") from None
    minor = value * 100
    if value <= 0 or minor != minor.to_integral_value() or minor >= 10**12:
        raise click.BadParameter(f"{text!r}: a positive amount with at most two decimals, below 10 000 000 000")
    return int(minor)


@main.command()
@with_card
@click.option("--amount", required=True, callback=_amount, help="Purchase amount in yuan, e.g. 12.34.")
@click.option("--pin", "ask_pin", is_flag=True, help="Prompt for the bank PIN (offline PIN when the card asks).")
@click.option("--keys", "keys_path", type=click.Path(dir_okay=False),
              help="Issuer key file: the terminal goes online to an issuer host built on it.")
@click.option("--floor-limit", default="0", callback=lambda c, p, v: 0 if v == "0" else _amount(c, p, v),
              show_default=True, help="Terminal floor limit in yuan; above it the terminal asks to go online.")
@click.option("--ca", "ca_path", type=click.Path(dir_okay=False, exists=True),
              help="A key file whose published CA public key the terminal trusts for SDA (default: --keys).")
@click.option("--json", "as_json", is_flag=True)
def pay(image_path, reader, amount, ask_pin, keys_path, floor_limit, ca_path, as_json) -> None:
    """A minimal EMV terminal: one purchase with the card's debit application, every step printed."""
    from personalize.keys import ca_public_key
    from terminal.emv import KeyFileIssuer, Terminal
    provider = _keys(keys_path, required=False)
    ca_keys = {}
    for path in filter(None, (ca_path or keys_path,)):
        try:
            published = ca_public_key(path)
        except (OSError, ValueError, KeyError):
            _fail(f"{path}: no readable CA public key in it")
        if published:
            rid, index, n, e = published
            ca_keys[(rid, index)] = (n, e)
    pin = click.prompt("bank PIN", hide_input=True, err=True) if ask_pin else None
    with _card_transport(image_path, reader) as t:
        result = Terminal(t.transmit, amount, pin=pin, floor_limit=floor_limit, ca_keys=ca_keys,
                          issuer=KeyFileIssuer(provider) if provider else None).run()
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=1))
    else:
        for step in result.steps:
            click.echo(step.line())
        click.echo(f"{amount // 100}.{amount % 100:02d}: {result.outcome}")
    if result.outcome.startswith("terminated"):
        sys.exit(1)


@main.command()
def readers() -> None:
    """List PC/SC readers and whether a card is in each (with its ATR)."""
    from reader_bridge.pcsc import list_readers
    from reader_bridge.transport import TransportError
    try:
        found = list_readers()
    except TransportError as e:
        _fail(str(e))
    if not found:
        click.echo("no readers")
    for r in found:
        click.echo(f"{r.name}: " + (f"card, ATR {r.atr.hex().upper()}" if r.present else "no card"))


@main.command()
@with_card
@click.option("--profile", default=None, help="The card's profile (default: default).")
@click.option("--keys", "keys_path", type=click.Path(dir_okay=False), help="Issuer key file (3.00 cards need it).")
@psam_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def read(image_path, reader, profile, keys_path, psam, as_json) -> None:
    """Read and decode the card and holder data, as a terminal does (3.00: with --keys or --psam)."""
    from personalize.readout import ReadError, read_card
    prof = _profile(profile)
    with _security(keys_path, psam, prof, required=False) as provider, _card_transport(image_path, reader) as t:
        try:
            r = read_card(t, prof, provider)
        except ReadError as e:
            _fail(str(e))
    if as_json:
        click.echo(json.dumps(r.as_dict(), indent=1, ensure_ascii=False))
        return
    labels = {it.field: it.name for _, df in prof.walk() for f in df.files for it in _all_items(f.items) if it.field}
    labels["spec_version"] = "specification version"
    click.echo(f"ATR {r.atr}   generation {r.generation}" + ("   (authenticated)" if r.authenticated else ""))
    if r.full_name:
        click.echo(f"{'full name':32} {r.full_name}")
    for k, v in r.items.items():
        if k not in ("name", "name_extension"):
            click.echo(f"{labels.get(k, k):32} {v}")
    for role, state in r.life.items():
        click.echo(f"{role + ' life state':32} {state}")
    if r.refused:
        click.echo(f"refused: {'; '.join(r.refused)}")


def _all_items(items):
    for it in items:
        yield it
        yield from _all_items(it.children)


@main.group()
def card() -> None:
    """Card-life operations at the counter, sent as real commands (issuer keys from --keys)."""


def _life_command(op: str, help_text: str):
    @card.command(op, help=help_text)
    @with_card
    @click.option("--keys", "keys_path", type=click.Path(dir_okay=False), help="Issuer key file.")
    @psam_option
    @click.option("--profile", default=None, help="The card's profile (default: default).")
    @click.option("--account", type=click.Choice(["ss", "bank", "both"]), default="both", show_default=True)
    @click.option("--reason", default="", help="Why (kept on the card, in the life file).")
    @click.option("--json", "as_json", is_flag=True)
    def command(image_path, reader, keys_path, psam, profile, account, reason, as_json):
        from personalize import lifecycle
        from personalize.script import ScriptError
        prof = _profile(profile)
        if not (keys_path or psam):
            _bad("this operation needs the issuer key file (--keys FILE) or a PSAM (--psam READER|IMAGE)")
        with _security(keys_path, psam, prof) as provider, _card_transport(image_path, reader) as t:
            try:
                script = lifecycle.life_script(op, prof, _factors(t), account, reason)
                log = lifecycle.perform(t, script, provider)
            except (ScriptError, lifecycle.LifeError) as e:
                _fail(f"{op}: {e}")
        _exchanges(log, as_json)
    return command


for _op, _help in (("activate", "Activate the applications (before it, PIN operations answer 6985)."),
                   ("report-loss", "Report the card lost: both applications blocked temporarily."),
                   ("unreport", "Withdraw a loss report: unblock the applications."),
                   ("block", "Block applications temporarily."),
                   ("unblock", "Unblock applications."),
                   ("replace", "Replacement: record why and block the old card permanently (9303)."),
                   ("cancel", "Cancel the card: record why and block it permanently (9303).")):
    _life_command(_op, _help)


@card.command("pin")
@click.argument("op", type=click.Choice(["change", "reset", "reload", "unblock"]))
@with_card
@click.option("--keys", "keys_path", type=click.Path(dir_okay=False), help="Issuer key file (reset, unblock).")
@psam_option
@click.option("--profile", default=None)
@click.option("--account", type=click.Choice(["ss", "bank"]), default="ss", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def pin(op, image_path, reader, keys_path, psam, profile, account, as_json):
    """PIN change (old and new PIN prompted), reset/reload to a new PIN or unblock (issuer key or PSAM)."""
    from personalize import lifecycle
    from personalize.script import ScriptError
    prof = _profile(profile)
    op = "reset" if op == "reload" else op
    if op != "change" and not (keys_path or psam):
        _bad("PIN reset and unblock need the issuer key file (--keys FILE) or a PSAM (--psam READER|IMAGE)")
    old = click.prompt("current PIN", hide_input=True, err=True) if op == "change" else ""
    new = click.prompt("new PIN", hide_input=True, confirmation_prompt=True, err=True) if op != "unblock" else ""
    if new and (not new.isdigit() or not 4 <= len(new) <= 12):
        _bad("a PIN is 4 to 12 digits")
    with _security(keys_path, psam, prof, required=False) as provider, _card_transport(image_path, reader) as t:
        try:
            log = lifecycle.perform(t, lifecycle.pin_script(op, prof, _factors(t), provider, account, old, new),
                                    provider)
        except (ScriptError, lifecycle.LifeError) as e:
            _fail(f"PIN {op}: {e}")
    _exchanges(log, as_json)


@card.command("write")
@with_card
@click.option("--keys", "keys_path", type=click.Path(dir_okay=False), help="Issuer key file.")
@psam_option
@click.option("--profile", default=None)
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE", required=True,
              help="A data item to write, by field name (person_id, first_region, …); repeat.")
@click.option("--json", "as_json", is_flag=True)
def card_write(image_path, reader, keys_path, psam, profile, sets, as_json):
    """Kiosk writes after issuance: EF0D after key 0D, EF05/EF06 after key 04, each record read back."""
    from personalize import kiosk
    prof = _profile(profile)
    values = {}
    for text in sets:
        name, sep, value = text.partition("=")
        if not sep or not name:
            _bad(f"--set {text!r}: FIELD=VALUE is needed")
        values[name.strip()] = value.strip()
    try:
        kiosk.plan(prof, values)
    except kiosk.KioskError as e:
        _bad(str(e))
    if not (keys_path or psam):
        _bad("writing needs the issuer key file (--keys FILE) or a PSAM (--psam READER|IMAGE)")
    with _security(keys_path, psam, prof) as provider, _card_transport(image_path, reader) as t:
        try:
            done = kiosk.write(t, prof, provider, values)
        except kiosk.KioskError as e:
            _fail(str(e))
    click.echo(json.dumps(done, indent=1) if as_json else "\n".join(done))


def _fen(text: str, what: str) -> int:
    from decimal import Decimal, InvalidOperation
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = Decimal(-1)
    if value < 0 or value != value.quantize(Decimal("0.01")):
        _bad(f"--{what} {text!r}: an amount in yuan with at most two decimals")
    return int(value * 100)


@card.command("settle")
@with_card
@click.option("--keys", "keys_path", type=click.Path(dir_okay=False), help="Issuer key file (a log written under a key).")
@psam_option
@click.option("--profile", default=None)
@click.option("--kind", type=click.Choice(["1", "2", "3"]), default="1", show_default=True,
              help="1 outpatient, 2 inpatient, 3 pharmacy.")
@click.option("--institution", required=True, help="The designated institution's code (up to 12 digits).")
@click.option("--total", required=True, help="Total amount in yuan.")
@click.option("--fund", required=True, help="Paid by the medical-insurance fund, in yuan.")
def card_settle(image_path, reader, keys_path, psam, profile, kind, institution, total, fund):
    """A hospital terminal's medical settlement: one record appended to DF04's transaction log."""
    import datetime as dt
    from personalize import settlement
    prof = _profile(profile)
    s = settlement.Settlement(kind, institution, _fen(total, "total"), _fen(fund, "fund"), dt.datetime.now())
    try:
        s.record(0)
    except settlement.SettlementError as e:
        _bad(str(e))
    pin = click.prompt("cardholder PIN", hide_input=True, err=True)
    with _security(keys_path, psam, prof, required=False) as provider, _card_transport(image_path, reader) as t:
        try:
            n = settlement.append(t, prof, s, pin, provider)
        except settlement.SettlementError as e:
            _fail(str(e))
    click.echo(f"settlement {n} appended to the medical transaction log and read back")


# ---- personalization ----------------------------------------------------------------------------

@main.group()
def perso() -> None:
    """Initialize blank cards and personalize cardholders' cards, one or in batches."""


@perso.command("init")
@with_card
@click.option("--profile", default=None, help="Card profile (default: default).")
@click.option("--keys", "keys_path", type=click.Path(dir_okay=False), required=True, help="Issuer key file.")
@click.option("--no-erase", is_flag=True, help="Do not erase the card first.")
@click.option("--json", "as_json", is_flag=True)
def perso_init(image_path, reader, profile, keys_path, no_erase, as_json):
    """Initialization: lay the profile's files, key files and transport keys on a blank card."""
    from personalize.compile import init_script
    from personalize.script import ScriptError, run
    prof = _profile(profile)
    provider = _keys(keys_path, profile=prof)
    with _card_transport(image_path, reader) as t:
        try:
            log = run(t.transmit, init_script(prof, erase=not no_erase), provider)
        except ScriptError as e:
            _fail(f"initialization: {e}")
    if as_json:
        _exchanges(log, True)
    else:
        click.echo(f"initialized for {prof.name}: {len(log)} commands, all 9000")


def _data_options(f):
    """The options that say how to read and judge a cardholder file."""
    f = click.option("--issue-margin", default=31, show_default=True, type=click.IntRange(0, 3660),
                     help="Days an issue date may lie after today.")(f)
    return click.option("--encoding", type=click.Choice(["utf-8", "gbk", "gb18030"], case_sensitive=False),
                        default="utf-8", show_default=True, help="The cardholder file's encoding.")(f)


def _read_holders(csv_path: str, encoding: str):
    from personalize import cardholders
    try:
        return cardholders.read_csv(csv_path, encoding)
    except cardholders.CsvError as e:
        _bad(str(e))


@perso.command("check")
@click.option("--profile", default=None)
@click.option("--cardholders", "csv_path", type=click.Path(dir_okay=False, exists=True), required=True)
@click.option("--rejects", type=click.Path(dir_okay=False), help="Write the reject file here.")
@_data_options
@click.option("--json", "as_json", is_flag=True)
def perso_check(profile, csv_path, rejects, encoding, issue_margin, as_json):
    """Data preparation only: check every record of a cardholder file and list what is wrong."""
    from personalize import cardholders
    prof = _profile(profile)
    try:
        records, problems = cardholders.check_file_all(csv_path, prof, encoding,
                                                       rules=cardholders.Rules(issue_margin_days=issue_margin))
    except cardholders.CsvError as e:
        _bad(str(e))
    if rejects:
        cardholders.write_rejects(rejects, problems)
    if as_json:
        click.echo(json.dumps({"records": records, "invalid": len(problems),
                               "problems": [{"line": line, "field": f, "reason": why}
                                            for line in sorted(problems) for f, why in problems[line]]},
                              indent=1, ensure_ascii=False))
    else:
        for line in sorted(problems):
            for f, why in problems[line]:
                click.echo(f"line {line}: {f}: {why}")
        click.echo(f"{records} records, {records - len(problems)} valid, {len(problems)} invalid")
    if problems:
        sys.exit(1)


@perso.command("run")
@click.option("--profile", default=None)
@click.option("--cardholders", "csv_path", type=click.Path(dir_okay=False, exists=True), required=True)
@click.option("--keys", "keys_path", type=click.Path(dir_okay=False), required=True)
@click.option("--reader", "readers", multiple=True, help="A PC/SC reader; repeat for one worker per reader.")
@click.option("--out-dir", type=click.Path(file_okay=False), help="Make virtual cards into card images here.")
@click.option("--journal", help="SQLite journal file (default: perso-journal.sqlite in the output folder, or here), "
              "or a postgresql://… URL for several stations on one batch.")
@click.option("--audit", "audit_path", type=click.Path(dir_okay=False),
              help="This station's audit log (default: perso-audit.jsonl beside a SQLite journal, else "
                   "perso-audit-STATION.jsonl in the output folder or here).")
@click.option("--station", default=None, help="This station's id in the journal (default: the host name).")
@click.option("--lease", default=30.0, show_default=True, help="Seconds a claimed card stays this station's "
              "without renewal; a dead station's cards go to another after that.")
@click.option("--resume", is_flag=True, help="Finish a batch the journal has already started.")
@click.option("--strict", is_flag=True, help="Refuse the whole batch when any record is invalid.")
@click.option("--init", "do_init", is_flag=True, help="Readers: initialize each blank card first.")
@click.option("--max-failures", default=3, show_default=True, help="Consecutive failures that stop the batch.")
@click.option("--card-timeout", default=60.0, show_default=True, help="Seconds to wait for each card in a reader.")
@_data_options
@click.option("--json", "as_json", is_flag=True, help="The summary as JSON (progress goes to stderr).")
def perso_run(profile, csv_path, keys_path, readers, out_dir, journal, audit_path, station, lease, resume, strict,
              do_init, max_failures, card_timeout, encoding, issue_margin, as_json):
    """Personalize a batch: each valid cardholder of the file onto a card, journaled and audited."""
    from personalize import batch, cardholders
    prof = _profile(profile)
    provider = _keys(keys_path, profile=prof)
    if bool(out_dir) == bool(readers):
        _fail("give --out-dir DIR (card images) or --reader NAME (PC/SC), not both")
    base = Path(out_dir) if out_dir else Path(".")
    if out_dir:
        base.mkdir(parents=True, exist_ok=True)
    from personalize.journal import is_database_url
    journal = journal or str(base / "perso-journal.sqlite")
    station = station or batch.default_station()
    if not audit_path:
        audit_path = (str(base / f"perso-audit-{station}.jsonl") if is_database_url(journal)
                      else str(Path(journal).with_name("perso-audit.jsonl")))
    opts = batch.Options(prof, provider, csv_path, journal, audit_path, out_dir, tuple(readers), resume, strict,
                         do_init, max_failures, card_timeout=card_timeout, station=station, lease=lease,
                         encoding=encoding, rules=cardholders.Rules(issue_margin_days=issue_margin))
    started, seen = time.monotonic(), [0]

    def progress(card_number, n):
        # The file is never counted up front (a million rows would be read twice): cards and rate only.
        seen[0] += n
        elapsed = time.monotonic() - started
        click.echo(f"\rpersonalizing: {seen[0]} cards, {seen[0] / elapsed:.1f} cards/s  {card_number}   ",
                   nl=False, err=True)
    try:
        result = batch.run_batch(opts, progress)
    except cardholders.CsvError as e:
        _bad(str(e))
    except batch.BatchError as e:
        _fail(str(e))
    if seen[0]:
        click.echo("", err=True)
    summary = result.as_dict()
    if as_json:
        click.echo(json.dumps(summary, indent=1, ensure_ascii=False))
    else:
        click.echo(f"batch {result.batch}: {result.done} done, {result.rejected} rejected, "
                   f"{result.quarantined} quarantined, {result.pending} pending "
                   f"({result.made_now} made now in {result.seconds:.1f} s)")
        if result.rejects_file:
            click.echo(f"rejects: {result.rejects_file}")
        for q in result.quarantine:
            click.echo(f"quarantined line {q['line']} {q['card_number']}: {q['reason']}")
    if result.stopped:
        _fail(result.stopped)


@perso.command("status")
@click.option("--journal", required=True, help="SQLite journal file or postgresql://… URL.")
@click.option("--batch", "batch_id", help="One batch (default: every batch in the journal).")
@click.option("--json", "as_json", is_flag=True)
def perso_status(journal, batch_id, as_json):
    """Where batches stand, per station and overall: done, in progress, rejected, quarantined, rate, time left."""
    from personalize import batch
    from personalize.journal import JournalError, open_journal
    try:
        j = open_journal(journal)
    except JournalError as e:
        _fail(str(e))
    try:
        ids = [batch_id] if batch_id else j.batches()
        reports = [batch.status(j, b) for b in ids]
    except batch.BatchError as e:
        _fail(str(e))
    finally:
        j.close()
    if as_json:
        click.echo(json.dumps(reports if not batch_id else reports[0], indent=1, ensure_ascii=False))
        return
    for r in reports:
        left = "finished" if r["finished"] else (
            f"about {_duration(r['seconds_left'])} left" if r["seconds_left"] is not None else "time left unknown")
        rate = f"{r['rate']:.1f} cards/s" if r["rate"] else "no rate yet"
        click.echo(f"batch {r['batch']} ({r['profile']}, {r['source']}): {r['done']} done, {r['in_progress']} in "
                   f"progress, {r['pending']} pending, {r['rejected']} rejected, {r['quarantined']} quarantined; "
                   f"{rate}, {left}")
        for s in r["stations"]:
            age = f" (oldest claim {s['oldest_claim_age']:.0f} s)" if s["oldest_claim_age"] is not None else ""
            srate = f"{s['rate']:.1f} cards/s" if s["rate"] else "-"
            click.echo(f"  {s['station']}: {s['done']} done, {s['in_progress']} in progress{age}, "
                       f"{s['quarantined']} quarantined, {srate}")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min" if seconds >= 3600 else f"{seconds // 60} min {seconds % 60:02d} s"


@perso.command("script")
@click.argument("phase", type=click.Choice(["init", "perso"]))
@click.option("--profile", default=None)
@click.option("--cardholders", "csv_path", type=click.Path(dir_okay=False, exists=True),
              help="perso: the file whose record --line is scripted (default: the sample cardholder).")
@click.option("--line", type=int, help="perso: the CSV line of the cardholder.")
@click.option("--atr", help="perso: the card's ATR (hex); its last 8 bytes diversify the keys.")
@click.option("--keys", "keys_path", type=click.Path(dir_okay=False), help="With --reveal: key file for plain key loads.")
@click.option("--reveal", is_flag=True, help="Show secrets (needs --keys for key values).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the script to a file.")
def perso_script_cmd(phase, profile, csv_path, line, atr, keys_path, reveal, output):
    """Write a phase as an annotated APDU script for review or for other tools."""
    from personalize import cardholders, compile, virtual
    from personalize.script import render
    from terminal.factors import card_factor
    prof = _profile(profile)
    provider = _keys(keys_path, required=False) if reveal else None
    if reveal and provider is None:
        _fail("--reveal needs --keys")
    if phase == "init":
        script = compile.init_script(prof)
    else:
        holder = cardholders.sample()
        if csv_path:
            rows = dict(_read_holders(csv_path, "utf-8"))
            if line not in rows:
                _fail(f"{csv_path}: no record on line {line}")
            holder = rows[line]
        card_atr = bytes.fromhex(atr) if atr else virtual.config_for(prof, virtual.chip_serial(holder.get("card_number", ""))).atr
        try:
            values = cardholders.values(holder, prof, card_factor(card_atr))
        except cardholders.HolderError as e:
            _fail(f"line {line}: {e}")
        script = compile.perso_script(prof, values, card_factor(card_atr))
    text = "\n".join([f"# sscard {phase} script for {prof.name} (profile digest {prof.digest})"] +
                     render(script, provider, reveal)) + "\n"
    if output:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"{output}: {len(script)} steps", err=True)
    else:
        click.echo(text, nl=False)


@main.command()
@with_card
@click.option("--profile", default=None, help="The card's profile (default: default).")
@click.option("--keys", "keys_path", type=click.Path(dir_okay=False), help="Issuer key file (cases that need keys).")
@psam_option
@click.option("--destructive", is_flag=True, help="Also run cases that lock PINs or block the card.")
@click.option("--only", multiple=True, help="Run only cases whose id starts with this (e.g. PIN, ITEM-06).")
@click.option("--junit", type=click.Path(dir_okay=False), help="Write JUnit XML here.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Write an HTML report here.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of a table.")
def conformance(image_path, reader, profile, keys_path, psam, destructive, only, junit, html_path, as_json):
    """Run the conformance suite against a card; exit 1 when a case fails.

    With --image the suite works on a copy in memory: the image file is left as it was.
    """
    prof = _profile(profile)
    if bool(image_path) == bool(reader):
        _fail("name the card with exactly one of --image FILE or --reader NAME")
    with _security(keys_path, psam, prof, required=False) as provider:
        _conformance(image_path, reader, prof, provider, "psam" if psam else bool(provider), destructive, only,
                     junit, html_path, as_json)


def _conformance(image_path, reader, prof, provider, keys_kind, destructive, only, junit, html_path, as_json):
    from conformance import runner
    from reader_bridge.transport import InProcess
    if image_path:
        t = InProcess(_load_image(image_path), name=image_path)
    else:
        from reader_bridge.pcsc import PcscTransport
        from reader_bridge.transport import TransportError
        try:
            t = PcscTransport(reader)
        except TransportError as e:
            _fail(str(e))
    try:
        outcomes = runner.run(t, prof, provider, destructive, only=only)
        card = {"target": image_path or reader, "atr": t.atr().hex().upper(), "profile": prof.name,
                "profile_digest": prof.digest, "keys": keys_kind, "destructive": destructive,
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    finally:
        t.close()
    if junit:
        Path(junit).write_bytes(runner.junit(outcomes, f"{prof.name} {card['atr']}"))
    if html_path:
        Path(html_path).write_text(runner.as_html(outcomes, card), encoding="utf-8")
    click.echo(runner.as_json(outcomes, card) if as_json else runner.table(outcomes))
    s = runner.summary(outcomes)
    if s["fail"] or s["error"]:
        sys.exit(1)


@main.group()
def audit() -> None:
    """The personalization audit log."""


@audit.command("verify")
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--journal", "journal_path", required=True,
              help="The batch journal the logs were written with (SQLite file or postgresql:// URL).")
@click.option("--keys", "keys_path", type=click.Path(dir_okay=False), required=True,
              help="The issuer key file the logs were written under (the chain's key derives from it).")
def audit_verify(paths, journal_path, keys_path):
    """Check each audit log's keyed chain and the logs against the journal: a line edited, inserted,
    removed, swapped or forged, a log cut or emptied, a card without its line in any station's log, and
    a batch without its end are each reported with their line. Give every station's log."""
    from personalize.audit import unchecked_logs, verify
    from personalize.journal import JournalError, open_journal, redact
    provider = _keys(keys_path)
    try:
        journal = open_journal(journal_path, create=False)
    except JournalError as e:
        _bad(str(e))
    problems, total = [], 0
    try:
        for path in paths:
            n, found = verify(path, provider.audit_mac, journal)
            total += n
            problems += [f"{path}: {p}" if len(paths) > 1 else p for p in found]
        problems += unchecked_logs(paths, journal)
    finally:
        journal.close()
    for p in problems:
        click.echo(p)
    where = paths[0] if len(paths) == 1 else f"{len(paths)} logs"
    if problems:
        _fail(f"{where}: {len(problems)} problem(s) in {total} lines")
    click.echo(f"{where}: {total} lines, keyed chain{'s' if len(paths) > 1 else ''} intact and in agreement "
               f"with {redact(journal_path)}")


# ---- serving --------------------------------------------------------------------------------------

@main.command()
@click.option("--image", "images", multiple=True, type=click.Path(dir_okay=False),
              help="Card image to serve; repeat for more slots (slot n on port PORT+n).")
@click.option("--hopper", type=click.Path(file_okay=False, exists=True),
              help="A card feeder on the first slot: serve DIR's images in name order, the next one each time a "
                   "card that was written to is powered down.")
@click.option("--port", default=35963, show_default=True, help="vpcd port of the first slot.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--slots", type=int, default=None, help="How many slots (must match the images given).")
@click.option("-v", "--verbose", is_flag=True, help="Log one line per APDU (PINs, keys, cryptograms masked).")
def serve(images, hopper, port, host, slots, verbose):
    """Serve card images behind vsmartcard's vpcd until Ctrl-C or SIGTERM; every PC/SC program sees them."""
    import logging
    import signal
    import threading

    from reader_bridge.vpcd import VpcdLink

    if bool(images) == bool(hopper):
        _fail("give card images with --image, or a folder of them with --hopper")
    if hopper:
        images = tuple(str(p) for p in sorted(Path(hopper).glob("*.json")))
        if not images:
            _fail(f"{hopper}: no card images (*.json)")
        return _serve_hopper(images, host, port, verbose)
    if slots is not None and slots != len(images):
        _fail(f"--slots {slots} but {len(images)} image(s) given: give one --image per slot")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    from reader_bridge.persist import ImageSaver

    stop = threading.Event()
    links, savers = [], []
    for n, path in enumerate(images):
        card = _load_image(path)
        card.power_on()
        savers.append(ImageSaver(path, card))
        links.append(VpcdLink(card, host, port + n, on_change=savers[-1], stop=stop))
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    threads = [link.start() for link in links]
    for n, path in enumerate(images):
        click.echo(f"serving {path} on {host}:{port + n} (reader 'Virtual PCD 00 {n:02X}' when vpcd runs there)",
                   err=True)
    while not stop.wait(0.5):
        pass
    for link in links:
        link.shutdown()
    for t in threads:
        t.join(timeout=5)
    unsaved = _save_served(zip(savers, links))
    click.echo(f"stopped; {sum(link.apdus for link in links)} APDUs served, "
               + ("images up to date" if not unsaved else f"NOT saved: {'; '.join(unsaved)}"), err=True)


def _save_served(pairs) -> list[str]:
    """Bring each served image up to date with its card (only if it changed); the errors, one per image."""
    errors = []
    for saver, link in pairs:
        if link.card is not None:
            saver(link.card)
            if saver.error:
                errors.append(saver.error)
    return errors


def _serve_hopper(images, host, port, verbose):
    import logging
    import signal
    import threading

    from reader_bridge.vpcd import VpcdLink

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    from reader_bridge.persist import ImageSaver

    queue = list(images)
    state = {"path": queue.pop(0)}
    first = _load_image(state["path"])
    first.power_on()
    state["commits"] = first.store.commits
    saver = ImageSaver(state["path"], first)

    def next_card(card):
        if card.store.commits == state["commits"]:
            return card                      # powered down unchanged: the same card stays in
        saver(card)
        following = None
        while following is None:
            if not queue:
                click.echo(f"hopper empty after {state['path']}", err=True)
                return None
            state["path"] = queue.pop(0)
            try:
                following = card_image.load(state["path"])
            except card_image.ImageError as e:
                click.echo(f"skipped: {e}", err=True)
        following.power_on()
        state["commits"] = following.store.commits
        saver.retarget(state["path"], following)
        return following

    stop = threading.Event()
    link = VpcdLink(first, host, port, on_change=saver, stop=stop, next_card=next_card)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    thread = link.start()
    click.echo(f"serving a hopper of {len(images)} cards on {host}:{port}", err=True)
    while not stop.wait(0.5):
        pass
    link.shutdown()
    thread.join(timeout=5)
    unsaved = _save_served([(saver, link)])
    click.echo(f"stopped; {link.apdus} APDUs served" + (f"; NOT saved: {unsaved[0]}" if unsaved else ""), err=True)


if __name__ == "__main__":
    sys.exit(main())
