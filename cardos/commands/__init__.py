"""The COS instruction table: INS → handler and the classes it is accepted in (spec §3)."""

from __future__ import annotations

from ..command import Command
from . import admin, auth, data, pin, select

_PLAIN = frozenset({0x00})
_PLAIN_OR_MAC = frozenset({0x00, 0x04})
_PROPRIETARY = frozenset({0x80})
_PROPRIETARY_MAC = frozenset({0x84})

COMMANDS: dict[int, Command] = {
    0xA4: Command(select.select, _PLAIN, while_blocked=True),
    0xC0: Command(select.get_response, _PLAIN, while_blocked=True),
    0xB0: Command(data.read_binary, _PLAIN),
    0xD6: Command(data.update_binary, _PLAIN_OR_MAC),
    0xB2: Command(data.read_record, _PLAIN),
    0xDC: Command(data.update_record, _PLAIN_OR_MAC),
    0xE2: Command(data.append_record, _PLAIN_OR_MAC),
    0x20: Command(pin.verify, _PLAIN),
    0x5E: Command(pin.change_or_reload, _PROPRIETARY),
    0x24: Command(pin.unblock, _PROPRIETARY_MAC),
    0x84: Command(auth.get_challenge, _PLAIN, while_blocked=True),
    0x82: Command(auth.external_authenticate, _PLAIN),
    0x88: Command(auth.internal_authenticate, _PLAIN),
    0xE0: Command(admin.create_file, _PROPRIETARY),
    0xD4: Command(admin.write_key, frozenset({0x80, 0x84})),
    0x0E: Command(admin.erase_df, _PROPRIETARY),
    0x1E: Command(admin.application_block, _PROPRIETARY_MAC),
    0x18: Command(admin.application_unblock, _PROPRIETARY_MAC, while_blocked=True),
    0x16: Command(admin.card_block, _PROPRIETARY_MAC),
}
