"""The card: one pure object that takes command APDUs and returns answers, with no I/O."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from . import apdu as apdu_mod
from . import sw
from .access import ALWAYS, SecurityState, permits
from .apdu import Apdu
from .command import CARD_BLOCKED, Command, Reply
from .commands import COMMANDS
from .crypto import Algorithm, mac4, mac_equal
from .files import MAX_ANSWER, KeyRecord
from .filesystem import MF, AppState, FileSystem, Path
from .nvm import PowerLoss, Store
from .plugins import check_hooks, hooks, load
from .sw import CardError

# 3B 6D 00 00 + 13 historical bytes: the shape of the ATRs in spec §3.
DEFAULT_ATR = bytes.fromhex("3B6D0000008C544CB386844116018593CA")
_OK_ANSWER = sw.OK.to_bytes(2, "big")


@dataclass(frozen=True)
class CosConfig:
    """Switches a card profile sets on the COS: capacity, ATR and the answer habits it copies."""

    capacity: int = 32768
    atr: bytes = DEFAULT_ATR
    t0_get_response: bool = False
    wrong_mac_sw: int = sw.MAC_WRONG
    key_algorithm: Algorithm = Algorithm.TDES
    applets: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 1024 <= self.capacity <= 0xFFFF + 11:
            raise ValueError(f"capacity {self.capacity} out of range 1024..65546")
        if not 2 <= len(self.atr) <= 33 or self.atr[0] not in (0x3B, 0x3F):
            raise ValueError("ATR must be 2..33 bytes starting 3B or 3F")
        if self.wrong_mac_sw not in (sw.MAC_WRONG, sw.FMCOS_MAC_WRONG):
            raise ValueError("wrong-MAC status word must be 6988 or 9302")
        check_hooks(self.hooks)


@dataclass
class Session:
    """RAM state, lost at reset: current files, security levels, challenge, pending answer."""

    current_df: Path = MF
    current_ef: Path | None = None
    record: int | None = None
    mf_state: int = 0
    df_state: int = 0
    fresh: bool = False
    challenge: bytes | None = None
    pending: bytes = b""



APPLET_GROUP = "sscard.applets"


class UnknownApplet(LookupError):
    """A card names an applet no installed package provides."""


def applet_installer(name: str) -> Callable[[dict[int, Command]], None]:
    """The function that adds an applet's commands to a command table, found by entry point."""
    try:
        return load(APPLET_GROUP, name)
    except LookupError:
        raise UnknownApplet(f"applet {name!r} is not installed (entry point group {APPLET_GROUP})") from None


