"""The model files of a registered version: the hash its run recorded, and the files its run keeps.

Training tags its run with `model_sha256`, the SHA-256 of the model file mlvs wrote
(`models/model.skops`), and keeps that file, its card and its golden predictions as
the run's artifacts under `models/`. MLflow's own logged model is not that file (it
serialises the model again, to other bytes), so whoever serves a version takes the
hash from the run and the bytes from the run's `models/`, and trusts them only once
they match.
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from mlvs.backends.mlflow.registry import _backend, _sqlite_file, _SqlRegistry, read_registry
from mlvs.backends.mlflow.store import registry_uri, tracking_uri
from mlvs.errors import ExternalToolError
from mlvs.paths import ProjectPaths

# The run's artifact folder that holds the model directory as training wrote it.
ARTIFACT_DIR = "models"
MODEL_TAG = "model_sha256"
# What a run id from the registry must look like before it goes into a query or an artifact path.
_RUN_ID = re.compile(r"^[0-9a-zA-Z_-]{1,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def read_alias(paths: ProjectPaths, model_name: str) -> dict[str, tuple[str, str | None]]:
    """Every alias of `model_name` -> (version, run id); empty when the model is not registered.

    An unreadable registry raises ExternalToolError: it is never read as "no aliases".
    """
    state = read_registry(paths, model_name, None)
    if state.error:
        raise ExternalToolError(f"the MLflow registry cannot be read ({state.error})")
    return {alias: (info.version, info.run_id) for alias, info in state.aliases.items()}


class RegistryChanges:
    """A cheap sign that the embedded registry may have changed: read before each request is scored.

    SQLite bumps the change counter in its file header (bytes 24-27) at every commit
    that changes the database; with the file's identity (a restored database is
    another file) and the write-ahead log's size, that is a token that changes
    whenever any commit lands, for a few microseconds per read. A tracking server
    offers nothing like it: `token` is then None and the alias is only polled.
    """

    def __init__(self, paths: ProjectPaths) -> None:
        self.database = _sqlite_file(registry_uri(paths))
        self._handle: int | None = None
        self._inode: int | None = None

    def token(self) -> tuple[int, ...] | None:
        """Something that differs after any commit to the registry's database; None when it cannot tell."""
        if self.database is None:
            return None
        try:
            identity = os.stat(self.database)
            if identity.st_ino != self._inode or self._handle is None:
                self.close()
                self._handle = os.open(self.database, os.O_RDONLY)
                self._inode = identity.st_ino
            counter = int.from_bytes(os.pread(self._handle, 4, 24), "big")
            try:
                log = os.stat(f"{self.database}-wal")
                wal = (log.st_size, log.st_mtime_ns)
            except FileNotFoundError:
                wal = (-1, -1)
        except OSError:
            return None
        return (identity.st_ino, identity.st_size, identity.st_mtime_ns, counter, *wal)

    def close(self) -> None:
        """Let go of the database file."""
        if self._handle is not None:
            os.close(self._handle)
            self._handle = None


def recorded_model_sha256(paths: ProjectPaths, run_id: str) -> str | None:
    """The `model_sha256` tag of run `run_id`: the hash of the model file it trained; None if absent or malformed."""
    if not _RUN_ID.match(run_id):
        return None
    backend = _backend(paths)
    if backend is None:
        return None
    try:
        if isinstance(backend, _SqlRegistry):
            with backend._reading() as db:
                row = db.execute(
                    "SELECT value FROM tags WHERE run_uuid = ? AND key = ?", (run_id, MODEL_TAG)
                ).fetchone()
            value = row[0] if row else None
        else:
            value = backend.client.get_run(run_id).data.tags.get(MODEL_TAG)
    except Exception as error:  # sqlite3 or MLflow: the store did not answer
        raise ExternalToolError(
            f"the hash recorded by run {run_id} cannot be read ({type(error).__name__}: "
            f"{(str(error).splitlines() or [''])[0]})"
        ) from None
    return value if isinstance(value, str) and _SHA256.match(value) else None


def _local_artifact_root(paths: ProjectPaths, run_id: str) -> Path | None:
    """The folder of run `run_id`'s artifacts when the embedded store keeps them on this disk, else None."""
    backend = _backend(paths)
    if not isinstance(backend, _SqlRegistry):
        return None
    try:
        with backend._reading() as db:
            row = db.execute(
                "SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run_id,)
            ).fetchone()
    except sqlite3.Error:
        return None
    uri = urlsplit(row[0]) if row and isinstance(row[0], str) else None
    if uri is None or uri.scheme != "file" or uri.netloc not in ("", "localhost"):
        return None
    return Path(url2pathname(uri.path))


def run_model_dir(paths: ProjectPaths, run_id: str, names: tuple[str, ...], staging: Path) -> Path:
    """A folder whose `models/` holds the files `names` that run `run_id` keeps; nothing is trusted yet.

    The embedded store's own folder when its artifacts are on this disk (read in place,
    only these names); otherwise the run's `models/` downloaded into `staging` (MLflow
    keeps a listing's paths inside it). A file the run does not keep raises
    ExternalToolError.
    """
    if not _RUN_ID.match(run_id):
        raise ExternalToolError(f"the registry names a malformed run id {run_id[:80]!r}")
    local = _local_artifact_root(paths, run_id)
    if local is not None and all((local / ARTIFACT_DIR / name).is_file() for name in names):
        return local
    # MLflow prints a progress bar per download on stderr, which a service's log has no use for.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # deferred: mlflow (~1.7 s) is imported only when this runs
    import mlflow

    try:
        mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path=ARTIFACT_DIR,
            dst_path=str(staging),
            tracking_uri=tracking_uri(paths),
        )
    except Exception as error:  # MLflow raises its own and OS errors for a missing artifact
        raise ExternalToolError(
            f"run {run_id} keeps no {ARTIFACT_DIR}/ ({type(error).__name__}: "
            f"{(str(error).splitlines() or [''])[0][:200]})"
        ) from None
    missing = [name for name in names if not (staging / ARTIFACT_DIR / name).is_file()]
    if missing:
        raise ExternalToolError(
            f"run {run_id} keeps no {', '.join(f'{ARTIFACT_DIR}/{n}' for n in missing)}"
        )
    return staging
