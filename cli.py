"""The `sscard` command: card images, keys, APDUs, reading, card life, serving and personalizing."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import click

from cardos import image as card_image
from cardos import redact
from cardos.access import describe
from cardos.apdu import split_response
from cardos.files import DedicatedFile, ElementaryFile, KeyFile, LinearFixedEF, TransparentEF, VariableRecordEF


def _fail(message: str) -> None:
    raise click.ClickException(message)


class BadInput(click.ClickException):
    """Input the command refuses (a file, a value): one line, exit status 2."""

    exit_code = 2


def _bad(message: str) -> None:
    raise BadInput(message)


def _load_image(path: str):
    try:
        return card_image.load(path)
    except card_image.ImageError as e:
        _fail(str(e))


def _profile(name: str | None):
    from personalize.profile import ProfileError, load
    try:
        return load(name)
    except ProfileError as e:
        _fail(f"profile: {e}")


def _keys(path: str | None, required: bool = True):
    from personalize.keys import PASSPHRASE_ENV, KeyFileError, load_key_file
    if path is None:
        if required:
            _fail("this operation needs the issuer key file: --keys FILE")
        return None
    passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase is None:
        passphrase = click.prompt(f"passphrase of {path}", hide_input=True, err=True)
    try:
        return load_key_file(path, passphrase)
    except KeyFileError as e:
        _bad(str(e))


@contextlib.contextmanager
def _card_transport(image_path: str | None, reader: str | None):
    """The transport the user named: a saved card image (saved again afterwards) or a PC/SC reader."""
    from reader_bridge.transport import InProcess, TransportError
    if bool(image_path) == bool(reader):
        _fail("name the card with exactly one of --image FILE or --reader NAME")
    if image_path:
        card = _load_image(image_path)
        card.power_on()
        try:
            yield InProcess(card, name=image_path)
        finally:
            card_image.save(card, image_path)
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


def _exchanges(log, as_json: bool) -> None:
    rows = [{"step": ex.note, "command": redact.command(ex.apdu), "sw": f"{ex.sw:04X}"} for ex in log]
    if as_json:
        click.echo(json.dumps(rows, indent=1, ensure_ascii=False))
    else:
        for r in rows:
            click.echo(f"{r['sw']}  {r['step']}")


@click.group()
@click.version_option(package_name="sscard")
def main() -> None:
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
def image_new(path: str, profile: str | None, keys_path: str | None, blank: bool, activate: bool,
              serial: str | None, faults: tuple[str, ...], force: bool) -> None:
    """Write a new card image: the profile's card personalized for a sample cardholder."""
    from personalize import cardholders, lifecycle, virtual
    from personalize.script import ScriptError
    from reader_bridge.transport import InProcess

    if Path(path).exists() and not force:
        _fail(f"{path} exists; pass --force to overwrite it")
    prof = _profile(profile)
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
        card_image.save(card, path)
        click.echo(f"{path}: blank {prof.name} chip, {card.fs.used()} of {card.config.capacity} bytes used")
        return
    keys = _keys(keys_path, required=False) or virtual.demo_issuer_keys(prof)
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
    card_image.save(card, path)
    note = "" if keys_path else " (published demo keys: never for real cards)"
    click.echo(f"{path}: {prof.name} card of {holder['name']} {holder['card_number']}, "
               f"{card.fs.used()} of {card.config.capacity} bytes used{note}")


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


def _describe(path, spec, card) -> dict:
    fid = f"{spec.fid:04X}"
    if isinstance(spec, DedicatedFile):
        name = spec.name.decode("gbk", errors="replace") if spec.name else ""
        detail = (f"name {name!r}, " if name else "") + \
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
    else:
        masters = {n: (prof.algorithm, FACTORY_KEY_VALUE if n == FACTORY_KEY else os.urandom(16), 1)
                   for n in master_names(prof)}
    try:
        save_key_file(path, masters, passphrase, weak_ok=demo)
    except KeyFileError as e:
        _bad(str(e))
    click.echo(f"{path}: {len(masters)} master keys for {prof.name}{' (demo keys)' if demo else ''}")


def _ref(name):
    from personalize.keys import KeyRef
    return KeyRef(name)


@keys.command("list")
@click.argument("path", type=click.Path(dir_okay=False))
def keys_list(path: str) -> None:
    """The names, algorithms and versions in a key file (never the values)."""
    provider = _keys(path)
    for n in provider.names():
        click.echo(f"{n:14} {provider.algorithm(_ref(n)).value:5} version {provider.version(n)}")


# ---- talking to a card ---------------------------------------------------------------------------

