"""The PSAM application (psam.md §2): a security module card that computes card cryptograms and MACs.

Its DF holds the issuer master keys (FMCOS DES keys, type 30) and a key directory (record EF,
SFI 1A, never readable) whose records map a key usage and index to a key and the number of
diversification levels the key must be given. Commands:
- 80 1A P1 P2 (DES INIT): P1 usage, P2 index, data = one 8-byte factor per level, lowest first;
  the session key is derived from the highest level down. Fewer factors than the key's levels
  are refused, so no card-level key above the card's own ever leaves the PSAM as a cryptogram.
- BF DE P1 P2 (public SSC terminal form): factors ‖ the card's 8-byte random; a DES INIT.
- 80 FA P1 00 (DES CRYPT): b1 MAC (else encrypt), b2 more blocks follow, b3 initial value first.
- SELECT P1 02 of a DF FID under the current DF, as vendor samples send it (00A4020002DF01).
"""

from __future__ import annotations

from dataclasses import dataclass

from cardos import sw
from cardos.apdu import Apdu
from cardos.command import Command
from cardos.crypto import Algorithm, cbc_mac, diversify_levels, encrypt_ecb, mac4
from cardos.files import KEY_DES_ENC, DedicatedFile
from cardos.sw import CardError

from .life import wrap

DIRECTORY_SFI = 0x1A
DIRECTORY_TAG = 0xC0
FACTOR = 8
MAC, MORE, WITH_IV = 0x01, 0x02, 0x04
MAX_LEVELS = 4                        # card, city, province and one session level (process)
RANDOM_LEN = 8


def install(table: dict[int, Command]) -> None:
    """Add the PSAM commands to a COS command table."""
    table[0x1A] = Command(des_init, frozenset({0x80}))
    table[0xFA] = Command(des_crypt, frozenset({0x80}))
    table[0xDE] = Command(ssc_init, frozenset({0xBF}))
    wrap(table, 0xA4, _select_df_by_p1_02)


@dataclass(frozen=True)
class Entry:
    """One directory record: usage ‖ index ‖ key id ‖ levels."""

    usage: int
    index: int
    key_id: int
    levels: int

    def record(self) -> bytes:
        return bytes((DIRECTORY_TAG, 4, self.usage, self.index, self.key_id, self.levels))


@dataclass
class Crypt:
    """RAM state after DES INIT: the session key, and a MAC chain in progress."""

    algorithm: Algorithm
    key: bytes
    chain: bytes | None = None


def _entry(card, usage: int, index: int) -> Entry:
    ef = card.fs.ef_by_sfi(card.session.current_df, DIRECTORY_SFI)
    for rec in (card.fs.body(ef) if ef is not None else ()):
        if len(rec) == 6 and rec[0] == DIRECTORY_TAG and rec[2] == usage and rec[3] == index:
            return Entry(rec[2], rec[3], rec[4], rec[5])
    raise CardError(sw.REFERENCE_NOT_FOUND, f"no key for usage {usage:02X} index {index:02X}")


def _init(card, usage: int, index: int, factors: bytes) -> None:
    card.session.psam = None
    entry = _entry(card, usage, index)
    if len(factors) % FACTOR or not entry.levels <= len(factors) // FACTOR <= MAX_LEVELS:
        raise CardError(sw.WRONG_LENGTH, f"this key takes {entry.levels} to {MAX_LEVELS} factors of 8 bytes")
    rec = card.fs.key(card.session.current_df, KEY_DES_ENC, entry.key_id)
    if rec is None:
        raise CardError(sw.REFERENCE_NOT_FOUND, f"directory names key {entry.key_id:02X}, which is missing")
    card.require(rec.use_right, "key use")
    levels = [factors[i:i + FACTOR] for i in range(0, len(factors), FACTOR)]
    card.session.psam = Crypt(rec.algorithm, diversify_levels(rec.algorithm, rec.value, levels))


def des_init(card, cmd: Apdu) -> bytes:
    """DES INIT 80 1A: derive the session key for (usage, index) from the factors."""
    if not cmd.lc_present:
        raise CardError(sw.WRONG_LENGTH, "DES INIT needs the factors")
    _init(card, cmd.p1, cmd.p2, cmd.data)
    return b""


def ssc_init(card, cmd: Apdu) -> bytes:
    """BF DE: factors ‖ the card's random; the same derivation as DES INIT."""
    if not cmd.lc_present or len(cmd.data) < FACTOR + RANDOM_LEN:
        raise CardError(sw.WRONG_LENGTH, "BF DE takes factors and the card's 8-byte random")
    _init(card, cmd.p1, cmd.p2, cmd.data[:-RANDOM_LEN])
    return b""


def des_crypt(card, cmd: Apdu) -> bytes:
    """DES CRYPT 80 FA: encrypt whole blocks, or MAC (in one command or in a chain of them)."""
    if cmd.p2 != 0 or cmd.p1 & ~(MAC | MORE | WITH_IV):
        raise CardError(sw.WRONG_P1P2)
    state: Crypt | None = getattr(card.session, "psam", None)
    if state is None:
        raise CardError(sw.CONDITIONS_NOT_SATISFIED, "DES CRYPT before DES INIT")
    if not cmd.lc_present:
        raise CardError(sw.WRONG_LENGTH, "no data")
    block = state.algorithm.block
    if not cmd.p1 & MAC:
        if len(cmd.data) % block:
            raise CardError(sw.WRONG_LENGTH, f"encryption takes whole {block}-byte blocks")
        return encrypt_ecb(state.algorithm, state.key, cmd.data)
    data = cmd.data
    if cmd.p1 & WITH_IV:
        if len(data) < block:
            raise CardError(sw.WRONG_LENGTH, "no initial value")
        state.chain, data = data[:block], data[block:]
    elif state.chain is None:
        raise CardError(sw.CONDITIONS_NOT_SATISFIED, "MAC block without a chain started")
    if cmd.p1 & MORE:
        if len(data) % block:
            raise CardError(sw.WRONG_LENGTH, f"a MAC block before the last takes whole {block}-byte blocks")
        if data:
            state.chain = _chain(state, data)
        return b""
    mac, state.chain = mac4(state.algorithm, state.key, state.chain, data), None
    return mac


def _chain(state: Crypt, blocks: bytes) -> bytes:
    # Blocks before the last: single DES under K1 for 3DES (ISO 9797-1 alg. 3), the cipher itself for SM4.
    if state.algorithm is Algorithm.TDES:
        return cbc_mac(Algorithm.DES, state.key[:8], state.chain, blocks)
    return cbc_mac(state.algorithm, state.key, state.chain, blocks)


def _select_df_by_p1_02(base):
    def select(card, cmd: Apdu):
        if cmd.p1 == 0x02 and len(cmd.data) == 2:
            child = card.fs.child(card.session.current_df, int.from_bytes(cmd.data, "big"))
            if child is not None and isinstance(card.fs.spec(child), DedicatedFile):
                cmd = Apdu(cmd.cla, cmd.ins, 0x00, cmd.p2, cmd.data, cmd.le, cmd.lc_present)
        return base(card, cmd)
    return select
