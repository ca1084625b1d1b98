"""Card life as the applications keep it: a record file whose tag C1 says issued, active, lost….

[ours] The life file is the record EF with SFI 1C of an account application (SSSE, the bank
ADF); its record C1 holds one character: 0 issued, 1 active, 2 loss reported, 3 replaced,
4 cancelled. It is written only under MAC with the application's line-protection key.
"""

from __future__ import annotations

from dataclasses import replace

from cardos import sw
from cardos.command import Command
from cardos.sw import CardError

LIFE_SFI = 0x1C
LIFE_TAG = 0xC1
DATE_TAG = 0xC2
REASON_TAG = 0xC3
ISSUED, ACTIVE, LOST, REPLACED, CANCELLED = "0", "1", "2", "3", "4"
_LIFE_TAG = bytes([LIFE_TAG])
STATES = {ISSUED: "issued", ACTIVE: "active", LOST: "loss reported", REPLACED: "replaced", CANCELLED: "cancelled"}


def life_state(card, df=None) -> str | None:
    """The life state of the nearest account application at or above df (default: the current DF)."""
    path = df or card.session.current_df
    while len(path) > 1:
        for rec in card.fs.records_by_sfi(path, LIFE_SFI):
            if rec[:1] == _LIFE_TAG and len(rec) >= 3:
                return chr(rec[2])
        path = path[:-1]
    return None


def require_active(card) -> None:
    """Account operations (PIN use) answer 6985 unless the application is active."""
    state = life_state(card)
    if state is not None and state != ACTIVE:
        raise CardError(sw.CONDITIONS_NOT_SATISFIED, f"application is {STATES.get(state, state)}")


def wrap(table: dict[int, Command], ins: int, make) -> None:
    """Replace the handler of ins by make(previous_handler)."""
    old = table[ins]
    table[ins] = replace(old, handler=make(old.handler))
