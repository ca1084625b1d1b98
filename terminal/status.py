"""Status-word names as a terminal reports them (spec §5)."""

from __future__ import annotations

SW_NAMES = {
    0x9000: "ok", 0x6281: "data may be corrupted", 0x6581: "memory failure", 0x6700: "wrong length",
    0x6881: "logical channel not supported", 0x6982: "security status not satisfied", 0x6983: "blocked",
    0x6984: "reference data unusable", 0x6985: "conditions of use not satisfied", 0x6986: "no current EF",
    0x6988: "MAC wrong", 0x6A80: "wrong data", 0x6A81: "function not supported / application blocked",
    0x6A82: "file not found", 0x6A83: "record not found", 0x6A84: "not enough memory", 0x6A86: "wrong P1P2",
    0x6A88: "reference data not found", 0x6B00: "offset beyond file", 0x6D00: "INS unknown",
    0x6E00: "CLA unknown", 0x9302: "MAC wrong (FMCOS)", 0x9303: "application permanently locked",
}

# SELECT answers that still leave the application current (a blocked one must stay reachable).
SELECTED = (0x9000, 0x6A81, 0x9303)


def sw_name(sw: int) -> str:
    """A status word in words."""
    hi = sw >> 8
    if hi == 0x61:
        return f"{sw & 0xFF} bytes waiting"
    if hi == 0x6C:
        return f"wrong Le, exact length {sw & 0xFF}"
    if sw & 0xFFF0 == 0x63C0:
        return f"verification failed, {sw & 0xF} tries left"
    return SW_NAMES.get(sw, "unknown")
