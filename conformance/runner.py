"""Running the suite and writing what it found: a table, JUnit XML, JSON and HTML."""

from __future__ import annotations

import html
import json
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from terminal import flows

from . import emv_cases  # noqa: F401 - importing a case module registers its cases
from .cases import register_item_cases
from .registry import CASES, Case
from .context import CaseFailure, CaseSkipped, Context

PASS, FAIL, SKIP, ERROR = "pass", "fail", "skip", "error"


@dataclass
class Outcome:
    """One case's result, with the exchanges (masked) that led to it."""

    id: str
    title: str
    clause: str
    status: str
    message: str = ""
    seconds: float = 0.0
    exchanges: list[str] = field(default_factory=list)
    destructive: bool = False

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def suite(profile) -> list[Case]:
    """Every case for this profile: the fixed ones and one per data item; destructive ones last."""
    cases = CASES[:2] + register_item_cases(profile) + CASES[2:]
    return sorted(cases, key=lambda c: (c.destructive, c.id == "LIFE-02"))


def run(transport, profile, keys=None, destructive: bool = False, pin: str = "",
        only: tuple[str, ...] = ()) -> list[Outcome]:
    """Run the suite; the card is reset before each case so each starts from power-on."""
    outcomes = []
    transport.reset()
    factors = flows.read_factors(flows.sender(transport), transport.atr())
    for c in suite(profile):
        if only and not any(c.id.startswith(prefix) for prefix in only):
            continue
        ctx = Context(transport, profile, keys, destructive, pin, factors=factors)
        t0 = time.monotonic()
        try:
            ctx.reset()
            c.run(ctx)
            status, message = PASS, ""
        except CaseSkipped as e:
            status, message = SKIP, str(e)
        except CaseFailure as e:
            status, message = FAIL, str(e)
        except Exception as e:  # noqa: BLE001 - a transport or script error is this case's error
            status, message = ERROR, f"{type(e).__name__}: {e}"
        outcomes.append(Outcome(c.id, c.title, c.clause, status, message, time.monotonic() - t0,
                                [x.line() for x in ctx.log], c.destructive))
    return outcomes


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    out = {PASS: 0, FAIL: 0, SKIP: 0, ERROR: 0}
    for o in outcomes:
        out[o.status] += 1
    return out


def table(outcomes: list[Outcome], show_exchanges: bool = True) -> str:
    lines = [f"{'case':10} {'result':6} {'clause':34} title"]
    for o in outcomes:
        lines.append(f"{o.id:10} {o.status.upper():6} {o.clause[:34]:34} {o.title}")
        if o.status in (FAIL, ERROR, SKIP) and o.message:
            lines.append(f"{'':17}{o.message}")
        if o.status in (FAIL, ERROR) and show_exchanges:
            lines += [f"{'':20}{x}" for x in o.exchanges]
    s = summary(outcomes)
    lines.append(f"{s[PASS]} passed, {s[FAIL] + s[ERROR]} failed, {s[SKIP]} skipped")
    return "\n".join(lines)


def junit(outcomes: list[Outcome], name: str) -> bytes:
    """JUnit XML: one testcase per case, its clause as classname and as a property."""
    s = summary(outcomes)
    suites = ET.Element("testsuites", name="sscard conformance")
    ts = ET.SubElement(suites, "testsuite", name=name, tests=str(len(outcomes)), failures=str(s[FAIL]),
                       errors=str(s[ERROR]), skipped=str(s[SKIP]),
                       time=f"{sum(o.seconds for o in outcomes):.3f}")
    for o in outcomes:
        tc = ET.SubElement(ts, "testcase", classname=o.clause, name=f"{o.id} {o.title}", time=f"{o.seconds:.3f}")
        props = ET.SubElement(tc, "properties")
        ET.SubElement(props, "property", name="clause", value=o.clause)
        ET.SubElement(props, "property", name="destructive", value=str(o.destructive).lower())
        if o.status == FAIL:
            ET.SubElement(tc, "failure", message=o.message).text = "\n".join(o.exchanges)
        elif o.status == ERROR:
            ET.SubElement(tc, "error", message=o.message).text = "\n".join(o.exchanges)
        elif o.status == SKIP:
            ET.SubElement(tc, "skipped", message=o.message)
        ET.SubElement(tc, "system-out").text = "\n".join(o.exchanges)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)


def as_json(outcomes: list[Outcome], card: dict) -> str:
    return json.dumps({"card": card, "summary": summary(outcomes), "cases": [o.as_dict() for o in outcomes]},
                      indent=1, ensure_ascii=False)


def as_html(outcomes: list[Outcome], card: dict) -> str:
    s = summary(outcomes)
    rows = []
    for o in outcomes:
        detail = html.escape(o.message) + ("<pre>" + html.escape("\n".join(o.exchanges)) + "</pre>"
                                           if o.status in (FAIL, ERROR) else "")
        rows.append(f"<tr class='{o.status}'><td>{o.id}</td><td>{o.status.upper()}</td><td>{html.escape(o.clause)}"
                    f"</td><td>{html.escape(o.title)}</td><td>{detail}</td></tr>")
    info = "".join(f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in card.items())
    return ("<!doctype html><meta charset='utf-8'><title>sscard conformance</title><style>"
            "body{font-family:sans-serif} td,th{border:1px solid #ccc;padding:4px;vertical-align:top}"
            ".pass td:nth-child(2){color:green}.fail td:nth-child(2),.error td:nth-child(2){color:red}"
            ".skip td:nth-child(2){color:gray}</style>"
            f"<h1>sscard conformance report</h1><ul>{info}</ul>"
            f"<p>{s[PASS]} passed, {s[FAIL] + s[ERROR]} failed, {s[SKIP]} skipped</p>"
            "<table><tr><th>case</th><th>result</th><th>clause</th><th>title</th><th>detail</th></tr>"
            + "".join(rows) + "</table>")


def report(transport, profile, keys, keys_kind, destructive: bool, only, target: str,
           junit_path: str | None = None, html_path: str | None = None, as_json_text: bool = False
           ) -> tuple[str, bool]:
    """Run the suite on a card and write its reports: the text to print, and whether a case failed."""
    from pathlib import Path
    outcomes = run(transport, profile, keys, destructive, only=only)
    card = {"target": target, "atr": transport.atr().hex().upper(), "profile": profile.name,
            "profile_digest": profile.digest, "keys": keys_kind, "destructive": destructive,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if junit_path:
        Path(junit_path).write_bytes(junit(outcomes, f"{profile.name} {card['atr']}"))
    if html_path:
        Path(html_path).write_text(as_html(outcomes, card), encoding="utf-8")
    s = summary(outcomes)
    return (as_json(outcomes, card) if as_json_text else table(outcomes)), bool(s["fail"] or s["error"])