class Card:
    """An ISO 7816 / FMCOS 2.0 CPU card: transmit(APDU) -> answer, power_on() -> ATR."""

    def __init__(self, store: Store | None = None, config: CosConfig | None = None,
                 rng: Callable[[int], bytes] = os.urandom,
                 commands: dict[int, Command] | None = None) -> None:
        self.config = config or CosConfig()
        self.store = store if store is not None else Store()
        self.fs = FileSystem(self.store, self.config.capacity)
        self.rng = rng
        self.commands: dict[int, Command] = dict(COMMANDS)
        for name in self.config.applets:
            applet_installer(name)(self.commands)
        self.commands.update(commands or {})
        self.hooks = hooks(self.config.hooks)
        self.session = Session()
        self.powered = False

    # -- power ----------------------------------------------------------------------------
    def power_on(self) -> bytes:
        """Cold or warm reset: finish or drop a torn commit, clear RAM, answer the ATR."""
        self.store.recover()
        self.session = Session()
        self.session.fresh = self.fs.key_file(MF) is None
        self.powered = True
        return self.config.atr

    def power_off(self) -> None:
        self.store.rollback()
        self.session = Session()
        self.powered = False

    @property
    def atr(self) -> bytes:
        return self.config.atr

    # -- the one entry point --------------------------------------------------------------
    def transmit(self, raw: bytes) -> bytes:
        """Execute one command APDU and return its answer: data ‖ SW1 SW2."""
        if not self.powered:
            self.power_on()
        session = self.session
        pending = session.pending
        if pending:             # any command but GET RESPONSE drops an answer left waiting
            session.pending = b""
        try:
            # A reader hands bytes already: the copy only for a bytearray or memoryview.
            cmd = apdu_mod.parse(raw if raw.__class__ is bytes else bytes(raw))
            data = self._dispatch(cmd, pending)
            answer = self._deliver(cmd, data) if data else _OK_ANSWER
            store = self.store
            if store.staged:
                store.commit()
            return answer
        except CardError as e:
            self.store.rollback()
            return e.sw.to_bytes(2, "big")
        except PowerLoss:
            self.powered = False
            self.session = Session()
            raise
        except Exception:  # noqa: BLE001 - the card must answer something, never crash the reader
            self.store.rollback()
            return b"\x6f\x00"

    def _dispatch(self, cmd: Apdu, pending: bytes) -> bytes:
        entry = self.commands.get(cmd.ins)
        cla = cmd.cla
        # A class an instruction declares is taken as it is (a PSAM's proprietary BF, say).
        if entry is None or cla not in entry.classes:
            if cla == 0xFF or cla & 0x70 or cla & 0x08:
                raise CardError(sw.CLA_NOT_SUPPORTED)
            if cmd.channel:
                raise CardError(sw.CHANNEL_NOT_SUPPORTED)
            if entry is None:
                raise CardError(sw.INS_NOT_SUPPORTED)
            raise CardError(sw.CLA_NOT_SUPPORTED)
        # Between commands nothing is staged: the committed flag is the flag.
        if self.store.data.get(CARD_BLOCKED):
            raise CardError(sw.FUNCTION_NOT_SUPPORTED, "card blocked")
        if not entry.while_blocked and self.fs.worst_state(self.session.current_df):
            self._refuse_if_blocked()
        if cmd.ins != 0xC0:
            return entry.handler(self, cmd)
        self.session.pending = pending
        try:
            return entry.handler(self, cmd)
        except CardError:
            self.session.pending = pending
            raise

    def _deliver(self, cmd: Apdu, data: bytes | Reply) -> bytes:
        if isinstance(data, Reply):
            return data.data + data.sw.to_bytes(2, "big")
        if len(data) > MAX_ANSWER:
            # No Le asks for more than 256 bytes: a 6Cxx here would send the terminal round in circles.
            raise CardError(sw.WRONG_LENGTH, f"an answer of {len(data)} bytes does not fit a short APDU")
        if cmd.le is not None and cmd.le < len(data):
            raise CardError(sw.wrong_le(len(data)))
        if self.config.t0_get_response and cmd.lc_present and cmd.ins != 0xC0:
            # T=0 habit: a command that carried data announces its answer for GET RESPONSE.
            self.session.pending = data
            return sw.more_data(len(data)).to_bytes(2, "big")
        return data + _OK_ANSWER

    def _refuse_if_blocked(self) -> None:
        state = self.app_state()
        if state is AppState.LOCKED:
            raise CardError(sw.APPLICATION_LOCKED)
        if state is AppState.BLOCKED:
            raise CardError(sw.APPLICATION_BLOCKED)

    def app_state(self, df: Path | None = None) -> AppState:
        """The worst life state of df (default: the current DF) and the DFs above it."""
        return self.fs.worst_state(df or self.session.current_df)

    # -- services for handlers ------------------------------------------------------------
    @property
    def security(self) -> SecurityState:
        s = self.session
        return SecurityState(s.mf_state, s.df_state, s.fresh)

    def require(self, right: int, what: str = "") -> None:
        """Raise 6982 unless the current security state admits the access byte."""
        s = self.session
        if right == ALWAYS or s.fresh or permits(right, s.mf_state, s.df_state):
            return
        if not any(h.waives(what) for h in self.hooks):
            raise CardError(sw.SECURITY_NOT_SATISFIED, what)

    def enter_df(self, path: Path) -> None:
        """Make a DF current: its security state starts at 0 and its rights apply if it has a key file."""
        s = self.session
        s.current_df, s.current_ef, s.record = path, None, None
        s.df_state = 0
        if path == MF:
            s.mf_state = 0
        s.fresh = self.fs.key_file(path) is None

    def raise_state(self, level: int) -> None:
        s = self.session
        s.df_state = level & 0x0F
        if s.current_df == MF:
            s.mf_state = s.df_state

    def take_challenge(self) -> bytes:
        """The last GET CHALLENGE, consumed by this use; 6984 when there is none."""
        chal, self.session.challenge = self.session.challenge, None
        if chal is None:
            raise CardError(sw.REFERENCE_DATA_UNUSABLE, "no challenge")
        return chal

    def find_key(self, base_type: int, key_id: int) -> tuple[Path, KeyRecord]:
        """The key of that type and id in the current DF or, failing that, the nearest DF above."""
        df = self.session.current_df
        while df:
            rec = self.fs.key(df, base_type, key_id)
            if rec is not None:
                return df, rec
            df = df[:-1]
        raise CardError(sw.REFERENCE_NOT_FOUND, f"no key {base_type:02X}/{key_id:02X}")

    def try_credential(self, df: Path, key: KeyRecord, ok: bool, fail_sw: int | None = None) -> None:
        """Count one use of a PIN or key: decrement committed before the verdict, restored on success."""
        if not key.counted:
            if not ok:
                raise CardError(fail_sw or sw.SECURITY_NOT_SATISFIED)
            return
        if not key.tries_left:
            raise CardError(sw.BLOCKED)
        left = key.tries_left - 1
        for hook in self.hooks:
            left = hook.tries_left(key, left)
        self.fs.write_key(df, key.with_tries(left))
        if not ok:
            raise CardError(fail_sw if fail_sw is not None else sw.tries_left(left))
        if left != key.max_tries:
            # A record is immutable: one whose counter was full already is its own restored copy.
            self.fs.write_key(df, key if key.tries_left == key.max_tries else key.with_tries(key.max_tries))

    def check_mac(self, cmd: Apdu, base_type: int, key_id: int) -> tuple[bytes, Path, KeyRecord]:
        """Verify a command's trailing MAC4 (spec §3); return its data without the MAC, and the key."""
        if len(cmd.data) < 4:
            raise CardError(sw.WRONG_LENGTH, "secured command without MAC")
        df, key = self.find_key(base_type, key_id)
        if key.blocked:
            raise CardError(sw.BLOCKED)
        body, mac = cmd.data[:-4], cmd.data[-4:]
        chal = self.take_challenge()
        expected = mac4(key.algorithm, key.value, chal, cmd.header + bytes([len(cmd.data)]) + body)
        self.try_credential(df, key, mac_equal(mac, expected), self.config.wrong_mac_sw)
        return body, df, self.fs.key(df, key.base, key.id)
