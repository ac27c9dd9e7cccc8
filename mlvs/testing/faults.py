"""Fault points: where tests and drills make a command fail on purpose."""

from __future__ import annotations

import os
import signal
import time


def failpoint(name: str) -> None:
    """Die at once (SIGKILL) when `MLVS_FAILPOINT` is `name`: how tests crash a command at a step.

    Names are `<operation>:<journal step>` (e.g. `snapshot:committed`,
    `rollback:auto:saved`) plus `rollback:apply:data` and `rollback:apply:git`
    inside the apply step. `MLVS_PAUSE` set to a name waits there instead, until
    the file `MLVS_PAUSE_RELEASE` exists or `MLVS_PAUSE_SECONDS` (default 5) have
    passed: how tests hold a change open under the lock.
    """
    if os.environ.get("MLVS_FAILPOINT") == name:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
    if os.environ.get("MLVS_PAUSE") == name:
        release = os.environ.get("MLVS_PAUSE_RELEASE")
        deadline = time.monotonic() + float(os.environ.get("MLVS_PAUSE_SECONDS", "5"))
        while time.monotonic() < deadline and not (release and os.path.exists(release)):
            time.sleep(0.05)


class InjectedFault(RuntimeError):
    """Raised at a fault point when a drill asked for a failure there (MLVS_FAULT)."""


def fault_point(name: str) -> None:
    """Fail here if a drill injected a fault named `name` (chaos testing of the pipeline)."""
    if os.environ.get("MLVS_FAULT") == name:
        raise InjectedFault(f"injected fault at '{name}' (incident drill)")
