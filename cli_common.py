"""What every `sscard` command shares: ending with one line and an exit status, asking for secrets,
the profile, the issuer keys or PSAM, and the options naming a card."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click

from cardos import redact
from terminal import choose
from terminal.choose import BAD_INPUT


def fail(message: str, exit_code: int = 1) -> None:
    e = click.ClickException(message)
    e.exit_code = exit_code
    raise e


def bad(message: str) -> None:
    """Input the command refuses (a file, a value): one line, exit status 2."""
    fail(message, BAD_INPUT)


@contextlib.contextmanager
def failing(errors, prefix: str = "", exit_code: int = 1):
    """The errors a call may end with, each ended as one line with the exit status."""
    try:
        yield
    except errors as e:
        fail(f"{prefix}{e}", exit_code)


def ask(label: str) -> str:
    return click.prompt(label, hide_input=True, err=True)


def pkcs11_module() -> str | None:
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx else None
    return root.params.get("pkcs11_module") if root else None


def load_profile(name: str | None):
    from personalize.profile import ProfileError, load
    with failing(ProfileError, "profile: "):
        return load(name)


def issuer_keys(path: str | None, required: bool = True, profile=None):
    """The issuer keys --keys names: a key file, or a PKCS#11 token URI (checked against the profile)."""
    return choose.issuer_keys(path, ask, pkcs11_module(), required, profile)


def security(keys_path: str | None, psam: str | None, prof, required: bool = True):
    return choose.security_module(keys_path, psam, prof, ask, pkcs11_module(), required)


def needs_keys(keys_path, psam, what: str) -> None:
    if not (keys_path or psam):
        bad(f"{what} the issuer key file (--keys FILE) or a PSAM (--psam READER|IMAGE)")


def absent(path: str, force: bool) -> None:
    if Path(path).exists() and not force:
        fail(f"{path} exists; pass --force to overwrite it")


def factors(t):
    """The card's diversification factors, read as a terminal reads them (ATR, region of EF05 tag 01)."""
    from terminal import flows
    return flows.read_factors(flows.sender(t), t.atr())


psam_option = click.option("--psam", help="A PSAM instead of --keys: its reader name, or a PSAM image file.")
json_option = click.option("--json", "as_json", is_flag=True)
card_options = [
    click.option("--image", "image_path", type=click.Path(dir_okay=False), help="A card image file."),
    click.option("--reader", help="A PC/SC reader name (or its start)."),
]


def with_card(f):
    for opt in reversed(card_options):
        f = opt(f)
    return f


def echo(value, as_json: bool, lines=(), ascii_only: bool = False) -> None:
    """Print value as JSON, or else the lines as text."""
    for line in [json.dumps(value, indent=1, ensure_ascii=ascii_only)] if as_json else lines:
        click.echo(line)


def print_exchanges(log, as_json: bool) -> None:
    rows = [{"step": ex.note, "command": redact.command(ex.apdu), "sw": f"{ex.sw:04X}"} for ex in log]
    echo(rows, as_json, [f"{r['sw']}  {r['step']}" for r in rows])