@main.command()
@click.argument("apdus", nargs=-1, required=True)
@with_card
@click.option("--json", "as_json", is_flag=True, help="A JSON list of exchanges (secrets redacted).")
def apdu(apdus: tuple[str, ...], image_path: str | None, reader: str | None, as_json: bool) -> None:
    """Send hex APDUs to a card and print `response-hex SW` for each."""
    commands = _parse_apdus(apdus)
    rows = []
    with _card_transport(image_path, reader) as t:
        for raw in commands:
            resp = t.transmit(raw)
            data, sw = split_response(resp)
            rows.append({"command": redact.command(raw), "response": redact.response(raw, resp)[:-4] if data else "",
                         "sw": f"{sw:04X}"})
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        for r in rows:
            click.echo(f"{r['response']} {r['sw']}".strip())


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
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def read(image_path, reader, profile, keys_path, as_json) -> None:
    """Read and decode the card and holder data, as a terminal does."""
    from personalize.readout import ReadError, read_card
    prof = _profile(profile)
    provider = _keys(keys_path, required=False)
    with _card_transport(image_path, reader) as t:
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
    click.echo(f"{'full name':32} {r.full_name}")
    for k, v in r.items.items():
        if k not in ("name", "name_extension"):
            click.echo(f"{labels.get(k, k):32} {v}")
    for role, state in r.life.items():
        click.echo(f"{role + ' life state':32} {state}")
    if r.refused:
        hint = "" if provider else " (a 3.00 card reads personal data after authentication: give --keys)"
        click.echo(f"refused: {'; '.join(r.refused)}{hint}")


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
    @click.option("--keys", "keys_path", type=click.Path(dir_okay=False), required=True, help="Issuer key file.")
    @click.option("--profile", default=None, help="The card's profile (default: default).")
    @click.option("--account", type=click.Choice(["ss", "bank", "both"]), default="both", show_default=True)
    @click.option("--reason", default="", help="Why (kept on the card, in the life file).")
    @click.option("--json", "as_json", is_flag=True)
    def command(image_path, reader, keys_path, profile, account, reason, as_json):
        from personalize import lifecycle
        from personalize.script import ScriptError
        prof, provider = _profile(profile), _keys(keys_path)
        with _card_transport(image_path, reader) as t:
            try:
                script = lifecycle.life_script(op, prof, t.atr()[-8:], account, reason)
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
@click.argument("op", type=click.Choice(["change", "reset", "unblock"]))
@with_card
@click.option("--keys", "keys_path", type=click.Path(dir_okay=False), help="Issuer key file (reset, unblock).")
@click.option("--profile", default=None)
@click.option("--account", type=click.Choice(["ss", "bank"]), default="ss", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def pin(op, image_path, reader, keys_path, profile, account, as_json):
    """PIN change (old and new PIN prompted), reset to a new PIN (issuer key) or unblock (issuer key)."""
    from personalize import lifecycle
    from personalize.script import ScriptError
    prof = _profile(profile)
    provider = _keys(keys_path, required=op != "change")
    old = click.prompt("current PIN", hide_input=True, err=True) if op == "change" else ""
    new = click.prompt("new PIN", hide_input=True, confirmation_prompt=True, err=True) if op != "unblock" else ""
    if new and (not new.isdigit() or not 4 <= len(new) <= 12):
        _fail("a PIN is 4 to 12 digits")
    with _card_transport(image_path, reader) as t:
        try:
            log = lifecycle.perform(t, lifecycle.pin_script(op, prof, t.atr()[-8:], provider, account, old, new), provider)
        except ScriptError as e:
            _fail(f"PIN {op}: {e}")
    _exchanges(log, as_json)


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
    prof, provider = _profile(profile), _keys(keys_path)
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
    prof, provider = _profile(profile), _keys(keys_path)
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
            values = cardholders.values(holder, prof, card_atr[-8:])
        except cardholders.HolderError as e:
            _fail(f"line {line}: {e}")
        script = compile.perso_script(prof, values, card_atr[-8:])
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
@click.option("--destructive", is_flag=True, help="Also run cases that lock PINs or block the card.")
@click.option("--only", multiple=True, help="Run only cases whose id starts with this (e.g. PIN, ITEM-06).")
@click.option("--junit", type=click.Path(dir_okay=False), help="Write JUnit XML here.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Write an HTML report here.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of a table.")
def conformance(image_path, reader, profile, keys_path, destructive, only, junit, html_path, as_json):
    """Run the conformance suite against a card; exit 1 when a case fails.

    With --image the suite works on a copy in memory: the image file is left as it was.
    """
    from conformance import runner
    from reader_bridge.transport import InProcess
    prof = _profile(profile)
    provider = _keys(keys_path, required=False)
    if bool(image_path) == bool(reader):
        _fail("name the card with exactly one of --image FILE or --reader NAME")
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
                "profile_digest": prof.digest, "keys": bool(provider), "destructive": destructive,
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
    links = []
    for n, path in enumerate(images):
        card = _load_image(path)
        card.power_on()
        links.append(VpcdLink(card, host, port + n, on_change=ImageSaver(path, card), stop=stop))
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
    for path, link in zip(images, links):
        card_image.save(link.card, path)
    click.echo(f"stopped; {sum(link.apdus for link in links)} APDUs served, images saved", err=True)


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
        card_image.save(card, state["path"])
        if not queue:
            click.echo(f"hopper empty after {state['path']}", err=True)
            return None
        state["path"] = queue.pop(0)
        following = _load_image(state["path"])
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
    if link.card is not None:
        card_image.save(link.card, state["path"])
    click.echo(f"stopped; {link.apdus} APDUs served", err=True)


if __name__ == "__main__":
    sys.exit(main())
