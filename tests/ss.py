"""Shared makers for social-security card tests: profiles, demo issuer keys, personalized cards."""

from functools import lru_cache

from cardos.card import Card
from cardos.nvm import Store
from personalize import cardholders, profile, virtual
from terminal.apdus import SSSE_NAME as _SSSE
from terminal.factors import Factors

SSSE_NAME = _SSSE.hex().upper()
SELECT_SSSE = "00A404000F" + SSSE_NAME


@lru_cache(maxsize=None)
def prof(name: str = "default"):
    return profile.load(name)


@lru_cache(maxsize=None)
def keys(name: str = "default"):
    return virtual.demo_issuer_keys(prof(name))


def key_file(path, passphrase: str, name: str = "default") -> str:
    """The demo issuer keys written as an encrypted key file (mode 600) under `passphrase`."""
    from personalize.keys import KeyRef, save_key_file
    provider = keys(name)
    save_key_file(path, {n: (provider.algorithm(KeyRef(n)), provider.value_for_plain_load(KeyRef(n)), 1)
                         for n in provider.names()}, passphrase, rsa=provider.rsa_keys())
    return str(path)


@lru_cache(maxsize=None)
def _template(name: str, holder_items: tuple = ()):
    holder = dict(cardholders.sample(), **dict(holder_items))
    return virtual.make(prof(name), holder, keys(name))


def card(profile_name: str = "default", **holder) -> Card:
    """A personalized card (a copy of a cached one, so tests stay fast and independent)."""
    t = _template(profile_name, tuple(sorted(holder.items())))
    c = Card(Store(dict(t.store.data)), t.config)
    c.power_on()
    return c


def factor(c: Card, name: str = "default") -> Factors:
    """The card's factors (ATR, and the region of its EF05 tag 01), without touching its session."""
    return _factors_without_moving(c, name)


def open_key(c: Card, name: str, role: str, key_id: int) -> int:
    """EXTERNAL AUTHENTICATE in the current DF with the role's external key key_id, as a terminal with the issuer keys."""
    from personalize.compiler import card_key
    from terminal.flows import external_authenticate
    from tests.util import tx
    _, df = prof(name).role(role)
    decl = next(k for k in df.keys if k.type == 0x39 and k.id == key_id)
    ref = card_key(decl, _factors_without_moving(c, name))
    return external_authenticate(lambda apdu, note="": tx(c, apdu), keys(name), ref, key_id)


def _factors_without_moving(c: Card, name: str = "default") -> Factors:
    """The factors of a card whose session must stay as it is: the region read from its EF05 store."""
    from terminal.factors import card_factor, city_factor
    path = prof(name).role("ssse")[0] + (0xEF05,)
    body = c.fs.body(path) or ()
    region = body[0][2:5].hex() if body and body[0][:1] == b"\x01" else ""
    return Factors(card_factor(c.atr), city_factor(region) if region.isdigit() else None)


def done_cards(journal) -> int:
    """Cards a SQLite journal file calls done (0 before it exists: connecting would create it)."""
    import sqlite3
    from pathlib import Path
    if not Path(journal).exists():
        return 0
    try:
        with sqlite3.connect(journal) as db:
            return db.execute("SELECT COUNT(*) FROM cards WHERE state = 'done'").fetchone()[0]
    except sqlite3.Error:
        return 0
