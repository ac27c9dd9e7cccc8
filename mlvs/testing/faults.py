"""Fault points: the named places where tests and drills make a command fail on purpose.

A fault point is one call, `fault_point("<operation>:<step>")`, at a step of a
command. Names follow one pattern, the operation first:

- `snapshot:<journal step>` and `rollback:<journal step>` (e.g. `snapshot:committed`,
  `rollback:auto:saved`), passed by every journal step (`journal_recorder`), plus
  `rollback:apply:data` and `rollback:apply:git` inside the apply step;
- `prepare:preprocess`, `prepare:partial`, `train:train`, `train:evaluate` inside
  the pipeline stages (a scenario of `params/incidents.yaml` names the stage and
  the step: `stage: train`, `fault: evaluate`);
- `drill:injected`, between a drill's injection and its detection;
- `deploy:gated` and `train:gated`, between the gate decision of `mlvs deploy` or
  of the pipeline's promotion and its alias move (how tests let another clone move
  an alias in between).

A point does nothing unless an environment variable (see `mlvs.settings`) arms
it by name, one variable per effect:

- `MLVS_FAILPOINT`: the process kills itself (SIGKILL): how crash tests stop a
  command at a step for `mlvs recover` to finish or undo;
- `MLVS_PAUSE`: the process waits there until the file `MLVS_PAUSE_RELEASE`
  exists or `MLVS_PAUSE_SECONDS` (default 5) have passed: how tests hold a
  change open under the state lock; while it waits, the file
  `<MLVS_PAUSE_RELEASE>.<pid>.waiting` beside it says so;
- `MLVS_FAULT`: `InjectedFault` is raised there: how drills make a pipeline
  stage fail as a bug would.

`armed(name)` is the environment that arms `name` with `MLVS_FAULT` for a child
process (a stage run by `dvc repro`).
"""

from __future__ import annotations

import os
import signal
import time

from mlvs.settings import FAILPOINT, FAULT, PAUSE, PAUSE_RELEASE, PAUSE_SECONDS


class InjectedFault(RuntimeError):
    """Raised at a fault point that `MLVS_FAULT` armed (an incident drill)."""


def fault_point(name: str) -> None:
    """Die, wait or raise here when an environment variable arms the point `name`; else nothing."""
    if FAILPOINT.get() == name:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
    if PAUSE.get() == name:
        release = PAUSE_RELEASE.get()
        # Beside the release file, this process says that it waits (several may wait for one release).
        waiting = release.with_name(f"{release.name}.{os.getpid()}.waiting") if release else None
        if waiting is not None:
            waiting.touch()
        deadline = time.monotonic() + PAUSE_SECONDS.get()
        while time.monotonic() < deadline and not (release and release.exists()):
            time.sleep(0.05)
        if waiting is not None:
            waiting.unlink(missing_ok=True)
    if FAULT.get() == name:
        raise InjectedFault(f"injected fault at '{name}' (incident drill)")


def armed(name: str) -> dict[str, str]:
    """The environment that makes a child process raise `InjectedFault` at the point `name`."""
    return {FAULT.name: name}
