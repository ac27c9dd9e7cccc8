"""Every `MLVS_*` environment variable, declared once, typed and documented.

Nothing else in mlvs reads `os.environ` for an `MLVS_*` name: a module asks the
setting (`LOCK_TIMEOUT.get()`), and code that sets a variable for a child process
uses its `.name`. A value that cannot be read is refused in one sentence naming
the variable, the value and how to fix it (a `BadInputError`, exit status 2).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from mlvs.errors import BadInputError

T = TypeVar("T")


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One `MLVS_*` environment variable: its name, type, default and what it does.

    `parse` turns the text (never blank) into the value and raises ValueError when it
    cannot; the refusal then says the value is not `expected` and to `fix` it. An unset
    or blank variable is the default.
    """

    name: str
    parse: Callable[[str], T]
    default: T
    doc: str
    expected: str = "a valid value"
    fix: str = "unset it"

    def get(self) -> T:
        """The value from the environment, or the default; refuse one that cannot be read."""
        raw = os.environ.get(self.name, "")
        if not raw.strip():
            return self.default
        try:
            return self.parse(raw)
        except ValueError:
            raise BadInputError(f"{self.name}={raw!r} is not {self.expected}; {self.fix}") from None


def _text(value: str) -> str:
    return value


def _optional_text(value: str) -> str | None:
    return value


def _seconds(value: str) -> float:
    return float(value)


def _positive_seconds(value: str) -> float:
    seconds = float(value)
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(value)
    return seconds


def _byte_count(value: str) -> int:
    count = int(value)
    if count < 0:
        raise ValueError(value)
    return count


def _switch(value: str) -> bool:
    # Anything but an explicit "off" keeps it on: a typo must not silently weaken durability.
    return value.strip().lower() not in ("0", "false", "no", "off")


def _path(value: str) -> Path | None:
    return Path(value).resolve()


# --- the project and its stores ---------------------------------------------------------

ROOT: Setting[Path | None] = Setting(
    "MLVS_ROOT",
    _path,
    None,
    "The project root; overrides the search for the directory that holds dvc.yaml and params/.",
)

RUN_HANDOFF: Setting[Path | None] = Setting(
    "MLVS_RUN_HANDOFF",
    _path,
    None,
    "Set by `mlvs run` for the notebook's kernel: the file where the MLflow run created for the "
    "notebook is named once it exists (the kernel starts while the run is being created).",
)

REGISTRY_BACKEND: Setting[str] = Setting(
    "MLVS_REGISTRY_BACKEND",
    _text,
    "",
    "`mlflow` makes registry reads and alias moves go through MLflow's client, never SQL.",
)

# --- monitoring -------------------------------------------------------------------------


def _webhook_url(value: str) -> str:
    # Only http(s): a file:// or other scheme must not turn an alert into a local write.
    if not value.startswith(("http://", "https://")):
        raise ValueError(value)
    return value


ALERT_WEBHOOK: Setting[str | None] = Setting(
    "MLVS_ALERT_WEBHOOK",
    _webhook_url,
    None,
    "An http(s) URL that `mlvs monitor` POSTs each raised or resolved alert's JSON to.",
    expected="an http:// or https:// URL",
    fix="set it to e.g. https://hooks.example.com/mlvs or unset it",
)

# --- durability and disk ----------------------------------------------------------------

FSYNC: Setting[bool] = Setting(
    "MLVS_FSYNC",
    _switch,
    True,
    "Flush data copies to disk before they count; 0, false, no or off turns it off.",
)

SPARE_BYTES: Setting[int | None] = Setting(
    "MLVS_SPARE_BYTES",
    _byte_count,
    None,
    "Bytes of replaced files kept as spare blocks for the next restore (default: a tenth of "
    "the free space, at most 8 GiB; 0 keeps none).",
    expected="a number of bytes",
    fix="set it to e.g. 0 (keep no spare blocks) or 4294967296, or unset it",
)

