"""`sscard card …` and `sscard pay`: the counter's card-life operations, kiosk writes, a hospital's
settlement and an EMV purchase, each sent to the card as real commands."""

from __future__ import annotations

import sys

import click

from cli_common import (bad, echo, factors, failing, issuer_keys, json_option, load_profile, needs_keys,
                        print_exchanges, psam_option, security, with_card)
from terminal import choose

_keys_option = click.option("--keys", "keys_path", type=click.Path(dir_okay=False), help="Issuer key file.")


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


@click.command()
@with_card
@click.option("--amount", required=True, callback=_amount, help="Purchase amount in yuan, e.g. 12.34.")
@click.option("--pin", "ask_pin", is_flag=True, help="Prompt for the bank PIN (offline PIN when the card asks).")
@click.option("--keys", "keys_path", type=click.Path(dir_okay=False),
              help="Issuer key file: the terminal goes online to an issuer host built on it.")
@click.option("--floor-limit", default="0", callback=lambda c, p, v: 0 if v == "0" else _amount(c, p, v),
              show_default=True, help="Terminal floor limit in yuan; above it the terminal asks to go online.")
@click.option("--ca", "ca_path", type=click.Path(dir_okay=False, exists=True),
              help="A key file whose published CA public key the terminal trusts for SDA (default: --keys).")
@json_option
def pay(image_path, reader, amount, ask_pin, keys_path, floor_limit, ca_path, as_json) -> None:
    """A minimal EMV terminal: one purchase with the card's debit application, every step printed."""
    from personalize.keys import KeyFileError, trusted_ca_keys
    from terminal.emv import KeyFileIssuer, Terminal
    provider = issuer_keys(keys_path, required=False)
    with failing(KeyFileError):
        ca_keys = trusted_ca_keys(filter(None, (ca_path or keys_path,)))
    pin = click.prompt("bank PIN", hide_input=True, err=True) if ask_pin else None
    with choose.card_transport(image_path, reader) as t:
        result = Terminal(t.transmit, amount, pin=pin, floor_limit=floor_limit, ca_keys=ca_keys,
                          issuer=KeyFileIssuer(provider) if provider else None).run()
    echo(result.as_dict(), as_json, [step.line() for step in result.steps] +
         [f"{amount // 100}.{amount % 100:02d}: {result.outcome}"], ascii_only=True)
    if result.outcome.startswith("terminated"):
        sys.exit(1)


@click.group()
def card() -> None:
    """Card-life operations at the counter, sent as real commands (issuer keys from --keys)."""


def _life_command(op: str, help_text: str):
    @card.command(op, help=help_text)
    @with_card
    @_keys_option
    @psam_option
    @click.option("--profile", default=None, help="The card's profile (default: default).")
    @click.option("--account", type=click.Choice(["ss", "bank", "both"]), default="both", show_default=True)
    @click.option("--reason", default="", help="Why (kept on the card, in the life file).")
    @json_option
    def command(image_path, reader, keys_path, psam, profile, account, reason, as_json):
        from personalize import lifecycle
        from personalize.script import ScriptError
        prof = load_profile(profile)
        needs_keys(keys_path, psam, "this operation needs")
        with security(keys_path, psam, prof) as provider, choose.card_transport(image_path, reader) as t, \
                failing((ScriptError, lifecycle.LifeError), f"{op}: "):
            log = lifecycle.perform(t, lifecycle.life_script(op, prof, factors(t), account, reason), provider)
        print_exchanges(log, as_json)
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
@json_option
def pin(op, image_path, reader, keys_path, psam, profile, account, as_json):
    """PIN change (old and new PIN prompted), reset/reload to a new PIN or unblock (issuer key or PSAM)."""
    from personalize import lifecycle
    from personalize.profile import is_pin
    from personalize.script import ScriptError
    prof = load_profile(profile)
    op = "reset" if op == "reload" else op
    if op != "change":
        needs_keys(keys_path, psam, "PIN reset and unblock need")
    old = click.prompt("current PIN", hide_input=True, err=True) if op == "change" else ""
    new = click.prompt("new PIN", hide_input=True, confirmation_prompt=True, err=True) if op != "unblock" else ""
    if new and not is_pin(new):
        bad("a PIN is 4 to 12 digits")
    with security(keys_path, psam, prof, required=False) as provider, choose.card_transport(image_path, reader) as t, \
            failing((ScriptError, lifecycle.LifeError), f"PIN {op}: "):
        log = lifecycle.perform(t, lifecycle.pin_script(op, prof, factors(t), provider, account, old, new), provider)
    print_exchanges(log, as_json)


@card.command("write")
@with_card
@_keys_option
@psam_option
@click.option("--profile", default=None)
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE", required=True,
              help="A data item to write, by field name (person_id, first_region, …); repeat.")
@json_option
def card_write(image_path, reader, keys_path, psam, profile, sets, as_json):
    """Kiosk writes after issuance: EF0D after key 0D, EF05/EF06 after key 04, each record read back."""
    from personalize import kiosk
    prof = load_profile(profile)
    with failing(kiosk.KioskError, exit_code=2):
        values = kiosk.parse_sets(sets)
        kiosk.plan(prof, values)
    needs_keys(keys_path, psam, "writing needs")
    with security(keys_path, psam, prof) as provider, choose.card_transport(image_path, reader) as t, \
            failing(kiosk.KioskError):
        done = kiosk.write(t, prof, provider, values)
    echo(done, as_json, ["\n".join(done)], ascii_only=True)


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
    prof = load_profile(profile)
    with failing(settlement.SettlementError, exit_code=2):
        s = settlement.from_text(kind, institution, total, fund, dt.datetime.now())
    pin = click.prompt("cardholder PIN", hide_input=True, err=True)
    with security(keys_path, psam, prof, required=False) as provider, choose.card_transport(image_path, reader) as t, \
            failing(settlement.SettlementError):
        n = settlement.append(t, prof, s, pin, provider)
    click.echo(f"settlement {n} appended to the medical transaction log and read back")
