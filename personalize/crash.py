"""Named points in a batch where tests stop the process, to prove nothing is lost at any of them.

With SSCARD_TEST_CRASH=NAME:N the process SIGKILLs itself the Nth time it reaches point NAME;
tests running in-process replace `point` instead. Unset (always, in production) it does nothing.
"""

from __future__ import annotations

import os
import signal

ENV = "SSCARD_TEST_CRASH"
_seen: dict[str, int] = {}


def point(name: str) -> None:
    """A place where a crash must lose nothing."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
