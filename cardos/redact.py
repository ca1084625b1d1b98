"""Printable forms of APDUs with PINs, keys, cryptograms and MACs masked, for logs and reports."""

from __future__ import annotations

# INS whose command data is a PIN, a key record or a cryptogram in every form.
_SECRET_DATA = {0x20: "PIN", 0x5E: "PIN", 0x24: "PIN/MAC", 0xD4: "key", 0x82: "cryptogram"}
# INS whose answer is a cryptogram the card computed (a PSAM's DES CRYPT too).
_SECRET_ANSWER = {0x88, 0xFA}


def _mask(n: int, what: str) -> str:
    return f"<{n} bytes {what} redacted>"


def command(apdu: bytes) -> str:
    """Hex of a command APDU with its secret part masked."""
    if len(apdu) <= 5:
        return apdu.hex().upper()
    head, lc, data, rest = apdu[:4], apdu[4], apdu[5:5 + apdu[4]], apdu[5 + apdu[4]:]
    ins = apdu[1]
    if ins in _SECRET_DATA:
        shown = _mask(len(data), _SECRET_DATA[ins])
    elif apdu[0] & 0x04 and len(data) >= 4:
        # A line-protected command: the data may be sealed and the last 4 bytes are the MAC.
        shown = data[:-4].hex().upper() + _mask(4, "MAC")
    else:
        shown = data.hex().upper()
    return f"{head.hex().upper()}{lc:02X}{shown}{rest.hex().upper()}"


def response(apdu: bytes, resp: bytes) -> str:
    """Hex of an answer, with a cryptogram the card computed masked."""
    if len(apdu) >= 2 and apdu[1] in _SECRET_ANSWER and len(resp) > 2:
        return _mask(len(resp) - 2, "cryptogram") + resp[-2:].hex().upper()
    return resp.hex().upper()
