"""Status words of the card (spec §5), and the one exception that carries them."""

from __future__ import annotations

OK = 0x9000
DATA_MAY_BE_CORRUPTED = 0x6281
MEMORY_FAILURE = 0x6581
WRONG_LENGTH = 0x6700
CHANNEL_NOT_SUPPORTED = 0x6881
SECURITY_NOT_SATISFIED = 0x6982
BLOCKED = 0x6983
REFERENCE_DATA_UNUSABLE = 0x6984
CONDITIONS_NOT_SATISFIED = 0x6985
NO_CURRENT_EF = 0x6986
MAC_WRONG = 0x6988
WRONG_DATA = 0x6A80
FUNCTION_NOT_SUPPORTED = 0x6A81
FILE_NOT_FOUND = 0x6A82
RECORD_NOT_FOUND = 0x6A83
NOT_ENOUGH_MEMORY = 0x6A84
WRONG_P1P2 = 0x6A86
REFERENCE_NOT_FOUND = 0x6A88
OFFSET_BEYOND_FILE = 0x6B00
INS_NOT_SUPPORTED = 0x6D00
CLA_NOT_SUPPORTED = 0x6E00
APPLICATION_LOCKED = 0x9303
FMCOS_MAC_WRONG = 0x9302

MORE_DATA = 0x6100
WRONG_LE = 0x6C00
PIN_WRONG = 0x63C0
AUTHENTICATION_FAILED = 0x6300  # EMV: issuer authentication (ARPC) failed

APPLICATION_BLOCKED = FUNCTION_NOT_SUPPORTED


def more_data(n: int) -> int:
    """61xx: xx bytes wait for GET RESPONSE (00 means 256 or more)."""
    return MORE_DATA | (n if n < 256 else 0)


def wrong_le(n: int) -> int:
    """6Cxx: the answer has exactly xx bytes (00 means 256)."""
    return WRONG_LE | (n & 0xFF)


def tries_left(n: int) -> int:
    """63Cx: a verification failed and x tries remain."""
    return PIN_WRONG | (n & 0x0F)


class CardError(Exception):
    """A command ended with a status word other than 9000; carries that SW and no secret."""

    def __init__(self, sw: int, why: str = "") -> None:
        super().__init__(f"{sw:04X}" + (f": {why}" if why else ""))
        self.sw = sw
        self.why = why
