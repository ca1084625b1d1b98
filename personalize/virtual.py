"""Virtual cards made the way real ones are: a blank chip, initialized, then personalized."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from cardos.card import Card, CosConfig
from reader_bridge.transport import InProcess
from terminal.factors import card_factor

from . import cardholders
from .compile import FACTORY_KEY, TRANSPORT_KEY, init_script, perso_script
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


def demo_issuer_keys(profile: Profile) -> SoftwareKeys:
    """Published demo master keys for every name the profile uses: for tests and demos, never for real cards."""
    masters = {}
    for name in master_names(profile):
        value = FACTORY_KEY_VALUE if name == FACTORY_KEY else hashlib.sha256(f"sscard demo key:{name}".encode()).digest()[:16]
        masters[name] = (profile.algorithm if name != FACTORY_KEY else profile.config.key_algorithm, value, 1)
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


