"""Virtual cards made the way real ones are: a blank chip, initialized, then personalized."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace

from cardos.card import Card, CosConfig
from reader_bridge.transport import InProcess
from terminal.factors import card_factor

from . import cardholders
from .compiler import FACTORY_KEY, TRANSPORT_KEY, init_script, perso_script
from .demo import FACTORY_KEY_VALUE
from .demo import blank_script
from .keys import SoftwareKeys
from .profile import Profile
from .script import run


def chip_serial(seed: str) -> bytes:
    """8 bytes standing for a chip's serial number (the ATR's last historical bytes)."""
    return hashlib.sha256(f"sscard chip serial:{seed}".encode()).digest()[:8]


def factor(atr: bytes) -> bytes:
    """The card's diversification factor: the ATR's last 8 bytes, as terminals and PSAMs take it."""
    return card_factor(atr)


def config_for(profile: Profile, serial: bytes) -> CosConfig:
    """The profile's COS settings for one chip: its ATR ends in the chip's serial."""
    atr = profile.config.atr
    return replace(profile.config, atr=atr[:-8] + serial)


def blank(profile: Profile, serial: bytes) -> Card:
    """A factory-blank virtual chip of the profile's COS (MF, factory key 00 = FF…FF)."""
    card = Card(config=config_for(profile, serial))
    run(InProcess(card).transmit, blank_script(), SoftwareKeys({}))
    card.power_on()
    return card


def master_names(profile: Profile) -> list[str]:
    """Every issuer master key a profile's cards derive from, plus the factory and transport keys."""
    names = {k.master for _, df in profile.walk() for k in df.keys if k.master}
    return sorted(names | {FACTORY_KEY, TRANSPORT_KEY})


def key_algorithm(profile: Profile, name: str):
    """The algorithm of a master key: the COS's for the vendor's factory key, the profile's for the issuer's."""
    return profile.config.key_algorithm if name == FACTORY_KEY else profile.algorithm


def demo_issuer_keys(profile: Profile) -> SoftwareKeys:
    """Published demo master keys for every name the profile uses: for tests and demos, never for real cards."""
    masters = {}
    for name in master_names(profile):
        value = FACTORY_KEY_VALUE if name == FACTORY_KEY else hashlib.sha256(f"sscard demo key:{name}".encode()).digest()[:16]
        masters[name] = (key_algorithm(profile, name), value, 1)
    from .emv_keys import DEMO
    return SoftwareKeys(masters, DEMO)


def initialize(card: Card, profile: Profile, keys) -> None:
    """Run the profile's initialization script on a blank card."""
    run(InProcess(card).transmit, init_script(profile), keys)
    card.power_on()


def personalize(card: Card, profile: Profile, holder: dict[str, str], keys) -> None:
    """Run the personalization script of one cardholder on an initialized card."""
    values = cardholders.values(holder, profile, factor(card.atr))
    run(InProcess(card).transmit, perso_script(profile, values, factor(card.atr)), keys)
    card.power_on()


def make(profile: Profile, holder: dict[str, str], keys, serial: bytes | None = None) -> Card:
    """A personalized virtual card: blank chip → initialization → personalization."""
    card = blank(profile, serial or chip_serial(holder.get("card_number", "")))
    initialize(card, profile, keys)
    personalize(card, profile, holder, keys)
    return card




def parse_serial(text: str) -> bytes:
    """A chip serial given in hex: the 8 bytes that end the ATR."""
    try:
        chip = bytes.fromhex(text)
    except ValueError:
        chip = b""
    if len(chip) != 8:
        raise ValueError(f"--serial {text!r}: 8 bytes of hex are needed")
    return chip


def issued(profile: Profile, holder: dict[str, str], keys, serial: bytes, activate: bool = False) -> Card:
    """A personalized virtual card, activated as the bank counter does when asked."""
    from . import lifecycle
    card = make(profile, holder, keys, serial)
    if activate:
        lifecycle.perform(InProcess(card), lifecycle.life_script("activate", profile, factor(card.atr)), keys)
    return card


def new_masters(profile: Profile, demo: bool) -> tuple[dict, object]:
    """The master keys and EMV RSA keys of a new key file: the published demo ones, or random ones
    (the factory key is always the vendor's, which the blank chip is shipped with)."""
    from . import emv_keys
    from .keys import KeyRef
    if demo:
        provider = demo_issuer_keys(profile)
        return ({n: (provider.algorithm(KeyRef(n)), provider.value_for_plain_load(KeyRef(n)), 1)
                 for n in provider.names()}, provider.rsa_keys())
    return ({n: (profile.algorithm, FACTORY_KEY_VALUE if n == FACTORY_KEY else os.urandom(16), 1)
             for n in master_names(profile)}, emv_keys.generate())


def phase_script(phase: str, profile: Profile, holder: dict[str, str], atr: bytes | None = None) -> list:
    """The script of a phase: initialization, or one cardholder's personalization for a card's ATR
    (by default the ATR of the virtual card made for that cardholder)."""
    if phase == "init":
        return init_script(profile)
    atr = atr or config_for(profile, chip_serial(holder.get("card_number", ""))).atr
    values = cardholders.values(holder, profile, card_factor(atr))
    return perso_script(profile, values, card_factor(atr))
