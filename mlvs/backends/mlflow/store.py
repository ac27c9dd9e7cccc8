"""Where the MLflow store is, and whether a tracking server answers."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

from mlvs.backends.uris import safe_uri
from mlvs.errors import ExternalToolError
from mlvs.paths import ProjectPaths


def tracking_uri(paths: ProjectPaths) -> str:
    """The tracking URI in force: the environment's, or the project's SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths.mlflow_db}"


# How long a reachability probe waits: MLflow's own client retries a refused
# connection for minutes, which is right for a busy server but not for a dead one.
PROBE_TIMEOUT_S = 10.0


def is_tracking_server(uri: str) -> bool:
    """Tell whether `uri` names an MLflow tracking server (over HTTP) rather than a store mlvs opens itself."""
    return urlsplit(uri).scheme in ("http", "https")


def store_exists(paths: ProjectPaths) -> bool:
    """Tell whether the tracking store exists already (a server's always does).

    Opening a new SQLite store creates its tables; two processes doing it at once fail
    with "table already exists", so a first run opens it in one process before the other.
    """
    uri = tracking_uri(paths)
    if is_tracking_server(uri):
        return True
    if not uri.startswith("sqlite:///"):
        return False
    database = Path(uri.removeprefix("sqlite:///"))
    return database.is_file() and database.stat().st_size > 0


def server_problem(paths: ProjectPaths, uri: str | None = None) -> str | None:
    """Why the tracking server (or the server at `uri`) cannot be reached; None when it answers or the store is local."""
    uri = uri or tracking_uri(paths)
    if not is_tracking_server(uri):
        return None
    # Credentials stay out of the probe: any HTTP answer, even 401 or 404, proves the server is up.
    probe = safe_uri(uri).rstrip("/") + "/health"
    # deferred: urllib.request pulls in http.client and ssl (~15 ms), wanted only for a server
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(probe, timeout=PROBE_TIMEOUT_S):
            return None
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return str(getattr(reason, "strerror", None) or reason)


def unreachable_message(paths: ProjectPaths, problem: str, then: str) -> str:
    """One sentence: which server (credentials stripped) is unreachable, why, and what to do."""
    return (
        f"the MLflow tracking server at {safe_uri(tracking_uri(paths))} is unreachable ({problem}); "
        f"start it or point MLFLOW_TRACKING_URI at a running server, then {then}"
    )


def require_server(paths: ProjectPaths, then: str = "run the command again") -> None:
    """Refuse, before anything changes, to work against a tracking server that does not answer."""
    problem = server_problem(paths)
    if problem is not None:
        raise ExternalToolError(unreachable_message(paths, problem, then))


def registry_uri(paths: ProjectPaths) -> str:
    """The registry in force: MLFLOW_REGISTRY_URI, else the tracking URI."""

    return os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri(paths)


def settle_hot_journal(database: Path) -> None:
    """Let SQLite roll back a write cut short (a `-journal` left beside `database`) before a read-only open.

    A read-only connection cannot roll a hot journal back: it fails with "attempt to write
    a readonly database", so after a crash or a power cut in the middle of an alias move
    the store would look damaged to `verify` and the registry unreadable to a rollback
    (which then leaves the aliases alone, mixing old aliases with new files). Opened for
    writing once, SQLite rolls the cut transaction back, as it does for the next writer.
    """
    if not Path(f"{database}-journal").exists():
        return
    try:
        with contextlib.closing(sqlite3.connect(database, timeout=30)) as db:
            db.execute("PRAGMA schema_version").fetchone()
    except sqlite3.Error:
        return  # a damaged database: the read that follows names it
