"""Printable forms of APDUs with PINs, keys, cryptograms and MACs masked, for logs and reports."""

from __future__ import annotations

# INS whose command data is a PIN, a key record or a cryptogram in every form.
_SECRET_DATA = {0x20: "PIN", 0x5E: "PIN", 0x24: "PIN/MAC", 0xD4: "key", 0x82: "cryptogram"}
# INS whose answer is a secret the card computed (a PSAM's DES CRYPT too).
_SECRET_ANSWER = {0x88: "cryptogram", 0xFA: "cryptogram"}
_GET_RESPONSE = 0xC0


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


def _shown(resp: bytes, secret: str | None) -> str:
    if secret and len(resp) > 2:
        return _mask(len(resp) - 2, secret) + resp[-2:].hex().upper()
    return resp.hex().upper()


def response(apdu: bytes, resp: bytes) -> str:
    """Hex of the answer to one command on its own, with a secret the card computed masked."""
    return Redactor().response(apdu, resp)


class Redactor:
    """Masks the answers of one conversation with a card by what they are: on T=0 cards a
    cryptogram comes back in GET RESPONSE, so what the card holds pending is followed."""

    def __init__(self) -> None:
        self._pending: str | None = None   # what the card's waiting answer is, when it is a secret

    def response(self, apdu: bytes, resp: bytes) -> str:
        """Hex of the answer to apdu, the next command of the conversation."""
        fetch = len(apdu) >= 2 and apdu[1] == _GET_RESPONSE
        secret = self._pending if fetch else (_SECRET_ANSWER.get(apdu[1]) if len(apdu) >= 2 else None)
        sw1 = resp[-2] if len(resp) >= 2 else None
        if sw1 == 0x61:
            self._pending = secret              # the rest of this answer waits for GET RESPONSE
        elif not fetch or (sw1 is not None and resp[-2:] == b"\x90\x00"):
            # Any other command drops what was waiting; a refused GET RESPONSE leaves it waiting.
            self._pending = None
        return _shown(resp, secret)
