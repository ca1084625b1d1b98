"""Making a virtual PSAM from the issuer key file and the profile's key table (psam.md §2).

A blank chip of its own (own ATR, T=0 answers) gets, the way a card is initialized: the PSAM
application DF (AID D15600000590), its terminal number (EF 0016), a key directory (usage, index,
key, levels; never readable) and the master keys as FMCOS DES keys. A card personalized from
the same key file and this PSAM agree on every key both know.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from applets.psam import DIRECTORY_SFI, Entry
from cardos.apdu import build
from cardos.card import Card, CosConfig
from cardos.crypto import ALGORITHM_IDS
from cardos.files import KEY_DES_ENC, DedicatedFile, KeyFile, KeyRecord, TransparentEF, VariableRecordEF
from reader_bridge.transport import InProcess
from terminal.psam import PsamSecurityModule
from terminal.security import KeyRef, SecurityModule

from . import fmcos
from .compiler import FACTORY_KEY
from .demo import MF_MASTER_STATE, blank_script
from .fmcos import Step
from .profile import Profile
from .script import Authenticate, KeyLoad, ScriptItem, run

TERMINAL_NUMBER_FID = 0x0016
DIRECTORY_FID = 0x0000 | DIRECTORY_SFI
ALWAYS, NEVER = 0x00, 0xEF
KEY_RECORD_PREFIX = 5


class PsamError(ValueError):
    """A PSAM cannot be made: no key table, a key the file lacks, a region that is no region."""


def terminal_number(region: str, serial: bytes) -> bytes:
    """6 bytes: the region (BCD) ‖ three bytes of the chip serial [ours]."""
    if len(region) != 6 or not region.isdigit():
        raise PsamError(f"--region {region!r}: a 6-digit region code is needed (e.g. 330300)")
    return bytes.fromhex(region) + serial[-3:]


def psam_serial(seed: str) -> bytes:
    return hashlib.sha256(f"sscard psam serial:{seed}".encode()).digest()[:8]


def config(profile: Profile, serial: bytes) -> CosConfig:
    decl = _decl(profile)
    return replace(CosConfig(), atr=decl.atr + serial, t0_get_response=True, key_algorithm=profile.algorithm,
                   applets=("psam",))


def _decl(profile: Profile):
    if profile.psam is None or not profile.psam.keys:
        raise PsamError(f"profile {profile.name} has no psam key table")
    return profile.psam


def init_script(profile: Profile, region: str, serial: bytes) -> list[ScriptItem]:
    """The commands that turn a blank chip into the profile's PSAM."""
    decl = _decl(profile)
    alg_byte = ALGORITHM_IDS[profile.algorithm]
    records = [Entry(e.slot.usage, e.slot.index, n, e.levels).record() for n, e in enumerate(decl.keys, 1)]
    size = sum(len(r) + 1 for r in records) + 8
    key_space = len(decl.keys) * (16 + 8) + 16
    df = DedicatedFile(decl.fid, size=0x400, create_right=NEVER, erase_right=MF_MASTER_STATE,
                       name=decl.aid)
    out: list[ScriptItem] = [
        Authenticate(0x00, KeyRef(FACTORY_KEY), "authenticate with the factory key"),
        Step(fmcos.create_file(df), "create the PSAM application"),
        Step(fmcos.select_fid(decl.fid), "select it"),
        Step(fmcos.create_file(KeyFile(0x0000, size=key_space, df_short_id=0x80 | DIRECTORY_SFI, add_right=NEVER)),
             "key file"),
        Step(fmcos.create_file(TransparentEF(TERMINAL_NUMBER_FID, ALWAYS, NEVER, size=6)), "terminal number EF"),
        Step(build(0x00, 0xD6, 0x80 | (TERMINAL_NUMBER_FID & 0x1F), 0x00, terminal_number(region, serial)),
             "terminal number"),
        Step(fmcos.create_file(VariableRecordEF(DIRECTORY_FID, NEVER, NEVER, size=size)), "key directory"),
    ]
    out += [Step(build(0x00, 0xE2, 0x00, DIRECTORY_SFI << 3, r), f"key table entry {n}") for n, r in enumerate(records, 1)]
    for n, e in enumerate(decl.keys, 1):
        prefix = KeyRecord(KEY_DES_ENC, n, ALWAYS, NEVER, bytes(16), profile.algorithm, version=1,
                           alg_byte=alg_byte).write_data()[:KEY_RECORD_PREFIX]
        out.append(KeyLoad(0x01, n, prefix, KeyRef(e.master), None,
                           f"key {e.slot.usage:02X}/{e.slot.index:02X} = {e.master}"))
    return out


def make(profile: Profile, keys: SecurityModule, region: str, serial: bytes) -> Card:
    """A virtual PSAM holding the profile's key table, its masters taken from the issuer keys."""
    card = Card(config=config(profile, serial))
    run(InProcess(card).transmit, blank_script(), keys)
    card.power_on()
    run(InProcess(card).transmit, init_script(profile, region, serial), keys)
    card.power_on()
    return card


def security_module(transport, profile: Profile) -> PsamSecurityModule:
    """The SecurityModule a terminal uses with this profile's PSAM in a reader."""
    decl = _decl(profile)
    return PsamSecurityModule(transport, decl.slots(), profile.algorithm, decl.aid)
