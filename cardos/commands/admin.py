"""CREATE FILE, WRITE KEY, ERASE DF (FMCOS 2.0, spec §3b) and the PBOC blocking commands."""

from __future__ import annotations

from .. import sw
from ..apdu import Apdu
from ..command import CARD_BLOCKED
from ..crypto import unseal
from ..files import KEY_EXTERNAL, KEY_MAINTENANCE, MF_FID, DedicatedFile, KeyRecord, parse_create
from ..filesystem import MF, AppState
from ..sw import CardError

ADD_KEY = 0x01


def create_file(card, cmd: Apdu) -> bytes:
    """CREATE FILE 80 E0 FID: a DF, key file or EF under the current DF, within its space."""
    fid = (cmd.p1 << 8) | cmd.p2
    if fid in (0xFFFF, 0x3FFF):
        raise CardError(sw.WRONG_P1P2, f"FID {fid:04X} is reserved")
    if not cmd.lc_present:
        raise CardError(sw.WRONG_LENGTH, "no file description")
    spec = parse_create(fid, cmd.data)
    if fid == MF_FID:
        if not isinstance(spec, DedicatedFile):
            raise CardError(sw.WRONG_DATA, "3F00 is the MF")
        if card.fs.exists(MF):
            raise CardError(sw.WRONG_P1P2, "MF exists")
        card.fs.create(MF, spec)
        card.enter_df(MF)
        return b""
    if not card.fs.exists(MF):
        raise CardError(sw.FILE_NOT_FOUND, "create the MF first")
    df = card.session.current_df
    card.require(card.fs.spec(df).create_right, "create")
    card.fs.create(df, spec)
    return b""


def write_key(card, cmd: Apdu) -> bytes:
    """WRITE KEY: 80 D4 01 adds, 80 D4 type replaces; 84 D4 carries it encrypted and MACed."""
    df = card.session.current_df
    kf = card.fs.key_file(df)
    if kf is None:
        raise CardError(sw.FILE_NOT_FOUND, "the DF has no key file")
    data = cmd.data
    if cmd.secured:
        # Loaded under the DF's main external-authentication key (39/00), spec §3b.
        body, _, master = card.check_mac(cmd, KEY_EXTERNAL, 0x00)
        try:
            data = unseal(master.algorithm, master.value, body)
        except ValueError:
            raise CardError(sw.WRONG_DATA, "key record does not decrypt") from None
    if not data:
        raise CardError(sw.WRONG_LENGTH, "no key record")
    rec = KeyRecord.parse(cmd.p2, data, card.config.key_algorithm)
    # A valid MAC under the DF's master key stands for the add and change rights, as it
    # does for file writes: that is how an HSM loads keys and PINs into issued cards.
    if cmd.p1 == ADD_KEY:
        if not cmd.secured:
            card.require(card.fs.spec(kf).add_right, "add key")
        if card.fs.key(df, rec.base, rec.id) is not None:
            raise CardError(sw.WRONG_P1P2, "key exists; replace it with P1 = its type")
        if rec.cost() > card.fs.key_space_left(df):
            raise CardError(sw.NOT_ENOUGH_MEMORY, "key file full")
    else:
        old = card.fs.key(df, cmd.p1 & 0x3F, cmd.p2)
        if old is None:
            raise CardError(sw.REFERENCE_NOT_FOUND, "no such key to replace")
        if rec.base != old.base or len(rec.value) != len(old.value):
            raise CardError(sw.WRONG_DATA, "a replacement keeps the key's type and length")
        if not cmd.secured:
            if (old.needs_enc_to_change or old.needs_mac_to_change) and not card.session.fresh:
                raise CardError(sw.SECURITY_NOT_SATISFIED, "this key is changed under secure messaging only")
            card.require(old.change_right, "change key")
    card.fs.put_key(df, rec)
    return b""


def erase_df(card, cmd: Apdu) -> bytes:
    """ERASE DF: remove every file and key under the current DF (on the MF: the whole card)."""
    if cmd.p1 or cmd.p2 or cmd.lc_present:
        raise CardError(sw.WRONG_P1P2 if cmd.p1 or cmd.p2 else sw.WRONG_LENGTH)
    df = card.session.current_df
    if not card.fs.exists(df):
        raise CardError(sw.FILE_NOT_FOUND)
    card.require(card.fs.spec(df).erase_right, "erase")
    card.fs.erase(df)
    card.session.current_ef = None
    card.session.record = None
    card.session.fresh = True
    return b""


def _maintenance_mac(card, cmd: Apdu) -> None:
    body, _, _ = card.check_mac(cmd, KEY_MAINTENANCE, 0x00)
    if body:
        raise CardError(sw.WRONG_LENGTH, "this command carries only a MAC")


def application_block(card, cmd: Apdu) -> bytes:
    """APPLICATION BLOCK 84 1E: P2 00 temporarily (6A81 on SELECT), 01 permanently (9303)."""
    if cmd.p1 or cmd.p2 not in (0x00, 0x01):
        raise CardError(sw.WRONG_P1P2)
    df = card.session.current_df
    if df == MF:
        raise CardError(sw.CONDITIONS_NOT_SATISFIED, "the MF is blocked with CARD BLOCK")
    _maintenance_mac(card, cmd)
    card.fs.set_app_state(df, AppState.LOCKED if cmd.p2 else AppState.BLOCKED)
    return b""


def application_unblock(card, cmd: Apdu) -> bytes:
    """APPLICATION UNBLOCK 84 18: lift a temporary block of the current application."""
    if cmd.p1 or cmd.p2:
        raise CardError(sw.WRONG_P1P2)
    df = card.session.current_df
    state = card.fs.app_state(df)
    if state is AppState.LOCKED:
        raise CardError(sw.APPLICATION_LOCKED)
    _maintenance_mac(card, cmd)
    card.fs.set_app_state(df, AppState.ACTIVE)
    return b""


def card_block(card, cmd: Apdu) -> bytes:
    """CARD BLOCK 84 16: every later command answers 6A81; there is no way back."""
    if cmd.p1 or cmd.p2:
        raise CardError(sw.WRONG_P1P2)
    _maintenance_mac(card, cmd)
    card.store.put(CARD_BLOCKED, True)
    return b""
