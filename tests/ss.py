"""Shared makers for social-security card tests: profiles, demo issuer keys, personalized cards."""

from functools import lru_cache

from cardos.card import Card
from cardos.nvm import Store
from personalize import cardholders, profile, virtual

SSSE_NAME = "7378312E73682EC9E7BBE1B1A3D5CF"
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
                         for n in provider.names()}, passphrase)
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


def open_key(c: Card, name: str, role: str, key_id: int) -> int:
    """EXTERNAL AUTHENTICATE in the current DF with the role's external key key_id, as a terminal with the issuer keys."""
    from personalize.compile import card_key
    from tests.util import challenge, sw
    from cardos.apdu import build
    _, df = prof(name).role(role)
    decl = next(k for k in df.keys if k.type == 0x39 and k.id == key_id)
    ref = card_key(decl, c.atr[-8:])
    block = (challenge(c) + bytes(16))[: keys(name).algorithm(ref).block]
    return sw(c, build(0x00, 0x82, 0x00, key_id, keys(name).encrypt(ref, block)))


def factor(c: Card) -> bytes:
    return c.atr[-8:]
