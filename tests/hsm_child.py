"""A batch run for the memory test: personalizes a cardholder file, pausing after the card before
the last until a line arrives on stdin, so the test can read this process's memory meanwhile.

Usage: python -m tests.hsm_child KEYS CSV OUT_DIR  (KEYS: a key file or a pkcs11: URI)
"""

import sys

from personalize import batch, cardholders
from personalize.profile import load


def main(keys_arg: str, csv_path: str, out: str) -> None:
    if keys_arg.startswith("pkcs11:"):
        from terminal.pkcs11 import Pkcs11Keys
        provider = Pkcs11Keys.open(keys_arg)
    else:
        from personalize.keys import load_key_file
        provider = load_key_file(keys_arg)
    total, done = len(cardholders.read_csv(csv_path)), [0]

    def progress(card_number: str, n: int) -> None:
        done[0] += n
        if done[0] == total - 1:
            print("paused", flush=True)
            sys.stdin.readline()

    opts = batch.Options(load(None), provider, csv_path, f"{out}/journal.sqlite", f"{out}/audit.jsonl", out)
    result = batch.run_batch(opts, progress)
    print(f"done {result.done}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
