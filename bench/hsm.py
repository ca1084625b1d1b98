"""Cards per second with the issuer keys in an HSM (PKCS#11, SoftHSM2) against the key file, in one run.

Each contender makes whole virtual cards (blank chip → initialization → personalization →
read-back) with the same profile and cardholders; the two alternate round after round. The
token is a throwaway SoftHSM2 one in a temp dir, loaded with the demo keys by the same import
`sscard keys import-hsm` runs.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from common import alternate, stats
from results import Results

PIN = "246810"


def _token(tmp: str) -> str:
    """A SoftHSM2 token in tmp; SOFTHSM2_CONF must be set before the module is first loaded."""
    tokens = Path(tmp) / "tokens"
    tokens.mkdir()
    conf = Path(tmp) / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin", PIN,
                    "--so-pin", "13579246"], check=True, capture_output=True)
    return "pkcs11:token=bench"


def main() -> None:
    from personalize import cardholders, compiler, virtual
    from personalize.keys import KeyRef
    from personalize.script import run
    from personalize.verify import verify_card
    from reader_bridge.transport import InProcess
    from terminal.factors import card_factor
    from terminal.pkcs11 import Pkcs11Keys, import_keys
    from tests.ss import keys, prof

    p, soft = prof(), keys()
    holders = cardholders.generate(40, seed=8)
    with tempfile.TemporaryDirectory() as tmp:
        uri = _token(tmp)
        import_keys(uri, {n: (soft.algorithm(KeyRef(n)), soft.value_for_plain_load(KeyRef(n)), 1)
                          for n in soft.names()}, {compiler.TRANSPORT_KEY}, pin=PIN,
                    rsa=soft.rsa_keys())
        hsm = Pkcs11Keys.open(uri, pin=PIN)
        counter = [0]

        def card_with(provider):
            def one() -> int:
                counter[0] += 1
                h = holders[counter[0] % len(holders)]
                card = virtual.blank(p, virtual.chip_serial(f"hsm-bench:{counter[0]}"))
                run(InProcess(card).transmit, compiler.init_script(p), provider)
                card.power_on()
                values = cardholders.values(h, p, card_factor(card.atr))
                run(InProcess(card).transmit, compiler.perso_script(p, values, card_factor(card.atr)), provider)
                card.power_on()
                verify_card(InProcess(card), p, values, provider)
                return 1
            return one

        rates = alternate({"key file": card_with(soft), "HSM (SoftHSM2, PKCS#11)": card_with(hsm)},
                          rounds=5, seconds=1.0)
        hsm.close()
    out = Results("hsm", "issuer keys in an HSM against the key file")
    out.add("keyfile_rate", "whole card, key file", rates["key file"], "cards/s")
    out.add("hsm_rate", "whole card, HSM (SoftHSM2, PKCS#11)", rates["HSM (SoftHSM2, PKCS#11)"], "cards/s")
    ratio = stats(rates["key file"])[0] / stats(rates["HSM (SoftHSM2, PKCS#11)"])[0]
    out.add("keyfile_over_hsm", "key file / HSM", ratio, "x", higher_is_better=False)
    out.save()


if __name__ == "__main__":
    main()
