"""The transport interface, the T=0 answer completion every transport shares, and the in-process one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from cardos.card import Card

MAX_GET_RESPONSE = 64  # more pieces than any short answer needs: a card that loops is broken


class Transport(Protocol):
    """Something that carries command APDUs to one card and brings back whole answers."""

    name: str

    def transmit(self, apdu: bytes) -> bytes:
        """Send one command; return data ‖ SW with 61xx and 6Cxx already followed."""

    def transmit_raw(self, apdu: bytes) -> bytes:
        """Send one command; return the card's answer exactly as it came (conformance needs it)."""

    def atr(self) -> bytes: ...

    def reset(self) -> bytes:
        """Reset the card (RAM state lost) and return its ATR."""

    def close(self) -> None: ...


class TransportError(RuntimeError):
    """The transport could not carry a command; the message says why, never what the command held."""


def exchange(transport: Transport, apdu: bytes) -> tuple[bytes, int]:
    """Send one command through a transport; its data and status word."""
    resp = transport.transmit(apdu)
    return resp[:-2], (resp[-2] << 8) | resp[-1]


def with_le(apdu: bytes, le: int) -> bytes:
    """The same short command with its Le set to le (added when it had none)."""
    if len(apdu) <= 5:
        return apdu[:4] + bytes([le])
    return apdu[: 5 + apdu[4]] + bytes([le])


def complete(raw: Callable[[bytes], bytes], apdu: bytes) -> bytes:
    """Send apdu and follow the T=0 habits: 6Cxx → resend with Le = xx; 61xx → GET RESPONSE."""
    resp = raw(apdu)
    if len(resp) == 2 and resp[0] == 0x6C:
        resp = raw(with_le(apdu, resp[1]))
    data = b""
    for _ in range(MAX_GET_RESPONSE):
        if len(resp) < 2 or resp[-2] != 0x61:
            return data + resp
        data += resp[:-2]
        resp = raw(bytes([0x00, 0xC0, 0x00, 0x00, resp[-1]]))
    raise TransportError("card kept answering 61xx")


class InProcess:
    """A transport straight into a Card object in this process."""

    def __init__(self, card: Card, name: str = "in-process") -> None:
        self.card = card
        self.name = name
        if not card.powered:
            card.power_on()

    def transmit(self, apdu: bytes) -> bytes:
        return complete(self.card.transmit, apdu)

    def transmit_raw(self, apdu: bytes) -> bytes:
        return self.card.transmit(apdu)

    def atr(self) -> bytes:
        return self.card.atr

    def reset(self) -> bytes:
        return self.card.power_on()

    def close(self) -> None:
        self.card.power_off()
