"""The `sscard` command: card images, keys, APDUs, reading, card life, serving and personalizing.

Each command parses its options, makes one call into the module that owns the work and prints;
the card-life and personalization commands are in cli_card.py and cli_perso.py.
"""

from __future__ import annotations

import os
import string
import sys
from pathlib import Path

import click

import cli_card
import cli_perso
from cardos import image as card_image
from cardos import redact
from cardos.apdu import split_response
from cli_common import (absent, ask, bad, echo, fail, failing, issuer_keys, load_profile, pkcs11_module,
                        psam_option, security, with_card)
from reader_bridge.serving import ServeError
from terminal import choose
from terminal.choose import BAD_INPUT, Refusal


class _Main(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (Refusal, ServeError) as e:
            fail(str(e), e.exit_code)


@click.group(cls=_Main)
@click.version_option(package_name="sscard")
@click.option("--pkcs11-module", type=click.Path(dir_okay=False),
              help="PKCS#11 library for --keys pkcs11:… (default: $SSCARD_PKCS11_MODULE, else SoftHSM2's).")
def main(pkcs11_module: str | None) -> None:
    """sscard: simulate, personalize and test Chinese social security cards."""


for _group in (cli_card.card, cli_card.pay, cli_perso.perso, cli_perso.audit):
    main.add_command(_group)


def _parse_apdus(texts: tuple[str, ...]) -> list[bytes]:
    """Hex APDUs (spaces and colons allowed); an error names the APDU and the position, never its
    content, which may hold a PIN or a key."""
    out = []
    for i, text in enumerate(texts, 1):
        wrong = next((j for j, ch in enumerate(text, 1)
                      if not (ch.isspace() or ch == ":" or ch in string.hexdigits)), None)
        if wrong is not None:
            bad(f"APDU {i}: not hex at character {wrong}")
        clean = "".join(text.split()).replace(":", "")
        if len(clean) % 2:
            bad(f"APDU {i}: odd number of hex digits")
        raw = bytes.fromhex(clean)
        if len(raw) < 4:
            bad(f"APDU {i}: {len(raw)} bytes, a command has at least 4")
        out.append(raw)
    return out


# ---- images -----------------------------------------------------------------------------------

@main.group()
def image() -> None:
    """Create and inspect card images (JSON files holding a virtual card)."""


def _known_faults(faults: tuple[str, ...]) -> tuple[str, ...]:
    from conformance import faults as qa
    with failing(ValueError, "--fault: ", exit_code=2):
        qa.check(faults)
    return faults


@image.command("new")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--profile", default=None, help="Card profile: default, sm4-3.00, ss-1.00, dda (default with EMV DDA) or a YAML file.")
@click.option("--keys", "keys_path", type=click.Path(dir_okay=False),
              help="Issuer key file; without it the card gets the published demo keys.")
@click.option("--blank", is_flag=True, help="A factory-blank chip of the profile's COS (MF, factory key 00 = FF…FF).")
@click.option("--activate", is_flag=True, help="Also activate the card (as the bank counter does).")
@click.option("--serial", help="The chip's 8-byte serial (hex), the ATR's last bytes; default: derived from PATH.")
@click.option("--fault", "faults", multiple=True, callback=lambda _c, _p, v: _known_faults(v),
              help="A deliberate defect (QA): pin-counter-stuck, read-rights-ignored.")
@click.option("--force", is_flag=True, help="Overwrite an existing image.")
@click.option("--psam", "make_psam", is_flag=True, help="A PSAM (the terminal's security module) instead of a card: "
              "the profile's key table, masters from --keys.")
@click.option("--region", help="--psam: the 6-digit region code of its terminal number (e.g. 330300).")
def image_new(path: str, profile: str | None, keys_path: str | None, blank: bool, activate: bool,
              serial: str | None, faults: tuple[str, ...], force: bool, make_psam: bool, region: str | None) -> None:
    """Write a new card image: the profile's card personalized for a sample cardholder, or a PSAM."""
    from conformance.faults import with_faults
    from personalize import cardholders, virtual
    from personalize.script import ScriptError
    absent(path, force)
    prof = load_profile(profile)
    if make_psam:
        return _new_psam(path, prof, keys_path, region, serial)
    holder = cardholders.sample()
    with failing(ValueError):
        chip = virtual.parse_serial(serial) if serial is not None else \
            virtual.chip_serial(holder["card_number"] if not blank else str(Path(path).resolve()))
    if blank:
        card = _save(virtual.blank(prof, chip), path)
        return click.echo(f"{path}: blank {prof.name} chip, {card.fs.used()} of {card.config.capacity} bytes used")
    keys = issuer_keys(keys_path, required=False, profile=prof) or virtual.demo_issuer_keys(prof)
    with failing(ScriptError, "making the card: "):
        card = virtual.issued(prof, holder, keys, chip, activate)
    card = _save(with_faults(card, faults) if faults else card, path)
    note = "" if keys_path else " (published demo keys: never for real cards)"
    click.echo(f"{path}: {prof.name} card of {holder['name']} {holder['card_number']}, "
               f"{card.fs.used()} of {card.config.capacity} bytes used{note}")


def _save(card, path: str):
    with failing(card_image.SaveError):
        card_image.save(card, path)
    return card


def _new_psam(path: str, prof, keys_path: str | None, region: str | None, serial: str | None) -> None:
    from personalize import psam, virtual
    from personalize.script import ScriptError
    if not region:
        bad("--psam needs --region (the 6-digit region code of its terminal number)")
    with failing(ValueError, exit_code=BAD_INPUT):
        chip = virtual.parse_serial(serial) if serial else psam.psam_serial(str(Path(path).resolve()))
    keys = issuer_keys(keys_path, required=False) or virtual.demo_issuer_keys(prof)
    with failing(psam.PsamError, exit_code=BAD_INPUT), failing(ScriptError, "making the PSAM: "):
        card_image.save(psam.make(prof, keys, region, chip), path)
    note = "" if keys_path else " (published demo keys: never for real terminals)"
    click.echo(f"{path}: PSAM for {prof.name}, region {region}, {len(prof.psam.keys)} keys{note}")


@image.command("info")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def image_info(path: str, as_json: bool) -> None:
    """Show capacity used and free, and the file tree, of a card image."""
    from cardos import inventory
    s = inventory.summary(choose.load_image(path))
    echo(s, as_json, inventory.lines(s), ascii_only=True)


@image.command("repair")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--accept", is_flag=True, help="Accept the contents as they now are and write a new digest.")
def image_repair(path: str, accept: bool) -> None:
    """After a deliberate hand edit of a card image: check it as loading does, and with --accept
    give it a digest that matches its new contents. Contents that fail a check are never accepted."""
    with failing(card_image.ImageError, exit_code=BAD_INPUT):
        card = card_image.unsealed(path)
    if card is None:
        return click.echo(f"{path}: its digest matches its contents; nothing to repair")
    if not accept:
        fail(f"{path}: the contents are valid but carry no matching digest; "
             "if they are as you meant them, run again with --accept", BAD_INPUT)
    _save(card, path)
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
    from personalize.keys import PASSPHRASE_ENV, KeyFileError, passphrase_problem, save_key_file
    from personalize.virtual import new_masters
    absent(path, force)
    prof = load_profile(profile)
    passphrase = os.environ.get(PASSPHRASE_ENV) or click.prompt("new passphrase", hide_input=True,
                                                               confirmation_prompt=True, err=True)
    if not demo and (why := passphrase_problem(passphrase)):
        bad(f"{path}: {why} (only --demo key files may have a weak one)")
    masters, rsa = new_masters(prof, demo)
    with failing(KeyFileError, exit_code=BAD_INPUT):
        save_key_file(path, masters, passphrase, weak_ok=demo, rsa=rsa)
    click.echo(f"{path}: {len(masters)} master keys and the EMV CA and issuer RSA keys for {prof.name}"
               f"{' (demo keys)' if demo else ''}; the CA public key is published in the file")


@keys.command("list")
@click.argument("path", type=click.Path(dir_okay=False), required=False)
@click.option("--token", help="List the issuer keys in this PKCS#11 token instead (by label).")
def keys_list(path: str | None, token: str | None) -> None:
    """The names, algorithms and versions in a key file or an HSM token (never the values)."""
    from personalize.keys import KeyRef
    if bool(path) == bool(token):
        fail("name a key file or --token LABEL, not both")
    provider = issuer_keys(path or choose.token_uri(token))
    for n in provider.names():
        extra = "" if not token else ("  extractable (loaded in clear by design)"
                                      if provider.describe_one(n).extractable else "  non-extractable")
        click.echo(f"{n:14} {provider.algorithm(KeyRef(n)).value:5} version {provider.version(n)}{extra}")


@keys.command("import-hsm")
@click.argument("path", type=click.Path(dir_okay=False, exists=True))
@click.option("--token", required=True, help="Label of the PKCS#11 token to load the keys into.")
def keys_import_hsm(path: str, token: str) -> None:
    """Load a key file's master keys into an HSM token as sensitive, non-extractable objects.

    The transport key is the one exception: initialization loads it into each fresh DF in clear
    (plain 80 D4), so it is imported extractable; every other master key never leaves the token.
    """
    from personalize.compiler import TRANSPORT_KEY
    names = choose.import_key_file(issuer_keys(path), token, {TRANSPORT_KEY}, ask, pkcs11_module())
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
    commands, rows, redactor = _parse_apdus(apdus), [], redact.Redactor()
    with choose.card_transport(image_path, reader) as t:
        for cmd in commands:
            resp = (t.transmit_raw if raw else t.transmit)(cmd)
            rows.append({"command": redact.command(cmd), "response": redactor.response(cmd, resp)[:-4],
                         "sw": f"{split_response(resp)[1]:04X}"})
    echo(rows, as_json, [f"{r['response']} {r['sw']}".strip() for r in rows], ascii_only=True)


@main.command()
def readers() -> None:
    """List PC/SC readers and whether a card is in each (with its ATR)."""
    from reader_bridge.pcsc import list_readers
    from reader_bridge.transport import TransportError
    with failing(TransportError):
        found = list_readers()
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
    from personalize.readout import ReadError, lines, read_card
    prof = load_profile(profile)
    with security(keys_path, psam, prof, required=False) as provider, \
            choose.card_transport(image_path, reader) as t, failing(ReadError):
        r = read_card(t, prof, provider)
    echo(r.as_dict(), as_json, lines(r, prof))


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
    from conformance import runner
    prof = load_profile(profile)
    choose.one_card(image_path, reader)
    with security(keys_path, psam, prof, required=False) as provider, \
            choose.card_transport(image_path, reader, save=False) as t:
        text, failed = runner.report(t, prof, provider, "psam" if psam else bool(provider), destructive, only,
                                     image_path or reader, junit, html_path, as_json)
    click.echo(text)
    if failed:
        sys.exit(1)


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
    from reader_bridge import serving
    if bool(images) == bool(hopper):
        fail("give card images with --image, or a folder of them with --hopper")
    if hopper:
        return serving.serve_hopper(serving.hopper_images(hopper), host, port, verbose, _say)
    if slots is not None and slots != len(images):
        fail(f"--slots {slots} but {len(images)} image(s) given: give one --image per slot")
    serving.serve_slots(images, host, port, verbose, _say)


def _say(line: str) -> None:
    click.echo(line, err=True)


if __name__ == "__main__":
    sys.exit(main())
