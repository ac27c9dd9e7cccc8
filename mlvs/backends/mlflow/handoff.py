"""The MLflow run of a notebook, named to its kernel once it exists.

`mlvs run` starts the kernel while its side process creates the run (MLflow's import
and store take seconds), so the kernel cannot inherit the run's id in its environment.
It inherits the path of a handoff file instead (`MLVS_RUN_HANDOFF`), empty until the
command writes `run ID` there when the run exists, or `failed REASON` when it could not
be created (or removes the file when even that cannot be written); the notebook's
`start_run` waits for that line.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlvs._io import atomic_write_text
from mlvs.errors import ExternalToolError

RUN_ID = re.compile(r"[0-9a-f]{32}")
# A tracking server may take its time creating a run; a kernel whose command is gone stops sooner.
WAIT_SECONDS = 600.0
POLL_SECONDS = 0.02
# What a reason may hold when shown in the notebook: one line, bounded.
REASON_CHARS = 500


class RunHandoff:
    """The command's side: a handoff file, filled from another thread once the run exists."""

    def __init__(self, path: Path) -> None:
        """An empty handoff file at `path` (a stale one replaced): the kernel waits while it is empty.

        OSError when it cannot be written (a full or read-only disk).
        """
        self.path = path
        self.value: Any = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "")

    def relay(self, wait: Callable[[], Any], run_id_of: Callable[[Any], str]) -> None:
        """In a thread: wait for the run (`wait()`), then name it (`run_id_of(result)`) or its failure."""

        def work() -> None:
            try:
                self.value = wait()
                atomic_write_text(self.path, f"run {run_id_of(self.value)}\n")
            except (
                BaseException
            ) as error:  # handed to the command, which raises it after the kernel
                self.error = error
                reason = " ".join(str(error).split())[:REASON_CHARS] or type(error).__name__
                try:
                    atomic_write_text(self.path, f"failed {reason}\n")
                except OSError:  # no room for the reason: a file gone says "failed" as well
                    self.path.unlink(missing_ok=True)

        self._thread = threading.Thread(target=work, name="mlvs-run-handoff", daemon=True)
        self._thread.start()

    def result(self) -> Any:
        """What `wait()` returned, once the thread is done; its exception is raised here."""
        if self._thread is not None:
            self._thread.join()
        if self.error is not None:
            raise self.error
        return self.value

    def close(self) -> None:
        """Wait for the thread and remove the file."""
        if self._thread is not None:
            self._thread.join()
        self.path.unlink(missing_ok=True)


def handed_run_id(path: Path) -> str:
    """The kernel's side: wait for the run's id in `path`; refuse a failure or anything malformed."""
    parent = os.getppid()
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            raise ExternalToolError(
                "the MLflow run of this notebook could not be created (the command says why)"
            ) from None
        if text.endswith("\n"):
            break
        if os.getppid() != parent or time.monotonic() > deadline:
            raise ExternalToolError(
                "the MLflow run of this notebook was never created: the `mlvs run` that started "
                "this kernel stopped or timed out; run the notebook again"
            )
        time.sleep(POLL_SECONDS)
    kind, _, value = text.strip().partition(" ")
    if kind == "run" and RUN_ID.fullmatch(value):
        return value
    if kind == "failed":
        raise ExternalToolError(f"the MLflow run of this notebook could not be created: {value}")
    raise ExternalToolError(f"{path} does not name an MLflow run; run the notebook again")
