"""The model files of a registered version: the hash its run recorded, and the files its run keeps.

Training tags its run with `model_sha256`, the SHA-256 of the model file mlvs wrote
(`models/model.skops`), and keeps that file, its card and its golden predictions as
the run's artifacts under `models/`. MLflow's own logged model is not that file (it
serialises the model again, to other bytes), so whoever serves a version takes the
hash from the run and the bytes from the run's `models/`, and trusts them only once
they match.
"""

from __future__ import annotations

import re
from pathlib import Path

from mlvs.backends.mlflow.registry import _backend, _SqlRegistry, read_registry
from mlvs.backends.mlflow.store import tracking_uri
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


def download_model_dir(
    paths: ProjectPaths, run_id: str, names: tuple[str, ...], dest: Path
) -> Path:
    """Copy the files `names` of run `run_id`'s `models/` artifacts into `dest/models/`; return that folder.

    Each file is asked for by its own name, so a listing from the store can never name
    a path outside `dest`. A file the run does not keep raises ExternalToolError.
    """
    if not _RUN_ID.match(run_id):
        raise ExternalToolError(f"the registry names a malformed run id {run_id[:80]!r}")
    # deferred: mlflow (~1.7 s) is imported only when this runs
    import mlflow

    for name in names:
        try:
            mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=f"{ARTIFACT_DIR}/{name}",
                dst_path=str(dest),
                tracking_uri=tracking_uri(paths),
            )
        except Exception as error:  # MLflow raises its own and OS errors for a missing artifact
            raise ExternalToolError(
                f"run {run_id} keeps no {ARTIFACT_DIR}/{name} ({type(error).__name__}: "
                f"{(str(error).splitlines() or [''])[0][:200]})"
            ) from None
    return dest / ARTIFACT_DIR
