"""SELECT (by FID with P1 00 or 02, by DF name with P1 04) and GET RESPONSE."""

from __future__ import annotations

from .. import sw
from ..apdu import Apdu
from ..command import Reply
from ..files import MF_FID, DedicatedFile, ElementaryFile, KeyFile, TransparentEF
from ..filesystem import MF, AppState, Path
from ..sw import CardError


def select(card, cmd: Apdu) -> bytes:
    """SELECT FILE: make a DF or EF current; a DF answers its FCI unless P2 is 0C."""
    if cmd.p2 not in (0x00, 0x02, 0x04, 0x0C):
        raise CardError(sw.WRONG_P1P2)
    if cmd.p2 == 0x02 and cmd.p1 != 0x04:
        raise CardError(sw.WRONG_P1P2, "next occurrence is for selection by name")
    if cmd.p1 == 0x04:
        if not 1 <= len(cmd.data) <= 16:
            raise CardError(sw.WRONG_LENGTH, "DF name must be 1..16 bytes")
        if cmd.p2 == 0x02:
            path = _next_by_name(card, cmd.data)
        else:
            path = card.fs.df_by_name(cmd.data, card.session.current_df)
    elif cmd.p1 in (0x00, 0x02):
        path = _by_fid(card, cmd)
    else:
        raise CardError(sw.WRONG_P1P2)
    spec = None if path is None else card.fs.spec(path)
    if spec is None or isinstance(spec, KeyFile):
        raise CardError(sw.FILE_NOT_FOUND)
    if isinstance(spec, ElementaryFile):
        if path[:-1] != card.session.current_df:
            card.enter_df(path[:-1])
        card.session.current_ef, card.session.record = path, None
        return b""
    card.enter_df(path)
    # A blocked application is still selected, so that APPLICATION UNBLOCK can reach it.
    state = card.app_state(path)
    if state is AppState.LOCKED:
        raise CardError(sw.APPLICATION_LOCKED)
    if state is AppState.BLOCKED:
        raise CardError(sw.APPLICATION_BLOCKED)
    return b"" if cmd.p2 == 0x0C else fci(card, path, spec)


def _next_by_name(card, name: bytes) -> Path | None:
    """ISO 7816-4 P2 02: the DF after the current one (in tree order) whose name starts with name."""
    matches = sorted(p for p, spec in card.fs.walk() if isinstance(spec, DedicatedFile) and spec.name.startswith(name))
    later = [p for p in matches if p > card.session.current_df]
    return later[0] if later and card.session.current_df in matches else None


def _by_fid(card, cmd: Apdu) -> Path | None:
    if cmd.p1 == 0x00 and not cmd.data:
        return MF if card.fs.exists(MF) else None
    if len(cmd.data) != 2:
        raise CardError(sw.WRONG_LENGTH, "FID must be 2 bytes")
    fid = int.from_bytes(cmd.data, "big")
    cur = card.session.current_df
    if cmd.p1 == 0x02:
        path = card.fs.child(cur, fid)
        return path if path and isinstance(card.fs.spec(path), ElementaryFile) else None
    if fid == MF_FID:
        return MF if card.fs.exists(MF) else None
    # ISO 7816-4 P1 00: a child of the current DF, the DF itself, its parent or a sibling.
    if fid == cur[-1]:
        return cur
    found = card.fs.child(cur, fid)
    if found is None and len(cur) > 1:
        parent = cur[:-1]
        found = parent if parent[-1] == fid else card.fs.child(parent, fid)
    return found


def fci(card, path: Path, spec: DedicatedFile) -> bytes:
    """FCI of a DF, with the contents of its app file (if it has one) as proprietary data."""
    app = card.fs.ef_by_sfi(path, spec.fci_sfi) if spec.fci_sfi is not None else None
    return spec.fci(_contents(card, app) if app is not None else None)


def _contents(card, path: Path) -> bytes:
    body = card.fs.body(path)
    if isinstance(card.fs.spec(path), TransparentEF):
        return body
    return b"".join(body)


def get_response(card, cmd: Apdu) -> bytes | Reply:
    """GET RESPONSE: the answer a 61xx announced, in pieces of at most Le bytes."""
    if cmd.p1 or cmd.p2:
        raise CardError(sw.WRONG_P1P2)
    pending = card.session.pending
    if not pending:
        raise CardError(sw.CONDITIONS_NOT_SATISFIED, "no answer waiting")
    le = cmd.le or 256
    if le >= len(pending):
        if cmd.le not in (None, 256) and cmd.le > len(pending):
            raise CardError(sw.wrong_le(len(pending)))
        card.session.pending = b""
        return Reply(pending, sw.OK)
    card.session.pending = pending[le:]
    return Reply(pending[:le], sw.more_data(len(pending) - le))
