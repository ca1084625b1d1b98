"""The `sscard` command: card images, APDUs, and (as they land) serving, reading and personalizing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from cardos import image as card_image
from cardos import redact
from cardos.access import describe
from cardos.apdu import split_response
from cardos.files import DedicatedFile, ElementaryFile, KeyFile, LinearFixedEF, TransparentEF, VariableRecordEF


def _fail(message: str) -> None:
    raise click.ClickException(message)


def _load(path: str):
    try:
        return card_image.load(path)
    except card_image.ImageError as e:
        _fail(str(e))


def _parse_apdus(texts: tuple[str, ...]) -> list[bytes]:
    out = []
    for i, text in enumerate(texts, 1):
        clean = "".join(text.split()).replace(":", "")
        try:
            raw = bytes.fromhex(clean)
        except ValueError:
            bad = next((j for j, ch in enumerate(clean) if ch not in "0123456789abcdefABCDEF"), len(clean))
            _fail(f"APDU {i} ({text!r}): not hex at character {bad + 1}" if bad < len(clean)
                  else f"APDU {i} ({text!r}): odd number of hex digits")
        if len(raw) < 4:
            _fail(f"APDU {i} ({text!r}): {len(raw)} bytes, a command has at least 4")
        out.append(raw)
    return out


@click.group()
@click.version_option(package_name="sscard")
def main() -> None:
    """sscard: simulate, personalize and test Chinese social security cards."""


@main.group()
def image() -> None:
    """Create and inspect card images (JSON files holding a virtual card)."""


@image.command("new")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--blank", is_flag=True, help="A factory-blank card (MF, transport key 00 = FF…FF).")
@click.option("--profile", "profile", default=None, help="Card profile (default: the built-in demo layout).")
@click.option("--force", is_flag=True, help="Overwrite an existing image.")
def image_new(path: str, blank: bool, profile: str | None, force: bool) -> None:
    """Write a new card image to PATH."""
    from personalize import demo

    if Path(path).exists() and not force:
        _fail(f"{path} exists; pass --force to overwrite it")
    if profile is not None:
        _fail("profiles arrive with the personalization toolkit; only the built-in demo layout exists yet")
    card = demo.blank_card() if blank else demo.demo_card()
    card_image.save(card, path)
    click.echo(f"{path}: {'blank' if blank else 'demo'} card, {card.fs.used()} of {card.config.capacity} bytes used")


@image.command("info")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def image_info(path: str, as_json: bool) -> None:
    """Show capacity used and free, and the file tree, of a card image."""
    card = _load(path)
    card.power_on()
    files = [_describe(p, spec, card) for p, spec in card.fs.walk()]
    used, cap = card.fs.used(), card.config.capacity
    if as_json:
        click.echo(json.dumps({"capacity": cap, "used": used, "free": cap - used,
                               "atr": card.config.atr.hex().upper(), "files": files}, indent=1))
        return
    click.echo(f"ATR {card.config.atr.hex().upper()}")
    click.echo(f"EEPROM {used} of {cap} bytes used, {cap - used} free")
    for f in files:
        indent = "  " * (f["path"].count("/"))
        click.echo(f"{indent}{f['fid']} {f['kind']}: {f['detail']}")


def _describe(path, spec, card) -> dict:
    fid = f"{spec.fid:04X}"
    if isinstance(spec, DedicatedFile):
        detail = (f"name {spec.name.decode('latin-1')!r}, " if spec.name else "") + \
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


@main.command()
@click.argument("apdus", nargs=-1, required=True)
@click.option("--image", "image_path", type=click.Path(dir_okay=False), required=True,
              help="Card image to send the APDUs to; it is saved afterwards.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of exchanges (secrets redacted).")
def apdu(apdus: tuple[str, ...], image_path: str, as_json: bool) -> None:
    """Send hex APDUs to a card and print `response-hex SW` for each."""
    commands = _parse_apdus(apdus)
    card = _load(image_path)
    card.power_on()
    rows = []
    for raw in commands:
        resp = card.transmit(raw)
        data, sw = split_response(resp)
        rows.append({"command": redact.command(raw), "response": redact.response(raw, resp)[:-4] if data else "",
                     "sw": f"{sw:04X}"})
    card_image.save(card, image_path)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        for r in rows:
            click.echo(f"{r['response']} {r['sw']}".strip())


if __name__ == "__main__":
    sys.exit(main())
