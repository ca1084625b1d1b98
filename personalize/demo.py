"""The factory-blank card and a small demo card, both made by sending a card its own commands.

The keys here are published test keys, for demonstrations and tests only; a real card's keys
come from the operator's key file.
"""

from __future__ import annotations

from cardos.apdu import build
from cardos.card import Card, CosConfig
from cardos.crypto import Algorithm
from cardos.files import (KEY_EXTERNAL, KEY_INTERNAL, KEY_MAINTENANCE, KEY_PIN, KEY_PIN_RELOAD,
                          KEY_PIN_UNBLOCK, DedicatedFile, KeyFile, KeyRecord, TransparentEF,
                          VariableRecordEF)
from cardos.tlv import simple_record

from . import fmcos
from .compiler import FACTORY_KEY
from .fmcos import Step
from .keys import KeyRef, SoftwareKeys
from .script import Authenticate, ScriptItem, run
from reader_bridge.transport import InProcess

FACTORY_KEY_VALUE = b"\xff" * 16  # FMCOS factory key 00 of the MF

# Demo DF security levels: each credential sets its own state, so each access byte is exact.
PIN_STATE, READ_KEY_STATE, MASTER_STATE, MF_MASTER_STATE = 1, 2, 3, 0xF

DEMO_KEYS = {  # published test keys: never load these into a card that leaves the lab
    "mf_master": bytes.fromhex("3F003F003F003F00A5A5A5A5A5A5A5A5"),
    "mf_maintenance": bytes.fromhex("3F0036363F003636A5A5A5A5A5A5A5A5"),
    "df_master": bytes.fromhex("DF01390000000000A5A5A5A5A5A5A5A5"),
    "df_read": bytes.fromhex("DF01390100000000A5A5A5A5A5A5A5A5"),
    "df_maintenance": bytes.fromhex("DF01360000000000A5A5A5A5A5A5A5A5"),
    "df_unblock": bytes.fromhex("DF01370000000000A5A5A5A5A5A5A5A5"),
    "df_reload": bytes.fromhex("DF01380000000000A5A5A5A5A5A5A5A5"),
    "df_internal": bytes.fromhex("DF01340000000000A5A5A5A5A5A5A5A5"),
}
DEMO_PIN = bytes.fromhex("123456")
DEMO_DF_NAME = b"SSCARD.DEMO"
DEMO_DF = 0xDF01
DEMO_BINARY = 0x0001
DEMO_RECORDS = 0x0005


def _key(base: int, key_id: int, value: bytes, use: int, change: int, state: int = 0, tries: int = 3) -> KeyRecord:
    return KeyRecord(base, key_id, use, change, value, Algorithm.TDES, state, tries, tries)


def blank_script() -> list[ScriptItem]:
    """An empty chip as its vendor ships it: MF, key file, key 00 = FF…FF (erase/create after it)."""
    mf = DedicatedFile(0x3F00, size=0xFFFF, create_right=MF_MASTER_STATE, erase_right=MF_MASTER_STATE)
    return [
        Step(fmcos.create_file(mf), "create MF"),
        Step(fmcos.create_file(KeyFile(0x0000, size=0x80, df_short_id=0x01, add_right=MF_MASTER_STATE)),
             "create MF key file"),
        Step(fmcos.write_key(_key(KEY_EXTERNAL, 0x00, FACTORY_KEY_VALUE, 0xF0, MF_MASTER_STATE,
                                  MF_MASTER_STATE, tries=0xA)), "load the factory key 00", secret=True),
    ]