# --- the state lock ---------------------------------------------------------------------

DEFAULT_LOCK_TIMEOUT = 30.0

LOCK_TIMEOUT: Setting[float] = Setting(
    "MLVS_LOCK_TIMEOUT",
    _seconds,
    DEFAULT_LOCK_TIMEOUT,
    "Seconds a state-changing command waits for the state lock (default 30; negative waits "
    "forever, 0 tries once).",
    expected="a number of seconds",
    fix="set it to e.g. 30 or unset it",
)

WARM_SIDE_PROCESSES: Setting[Path | None] = Setting(
    "MLVS_WARM_SIDE_PROCESSES",
    Path,
    None,
    "Set by `mlvs pipeline` for its stages: the socket of a process that forks each `mlvs run` "
    "its side process with MLflow, pandas and scikit-learn imported once; never set it by hand.",
)

LOCK_TOKEN: Setting[str | None] = Setting(
    "MLVS_LOCK_TOKEN",
    _optional_text,
    None,
    "Set by mlvs for the processes it starts while it holds the state lock, so that they "
    "share the lock instead of waiting for it; never set it by hand.",
)

ALIAS_LEASE_SECONDS: Setting[float] = Setting(
    "MLVS_ALIAS_LEASE_SECONDS",
    _positive_seconds,
    30.0,
    "Seconds an alias move on a tracking server may hold the registered model's lease before "
    "another clone may take it over (default 30; a move takes well under one).",
    expected="a positive number of seconds",
    fix="set it to e.g. 30 or unset it",
)

# --- the console ------------------------------------------------------------------------

COLOR_CHOICES = ("auto", "always", "never")


def _color(value: str) -> str:
    choice = value.strip().lower()
    if choice not in COLOR_CHOICES:
        raise ValueError(value)
    return choice


COLOR: Setting[str] = Setting(
    "MLVS_COLOR",
    _color,
    "auto",
    "Colour on the console: auto (only on a terminal, and not when NO_COLOR is set), always "
    "or never; --json output is never coloured.",
    expected="auto, always or never",
    fix="set it to auto, always or never, or unset it",
)

# --- fault points (tests and incident drills; see mlvs.testing.faults) ------------------

FAILPOINT: Setting[str | None] = Setting(
    "MLVS_FAILPOINT",
    _optional_text,
    None,
    "A fault point's name: the process kills itself (SIGKILL) when it reaches that point.",
)

FAULT: Setting[str | None] = Setting(
    "MLVS_FAULT",
    _optional_text,
    None,
    "A fault point's name: an InjectedFault is raised there (how drills fail a pipeline stage).",
)

PAUSE: Setting[str | None] = Setting(
    "MLVS_PAUSE",
    _optional_text,
    None,
    "A fault point's name: the process waits there until MLVS_PAUSE_RELEASE exists or "
    "MLVS_PAUSE_SECONDS have passed.",
)

PAUSE_RELEASE: Setting[Path | None] = Setting(
    "MLVS_PAUSE_RELEASE",
    Path,
    None,
    "A file whose appearance ends the wait at the MLVS_PAUSE point.",
)

PAUSE_SECONDS: Setting[float] = Setting(
    "MLVS_PAUSE_SECONDS",
    _seconds,
    5.0,
    "Seconds at most to wait at the MLVS_PAUSE point (default 5).",
    expected="a number of seconds",
    fix="set it to e.g. 5 or unset it",
)

SETTINGS: tuple[Setting[Any], ...] = (
    ROOT,
    RUN_HANDOFF,
    REGISTRY_BACKEND,
    ALERT_WEBHOOK,
    FSYNC,
    SPARE_BYTES,
    LOCK_TIMEOUT,
    LOCK_TOKEN,
    WARM_SIDE_PROCESSES,
    ALIAS_LEASE_SECONDS,
    COLOR,
    FAILPOINT,
    FAULT,
    PAUSE,
    PAUSE_RELEASE,
    PAUSE_SECONDS,
)
