"""In-process APDU throughput: our card against vsmartcard's vicc (Iso7816OS) on the same
files and commands, alternated in one process; then our card on the full mix.

Anchor: vicc's iso7816 card with an MF, a DF named like SSSE and the same EF05/EF06 records.
Target: ours ≥ 3× vicc on the shared commands (SELECT by name, READ RECORD, READ BINARY, VERIFY).
Also an error mix both cards refuse the same way (6A82, 6A83, 6D00, 6B00), which is what a terminal
probing for files sends.
"""

from __future__ import annotations

import logging
import sys

from common import alternate, stats
from results import Results

VICC_PATH = "/usr/lib/python3/site-packages/virtualsmartcard"


def vicc_card(ef05: list[bytes], ef06: list[bytes], fci: bytes, pin: bytes):
    """vicc's Iso7816OS holding the same files: it needs its Debian path and pycryptodome's Crypto."""
    sys.path.insert(0, VICC_PATH)
    from virtualsmartcard.ConstantDefinitions import FDB
    from virtualsmartcard.SmartcardFilesystem import DF, MF, Record, RecordStructureEF, TransparentStructureEF
    from virtualsmartcard.SmartcardSAM import SAM
    from virtualsmartcard.VirtualSmartcard import Iso7816OS

    logging.disable(logging.CRITICAL)     # vicc logs the PIN at debug level; keep it quiet
    mf = MF()
    ssse = DF(mf, 0xDDF1, dfname=bytes.fromhex("7378312E73682EC9E7BBE1B1A3D5CF"))
    mf.append(ssse)
    for fid, sfi, records in ((0xEF05, 5, ef05), (0xEF06, 6, ef06)):
        ssse.append(RecordStructureEF(ssse, fid, FDB["EFSTRUCTURE_LINEAR_VARIABLESIMPLETLV"], shortfid=sfi,
                                      records=[Record(r[0], r) for r in records]))
    ssse.append(TransparentStructureEF(ssse, 0x0015, shortfid=0x15, data=fci))
    return Iso7816OS(mf, SAM(pin, None, mf))


def main() -> None:
    from cardos.apdu import build
    from personalize import lifecycle
    from reader_bridge.transport import InProcess
    from tests.ss import card, factor, keys, open_key, prof

    ours = card()
    lifecycle.perform(InProcess(ours), lifecycle.life_script("activate", prof(), factor(ours)), keys())
    ours.power_on()
    ssse = ours.fs.df_by_name(bytes.fromhex("7378312E73682EC9E7BBE1B1A3D5CF"), (0x3F00,))
    ef05 = list(ours.fs.body(ssse + (0xEF05,)))
    ef06 = list(ours.fs.body(ssse + (0xEF06,)))
    fci = ours.fs.body(ssse + (0x0015,))
    pin = bytes.fromhex("123456")
    vicc = vicc_card(ef05, ef06, fci, pin)

    # SELECT with P2 0C: this vicc crashes building an FCI (its bertlv_pack gets an int).
    select = "00A4040C0F7378312E73682EC9E7BBE1B1A3D5CF"
    shared = [bytes.fromhex(h) for h in (select, "00B2013400", "00B2072C00", "00B0950006")] + \
        [build(0x00, 0x20, 0x00, 0x00, pin)]
    # Both cards do the same work: same data back; vicc ends a short record read with 6282
    # ("end of record before Le") where the spec wants 9000.
    for apdu in shared:
        a, b = ours.transmit(apdu), vicc.execute(apdu)
        assert a[-2:] == b"\x90\x00" and b[-2:] in (b"\x90\x00", b"\x62\x82"), (apdu.hex(), a.hex(), b.hex())
        assert a[:-2] == b[:-2], (apdu.hex(), a.hex(), b.hex())

    # Errors: no such DF, no such record, no such instruction, offset past the end.
    errors = [bytes.fromhex(h) for h in ("00A4040C05A000000099", "00B2633400", "00EE000000", "00B095F004")]
    for apdu in errors:
        a, b = ours.transmit(apdu), vicc.execute(apdu)
        assert a[-2:] == b[-2:] and a[-2:] != b"\x90\x00", (apdu.hex(), a.hex(), b.hex())

    def run(send, apdus):
        def go():
            for apdu in apdus:
                send(apdu)
            return len(apdus)
        return go

    figures = alternate({"sscard": run(ours.transmit, shared), "vicc": run(vicc.execute, shared)})
    ratio = stats(figures["sscard"])[0] / stats(figures["vicc"])[0]
    failing = alternate({"sscard": run(ours.transmit, errors), "vicc": run(vicc.execute, errors)})
    error_ratio = stats(failing["sscard"])[0] / stats(failing["vicc"])[0]

    # The full mix, our card only: the same plus GET CHALLENGE + EXTERNAL AUTHENTICATE and a MACed update.
    from cardos.crypto import mac4
    from personalize.compiler import card_key
    _, df = prof().role("ssse")
    lk = next(k for k in df.keys if k.type == 0x36)
    lk_value = keys().value_for_plain_load(card_key(lk, factor(ours)))

    def full():
        for apdu in shared:
            ours.transmit(apdu)
        assert open_key(ours, "default", "ssse", 0x0A) == 0x9000
        chal = ours.transmit(bytes.fromhex("0084000008"))[:-2]
        body = b"\x02\x013"
        header = bytes((0x04, 0xDC, 0x02, 0x2C, len(body) + 4))
        ours.transmit(build(0x04, 0xDC, 0x02, 0x2C, body + mac4(lk.algorithm, lk_value, chal, header + body)))
        return len(shared) + 4

    mix = alternate({"mix": full}, rounds=5)

    out = Results("inprocess", "in-process APDU throughput")
    out.add("shared_sscard", "sscard, shared commands", figures["sscard"], "APDU/s")
    out.add("shared_vicc", "vicc, shared commands", figures["vicc"], "APDU/s")
    out.add("shared_ratio", "ratio sscard/vicc, shared commands", ratio, "x", target=">= 3x", met=ratio >= 3)
    out.add("errors_sscard", "sscard, error mix", failing["sscard"], "APDU/s")
    out.add("errors_vicc", "vicc, error mix", failing["vicc"], "APDU/s")
    out.add("errors_ratio", "ratio sscard/vicc, error mix", error_ratio, "x")
    out.add("full_mix", "sscard, full mix (EXTERNAL AUTHENTICATE, MAC)", mix["mix"], "APDU/s")
    out.save()


if __name__ == "__main__":
    main()
