"""The scoring service's status file, `.mlvs/serve/<alias>.json`: what it serves and what it refused.

The service rewrites it (atomically) whenever that changes, and marks it stopped when
it shuts down cleanly; `mlvs verify` reads it to name a version the service refused
while the alias still points at it, and a service that died without stopping (killed,
or its machine lost power), which `mlvs recover` starts again where it listened. Like
every file under `.mlvs/`, it is read as untrusted: bounded, parsed field by field,
and an alias becomes a file name only if it is a plain name.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from mlvs._io import atomic_write_text
from mlvs.paths import ProjectPaths

# Letters, digits, '_' and '-': what an alias may be to name a file (MLflow allows no more).
ALIAS_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
MAX_STATUS_BYTES = 64 * 1024

_Text = Annotated[str, StringConstraints(max_length=4000)]


class ServedVersion(BaseModel):
    """The version being served."""

    model_config = ConfigDict(extra="ignore")
    version: _Text
    model_sha256: _Text
    loaded_at: _Text


class RefusedVersionRecord(BaseModel):
    """A version the alias moved to that failed verification, or the served version's file changed on disk; why."""

    model_config = ConfigDict(extra="ignore")
    version: _Text
    reason: _Text
    at: _Text
    # "version": the version was never swapped in; "file": the served version's file changed on
    # disk after it was loaded, and its bytes were not loaded (the verified copy is served on).
    kind: Literal["version", "file"] = "version"


class ServiceStatus(BaseModel):
    """The status file's document."""

    model_config = ConfigDict(extra="ignore")
    model_name: _Text
    alias: _Text
    pid: int
    serving: ServedVersion | None = None
    refused: RefusedVersionRecord | None = None
    updated_at: _Text
    # Where it listens, to be started again there after a crash.
    host: _Text | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    # Set by a clean stop; a file without it whose process is gone is a service that died.
    stopped_at: _Text | None = None


def status_dir(paths: ProjectPaths) -> Path:
    """Where the scoring service keeps its status files and its downloads."""
    return paths.state / "serve"


def status_file(paths: ProjectPaths, alias: str) -> Path:
    """The status file of the service that follows `alias` (a plain name, checked by the caller)."""
    if not ALIAS_PATTERN.match(alias):
        raise ValueError(f"alias {alias[:80]!r} is not a plain name")
    return status_dir(paths) / f"{alias}.json"


def write_status(paths: ProjectPaths, status: ServiceStatus) -> None:
    """Replace the status file of `status.alias` in one step."""
    target = status_file(paths, status.alias)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, json.dumps(status.model_dump(), indent=2, sort_keys=True) + "\n")


def read_status(paths: ProjectPaths, alias: str) -> ServiceStatus | None:
    """The status file of `alias`; None when there is none; ValueError saying why when it cannot be read."""
    if not ALIAS_PATTERN.match(alias):
        return None
    path = status_file(paths, alias)
    try:
        with path.open("rb") as handle:
            payload = handle.read(MAX_STATUS_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ValueError(f"unreadable ({error.strerror or error})") from None
    if len(payload) > MAX_STATUS_BYTES:
        raise ValueError(f"larger than {MAX_STATUS_BYTES} bytes")
    try:
        return ServiceStatus.model_validate_json(payload)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the document"
        raise ValueError(f"malformed ({where}: {first['msg']})") from None


def process_alive(pid: int) -> bool:
    """Tell whether process `pid` exists (a pid read from a file: 0, 1 and negatives never are ours)."""
    if pid <= 1:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OSError:
        return False
    # A pid is reused once its process is gone: where the system tells, it must still be a service.
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"serve" in command


def died_without_stopping(status: ServiceStatus) -> bool:
    """Tell whether the service that wrote `status` is gone without having stopped cleanly."""
    return status.stopped_at is None and not process_alive(status.pid)
