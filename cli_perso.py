"""`sscard perso …` and `sscard audit …`: initialization, data preparation, batches and their audit logs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from cli_common import echo, fail, failing, issuer_keys, json_option, load_profile, print_exchanges, with_card
from terminal import choose


@click.group()
def perso() -> None:
    """Initialize blank cards and personalize cardholders' cards, one or in batches."""


@perso.command("init")
@with_card
@click.option("--profile", default=None, help="Card profile (default: default).")
@click.option("--keys", "keys_path", type=click.Path(dir_okay=False), required=True, help="Issuer key file.")
@click.option("--no-erase", is_flag=True, help="Do not erase the card first.")
@json_option
def perso_init(image_path, reader, profile, keys_path, no_erase, as_json):
    """Initialization: lay the profile's files, key files and transport keys on a blank card."""
    from personalize.compiler import init_script
    from personalize.script import ScriptError, run
    prof = load_profile(profile)
    provider = issuer_keys(keys_path, profile=prof)
    with choose.card_transport(image_path, reader) as t, failing(ScriptError, "initialization: "):
        log = run(t.transmit, init_script(prof, erase=not no_erase), provider)
    if as_json:
        return print_exchanges(log, True)
    click.echo(f"initialized for {prof.name}: {len(log)} commands, all 9000")


def _data_options(f):
    """The options that say how to read and judge a cardholder file."""
    f = click.option("--issue-margin", default=31, show_default=True, type=click.IntRange(0, 3660),
                     help="Days an issue date may lie after today.")(f)
    return click.option("--encoding", type=click.Choice(["utf-8", "gbk", "gb18030"], case_sensitive=False),
                        default="utf-8", show_default=True, help="The cardholder file's encoding.")(f)


@perso.command("check")
@click.option("--profile", default=None)
@click.option("--cardholders", "csv_path", type=click.Path(dir_okay=False, exists=True), required=True)
@click.option("--rejects", type=click.Path(dir_okay=False), help="Write the reject file here.")
@_data_options
@json_option
def perso_check(profile, csv_path, rejects, encoding, issue_margin, as_json):
    """Data preparation only: check every record of a cardholder file and list what is wrong."""
    from personalize import cardholders
    prof = load_profile(profile)
    with failing(cardholders.CsvError, exit_code=2):
        records, problems = cardholders.check_file_all(csv_path, prof, encoding,
                                                       rules=cardholders.Rules(issue_margin_days=issue_margin))
    if rejects:
        cardholders.write_rejects(rejects, problems)
    rows = [{"line": line, "field": f, "reason": why} for line in sorted(problems) for f, why in problems[line]]
    echo({"records": records, "invalid": len(problems), "problems": rows}, as_json,
         [f"line {r['line']}: {r['field']}: {r['reason']}" for r in rows] +
         [f"{records} records, {records - len(problems)} valid, {len(problems)} invalid"])
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
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="Processes for the CPU work: checking the cardholder file and making virtual cards "
                   "(default: one per core). Readers always get one worker each.")
@_data_options
@click.option("--json", "as_json", is_flag=True, help="The summary as JSON (progress goes to stderr).")
def perso_run(profile, csv_path, keys_path, readers, out_dir, journal, audit_path, station, lease, resume, strict,
              do_init, max_failures, card_timeout, workers, encoding, issue_margin, as_json):
    """Personalize a batch: each valid cardholder of the file onto a card, journaled and audited."""
    from personalize import batch, cardholders
    prof = load_profile(profile)
    provider = issuer_keys(keys_path, profile=prof)
    with failing(batch.BatchError):
        batch.one_target(out_dir, readers)
    journal, audit_path, station = batch.station_files(out_dir, journal, audit_path, station)
    opts = batch.Options(prof, provider, csv_path, journal, audit_path, out_dir, tuple(readers), resume, strict,
                         do_init, max_failures, workers, card_timeout, station=station, lease=lease,
                         encoding=encoding, rules=cardholders.Rules(issue_margin_days=issue_margin))
    progress = _Progress()
    with failing(cardholders.CsvError, exit_code=2), failing(batch.BatchError):
        result = batch.run_batch(opts, progress)
    if progress.seen:
        click.echo("", err=True)
    echo(result.as_dict(), as_json, batch.summary_lines(result))
    if result.stopped:
        fail(result.stopped)


class _Progress:
    """Cards made and the rate, on one line of stderr: the file is never counted up front (a million
    rows would be read twice)."""

    def __init__(self):
        self.started, self.seen = time.monotonic(), 0

    def __call__(self, card_number, n):
        self.seen += n
        rate = self.seen / (time.monotonic() - self.started)
        click.echo(f"\rpersonalizing: {self.seen} cards, {rate:.1f} cards/s  {card_number}   ", nl=False, err=True)


@perso.command("status")
@click.option("--journal", required=True, help="SQLite journal file or postgresql://… URL.")
@click.option("--batch", "batch_id", help="One batch (default: every batch in the journal).")
@json_option
def perso_status(journal, batch_id, as_json):
    """Where batches stand, per station and overall: done, in progress, rejected, quarantined, rate, time left."""
    from personalize import batch
    from personalize.journal import JournalError, open_journal
    with failing(JournalError):
        j = open_journal(journal)
    try:
        with failing(batch.BatchError):
            reports = [batch.status(j, b) for b in ([batch_id] if batch_id else j.batches())]
    finally:
        j.close()
    echo(reports if not batch_id else reports[0], as_json, [line for r in reports for line in batch.status_lines(r)])


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
    from personalize import cardholders, virtual
    from personalize.script import render
    prof = load_profile(profile)
    provider = issuer_keys(keys_path, required=False) if reveal else None
    if reveal and provider is None:
        fail("--reveal needs --keys")
    holder = _holder(csv_path, line) if phase == "perso" else {}
    with failing(cardholders.HolderError, f"line {line}: "):
        script = virtual.phase_script(phase, prof, holder, bytes.fromhex(atr) if atr else None)
    text = "\n".join([f"# sscard {phase} script for {prof.name} (profile digest {prof.digest})"] +
                     render(script, provider, reveal, lambda ref: virtual.key_algorithm(prof, ref.name))) + "\n"
    if not output:
        return click.echo(text, nl=False)
    Path(output).write_text(text, encoding="utf-8")
    click.echo(f"{output}: {len(script)} steps", err=True)


def _holder(csv_path: str | None, line: int | None) -> dict:
    """The cardholder on a line of a file, or the sample cardholder."""
    from personalize import cardholders
    if not csv_path:
        return cardholders.sample()
    with failing(cardholders.CsvError, exit_code=2):
        rows = dict(cardholders.read_csv(csv_path, "utf-8"))
    if line not in rows:
        fail(f"{csv_path}: no record on line {line}")
    return rows[line]


@click.group()
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
    from personalize.audit import verify_logs
    from personalize.journal import JournalError, open_journal, redact
    provider = issuer_keys(keys_path)
    with failing(JournalError, exit_code=2):
        journal = open_journal(journal_path, create=False)
    try:
        problems, total = verify_logs(paths, provider.audit_mac, journal)
    finally:
        journal.close()
    for p in problems:
        click.echo(p)
    where = paths[0] if len(paths) == 1 else f"{len(paths)} logs"
    if problems:
        fail(f"{where}: {len(problems)} problem(s) in {total} lines")
    click.echo(f"{where}: {total} lines, keyed chain{'s' if len(paths) > 1 else ''} intact and in agreement "
               f"with {redact(journal_path)}")
