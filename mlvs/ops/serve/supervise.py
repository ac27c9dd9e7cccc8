"""Starting and stopping `mlvs serve` in the background, as `mlvs recover` and the serving drills do.

A service started here is a process of its own session (it outlives the command that
started it, as under a supervisor), writing its log to `.mlvs/logs/serve-<alias>.log`.
It counts as started once its status file names its pid and a verified version; it is
stopped with SIGTERM, which it answers by finishing its requests and marking its status
file stopped.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from mlvs.errors import ExternalToolError
from mlvs.ops.serve.status import (
    ALIAS_PATTERN,
    ServiceStatus,
    process_alive,
    read_status,
    status_dir,
)
from mlvs.paths import ProjectPaths

# Where a service whose status file names no host is started again.
LOOPBACK = "127.0.0.1"
# A service loads and verifies its model before it listens: seconds, more on a busy machine.
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
# The `mlvs` command, run by this interpreter (its console script may not be on PATH).
_MLVS = "import sys; from mlvs.cli import main; sys.exit(main(sys.argv[1:]))"


def wait_for_status(
    paths: ProjectPaths, alias: str, ready: Callable[[ServiceStatus], bool], timeout: float
) -> ServiceStatus | None:
    """The status file of `alias` once `ready` holds for it, or None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = read_status(paths, alias)
        except ValueError:
            status = None  # being replaced: read it again
        if status is not None and ready(status):
            return status
        time.sleep(0.05)
    return None


def launch(
    paths: ProjectPaths, alias: str, host: str, port: int, timeout: float = START_TIMEOUT_S
) -> ServiceStatus:
    """Start `mlvs serve --alias ALIAS --host HOST --port PORT` in the background; its status once it serves.

    ExternalToolError when it stops, or serves nothing, before `timeout` seconds.
    """
    if not ALIAS_PATTERN.match(alias):
        raise ValueError(f"alias {alias[:80]!r} is not a plain name")
    paths.logs.mkdir(parents=True, exist_ok=True)
    log_file = paths.logs / f"serve-{alias}.log"
    with log_file.open("ab") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _MLVS,
                "serve",
                "--alias",
                alias,
                "--host",
                host,
                "--port",
                str(port),
            ],
            cwd=paths.root,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,  # its own session: it outlives the command that started it
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = wait_for_status(
            paths,
            alias,
            lambda s: s.pid == process.pid and s.serving is not None and s.port is not None,
            0.25,
        )
        if status is not None:
            return status
        if process.poll() is not None:
            break
    if process.poll() is None:
        process.kill()
    process.wait()
    tail = log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
    raise ExternalToolError(
        f"`mlvs serve --alias {alias}` did not start ({tail[0][:300] if tail else 'no output'}); "
        f"see {log_file.relative_to(paths.root).as_posix()}"
    )


def stop(paths: ProjectPaths, alias: str, timeout: float = STOP_TIMEOUT_S) -> bool:
    """Stop the live service of `alias` (SIGTERM, then SIGKILL after `timeout` s); False when none ran."""
    try:
        status = read_status(paths, alias)
    except ValueError:
        return False
    if status is None or status.stopped_at is not None or not process_alive(status.pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(status.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while process_alive(status.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if process_alive(status.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(status.pid, signal.SIGKILL)
    return True


def live_services(paths: ProjectPaths) -> dict[str, ServiceStatus]:
    """Alias -> status of every service whose process runs now."""
    live = {}
    folder = status_dir(paths)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            status = read_status(paths, path.stem)
        except ValueError:
            continue
        if status is not None and status.stopped_at is None and process_alive(status.pid):
            live[path.stem] = status
    return live


def served_model(port: int, timeout: float = 30.0) -> dict[str, Any]:
    """What the service on loopback `port` answers on `GET /model`: its version and model_sha256."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/model")
        response = connection.getresponse()
        body = json.loads(response.read() or b"null")
    except (OSError, http.client.HTTPException, ValueError) as error:
        return {"error": f"{type(error).__name__}: {error}"}
    finally:
        connection.close()
    if response.status != 200 or not isinstance(body, dict):
        return {"error": f"status {response.status}"}
    return {"version": body.get("version"), "model_sha256": body.get("model_sha256")}
