"""Card-life operations at the counter (spec §1), sent as real commands through any transport.

Each account application (the social-security DDF and the bank ADF) keeps its life state in
its life file, written under MAC with its line-protection key; loss reports and replacement
block the applications with PBOC APPLICATION BLOCK. Keys come from the operator's key file.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from applets.encoding import encode
from applets.life import ACTIVE, CANCELLED, DATE_TAG, LIFE_SFI, LIFE_TAG, LOST, REASON_TAG, REPLACED
from cardos.apdu import build
from cardos.files import KEY_MAINTENANCE, KEY_PIN_RELOAD, KEY_PIN_UNBLOCK
from cardos.tlv import simple_record

from .compiler import DataError, card_key, pin_bytes
from terminal.apdus import select_path
from terminal.factors import Factors
from terminal.security import SecurityModule

from .fmcos import Step
from .profile import DFDecl, Profile
from .script import Exchange, ScriptItem, Secured, run

ACCOUNTS = {"ss": "ssse", "bank": "financial"}
SELECTED_OR_BLOCKED = (0x9000, 0x6A81)


class LifeError(ValueError):
    """An operation the card's profile or the operator's input cannot support."""


@dataclass(frozen=True)
class Account:
    """An account application of the profile: its path, declaration and life-file records."""

    name: str
    path: tuple[int, ...]
    df: DFDecl

    def key(self, key_type: int, factor: bytes | Factors):
        for k in self.df.keys:
            if k.type == key_type and k.id == 0:
                try:
                    return card_key(k, factor)
                except DataError as e:
                    raise LifeError(f"{self.name} account: {e}") from None
        raise LifeError(f"{self.name} account has no key {key_type:02X}/00 in the profile")

    def record_number(self, tag: int) -> int:
        for f in self.df.files:
            if f.spec.sfi == LIFE_SFI:
                for n, it in enumerate(f.items, 1):
                    if it.tag == tag:
                        return n
        raise LifeError(f"{self.name} account has no life file record {tag:02X}")

    def select(self) -> list[Step]:
        apdus = select_path(self.path)
        return [Step(apdus[0], "select MF")] + [Step(a, f"select {self.name} account", SELECTED_OR_BLOCKED)
                                                  for a in apdus[1:]]


def accounts(profile: Profile, which: str = "both") -> list[Account]:
    """The account applications an operation acts on: ss, bank or both."""
    names = list(ACCOUNTS) if which == "both" else [which]
    out = []
    for name in names:
        if name not in ACCOUNTS:
            raise LifeError(f"account must be ss, bank or both, not {which!r}")
        try:
            path, df = profile.role(ACCOUNTS[name])
        except KeyError:
            raise LifeError(f"profile {profile.name} has no {name} account") from None
        out.append(Account(name, path, df))
    return out


REASON_BYTES = 32


def _life(acct: Account, factor: bytes | Factors, state: str, reason: str, today: dt.date) -> list[ScriptItem]:
    try:
        size = len(reason.encode("gbk"))
    except UnicodeEncodeError:
        raise LifeError("the reason must be GBK text") from None
    if size > REASON_BYTES:
        raise LifeError(f"the reason takes {size} GBK bytes; the life record holds {REASON_BYTES}")
    lk = acct.key(KEY_MAINTENANCE, factor)
    p2 = (LIFE_SFI << 3) | 0x04
    rec = [(LIFE_TAG, encode("an", 1, state)), (DATE_TAG, encode("cn", 4, today.strftime("%Y%m%d"))),
           (REASON_TAG, encode("gbk", 32, reason))]
    return [Secured(0x04, 0xDC, acct.record_number(tag), p2, simple_record(tag, value), lk,
                    f"{acct.name}: life record {tag:02X}") for tag, value in rec]


def _block(acct: Account, factor: bytes | Factors, permanent: bool) -> Secured:
    return Secured(0x84, 0x1E, 0x00, 0x01 if permanent else 0x00, b"", acct.key(KEY_MAINTENANCE, factor),
                   f"{acct.name}: application block{' (permanent)' if permanent else ''}")


def _unblock(acct: Account, factor: bytes | Factors) -> Secured:
    return Secured(0x84, 0x18, 0x00, 0x00, b"", acct.key(KEY_MAINTENANCE, factor), f"{acct.name}: application unblock")


def life_script(op: str, profile: Profile, factor: bytes | Factors, which: str = "both", reason: str = "",
                today: dt.date | None = None) -> list[ScriptItem]:
    """The commands of one life operation: activate, report-loss, unreport, block, unblock, replace, cancel."""
    today = today or dt.date.today()
    out: list[ScriptItem] = []
    for acct in accounts(profile, which):
        out += acct.select()
        if op == "activate":
            out += _life(acct, factor, ACTIVE, reason or "activated", today)
        elif op == "report-loss":
            out += _life(acct, factor, LOST, reason or "loss reported", today) + [_block(acct, factor, False)]
        elif op == "unreport":
            out += [_unblock(acct, factor)] + acct.select() + _life(acct, factor, ACTIVE, reason or "loss report withdrawn", today)
        elif op == "block":
            out.append(_block(acct, factor, False))
        elif op == "unblock":
            out.append(_unblock(acct, factor))
        elif op in ("replace", "cancel"):
            # A card reported lost is blocked; lift that first so its life record can say why.
            state = REPLACED if op == "replace" else CANCELLED
            out += [_unblock(acct, factor)] + acct.select()
            out += _life(acct, factor, state, reason or op, today) + [_block(acct, factor, True)]
        else:
            raise LifeError(f"unknown operation {op!r}")
    return out


def pin_script(op: str, profile: Profile, factor: bytes | Factors, keys: SecurityModule, account: str = "ss",
               old: str = "", new: str = "") -> list[ScriptItem]:
    """PIN operations: change (old → new, no keys), reset (RELOAD PIN to new, issuer key), unblock."""
    (acct,) = accounts(profile, account)
    out: list[ScriptItem] = list(acct.select())
    if op == "change":
        out.append(Step(build(0x80, 0x5E, 0x01, 0x00, pin_bytes(old) + b"\xff" + pin_bytes(new)),
                        f"{acct.name}: change PIN", secret=True))
    elif op == "reset":
        value = pin_bytes(new)
        ref = acct.key(KEY_PIN_RELOAD, factor)
        # RELOAD PIN's MAC covers the new PIN alone, with a zero initial vector (FMCOS).
        out.append(Step(build(0x80, 0x5E, 0x00, 0x00, value + keys.mac(ref, b"", value)),
                        f"{acct.name}: reset PIN", secret=True))
    elif op == "unblock":
        out.append(Secured(0x84, 0x24, 0x00, 0x00, b"", acct.key(KEY_PIN_UNBLOCK, factor), f"{acct.name}: unblock PIN"))
    else:
        raise LifeError(f"unknown PIN operation {op!r}")
    return out


def perform(transport, script: list[ScriptItem], keys: SecurityModule) -> list[Exchange]:
    """Run an operation's commands; ScriptError names the step that the card refused."""
    return run(transport.transmit, script, keys)