def demo_init_script() -> list[ScriptItem]:
    """Initialize a blank card into the demo layout: MF keys, one DF with keys, PIN and two EFs."""
    k = DEMO_KEYS
    exact = lambda s: (s << 4) | s  # noqa: E731 - access byte "exactly state s"
    df = DedicatedFile(DEMO_DF, size=0x600, create_right=exact(MASTER_STATE),
                       erase_right=exact(MASTER_STATE), name=DEMO_DF_NAME)
    binary = TransparentEF(DEMO_BINARY, read_right=0xF1, write_right=0xF2, size=32)
    records = VariableRecordEF(DEMO_RECORDS, read_right=0x00, write_right=0xF2, size=0x60)
    return [
        Authenticate(0x00, KeyRef(FACTORY_KEY), "authenticate with the factory key"),
        Step(fmcos.erase_df(), "erase the card"),
        Step(fmcos.create_file(KeyFile(0x0000, size=0x100, add_right=MF_MASTER_STATE)), "create MF key file"),
        Step(fmcos.write_key(_key(KEY_EXTERNAL, 0x00, k["mf_master"], 0xF0, MF_MASTER_STATE, MF_MASTER_STATE)),
             "load MF master key", secret=True),
        Step(fmcos.write_key(_key(KEY_MAINTENANCE, 0x00, k["mf_maintenance"], 0xF0, MF_MASTER_STATE)),
             "load MF maintenance key", secret=True),
        Step(fmcos.create_file(df), "create demo DF"),
        Step(fmcos.select_fid(DEMO_DF), "select demo DF"),
        Step(fmcos.create_file(KeyFile(0x0000, size=0x140, df_short_id=0x80 | 0x15, add_right=exact(MASTER_STATE))),
             "create DF key file"),
        *(Step(fmcos.write_key(rec), f"load {note}", secret=True) for rec, note in (
            (_key(KEY_EXTERNAL, 0x00, k["df_master"], 0xF0, exact(MASTER_STATE), MASTER_STATE), "DF master key"),
            (_key(KEY_EXTERNAL, 0x01, k["df_read"], 0xF0, exact(MASTER_STATE), READ_KEY_STATE), "read key 01"),
            (_key(KEY_MAINTENANCE, 0x00, k["df_maintenance"], 0xF0, exact(MASTER_STATE)), "line-protection key"),
            (_key(KEY_PIN_UNBLOCK, 0x00, k["df_unblock"], 0xF0, exact(MASTER_STATE)), "PIN unblock key"),
            (_key(KEY_PIN_RELOAD, 0x00, k["df_reload"], 0xF0, exact(MASTER_STATE)), "PIN reload key"),
            (KeyRecord(KEY_INTERNAL, 0x00, 0xF0, exact(MASTER_STATE), k["df_internal"], Algorithm.TDES,
                       alg_byte=0x01), "internal authentication key"),
            (KeyRecord(KEY_PIN, 0x00, 0xF0, 0xEF, DEMO_PIN, next_state=PIN_STATE, max_tries=6, tries_left=6), "PIN"),
        )),
        Step(fmcos.create_file(binary), "create binary EF 0001"),
        Step(fmcos.create_file(records), "create record EF 0005"),
        Step(build(0x00, 0xD6, 0x80 | DEMO_BINARY, 0x00, b"sscard demo data"), "write binary EF"),
        Step(_append(DEMO_RECORDS, simple_record(0x01, b"DEMO0001")), "append record 01"),
        Step(_append(DEMO_RECORDS, simple_record(0x02, b"2.00")), "append record 02"),
    ]


def demo_keys() -> SoftwareKeys:
    """A key provider over the demo keys (undiversified), named as in DEMO_KEYS plus the factory key."""
    keys = {name: (Algorithm.TDES, value, 1) for name, value in DEMO_KEYS.items()}
    keys[FACTORY_KEY] = (Algorithm.TDES, FACTORY_KEY_VALUE, 1)
    return SoftwareKeys(keys)


def _append(fid: int, record: bytes) -> bytes:
    return build(0x00, 0xE2, 0x00, (fid & 0x1F) << 3, record)


def blank_card(config: CosConfig | None = None) -> Card:
    """A factory-blank card, made by sending an empty chip its vendor's commands."""
    card = Card(config=config)
    run(InProcess(card).transmit, blank_script())
    card.power_on()
    return card


def demo_card(config: CosConfig | None = None) -> Card:
    """The demo card: a blank card initialized by demo_init_script."""
    card = blank_card(config)
    run(InProcess(card).transmit, demo_init_script(), demo_keys())
    card.power_on()
    return card
