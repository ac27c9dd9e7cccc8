"""Loading one registered version for serving: hash first, then skops with mlvs's types, then its golden predictions.

The hash a version must match is the one its training run recorded (the run's
`model_sha256` tag). The bytes come from the workspace's `models/` when its card
names that hash (no copy needed), else from the files the run keeps; whichever is
used, nothing is trusted before the bytes match. A version passes only if the
loaded model then reproduces its golden predictions bit for bit.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlvs.backends.mlflow.model_files import recorded_model_sha256, run_model_dir
from mlvs.errors import IntegrityError, MlvsError
from mlvs.ml.modelio import golden_mismatches, load_verified_model, read_card
from mlvs.ml.params import load_stage
from mlvs.ml.scoring import card_threshold
from mlvs.paths import ProjectPaths


class RefusedVersion(MlvsError):
    """Raised when a registered version fails verification and must not be served."""

    exit_code = 1


@dataclass(frozen=True)
class LoadedModel:
    """A verified model and what the service says about it."""

    name: str
    alias: str
    version: str
    model_sha256: str
    model: Any
    decision_threshold: float
    loaded_at: str
    # Where its bytes came from: the workspace's models/ or the run's artifacts.
    source: str
    # Seconds spent loading and verifying it.
    load_seconds: float
    # The file its bytes were read from, when it stays there (watched for changes); None for a download.
    source_file: str | None = None

    def describe(self) -> dict[str, Any]:
        """`GET /model`: the served model's name, alias, version, hash and when it was loaded."""
        return {
            "name": self.name,
            "alias": self.alias,
            "version": self.version,
            "model_sha256": self.model_sha256,
            "loaded_at": self.loaded_at,
            "decision_threshold": self.decision_threshold,
            "source": self.source,
        }


def now_text() -> str:
    """The current time, UTC, ISO 8601 to the millisecond."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_FILES = ("model.skops", "model_card.json", "golden_predictions.json")


def verify_model_dir(
    model_dir: ProjectPaths,
    expected: str,
    fallback_threshold: float | None,
    loaded: Any | None = None,
) -> tuple[Any, float]:
    """The model of `model_dir` and its decision threshold, once hash, card and golden predictions hold.

    `model_dir` is a project layout whose `models/` holds the three files training wrote;
    IntegrityError names the first check that failed. `loaded` is a model already
    loaded from verified bytes of SHA-256 `expected`: the same bytes make the same model,
    so it is not loaded again, and the card and golden predictions are still checked.
    """
    model = loaded if loaded is not None else load_verified_model(model_dir, expected)
    card = read_card(model_dir)
    if card["model_sha256"] != expected:
        raise IntegrityError(
            f"its model card describes another model file ({card['model_sha256'][:12]}…)"
        )
    try:
        golden = json.loads(model_dir.golden.read_bytes())
    except (OSError, ValueError) as error:
        raise IntegrityError(f"its golden predictions are unreadable ({error})") from None
    if not isinstance(golden, dict) or golden.get("model_sha256") != expected:
        raise IntegrityError("its golden predictions were recorded for another model file")
    if not golden.get("rows"):
        raise IntegrityError("its golden predictions hold no rows, so they prove nothing")
    mismatches = golden_mismatches(model, model_dir)
    if mismatches:
        raise IntegrityError(
            f"it does not reproduce its golden predictions ({len(mismatches)} differ, first: {mismatches[0]})"
        )
    threshold = card_threshold(card, fallback_threshold)
    if threshold is None:
        raise IntegrityError(
            "neither its model card nor params/train.yaml gives a decision threshold between 0 and 1"
        )
    return model, threshold


def _workspace_threshold(paths: ProjectPaths) -> float | None:
    try:
        value = load_stage("train", paths.root).decision_threshold
    except MlvsError:
        return None
    return value if isinstance(value, float) else None


def load_version(
    paths: ProjectPaths,
    name: str,
    alias: str,
    version: str,
    run_id: str | None,
    loaded_by_sha256: dict[str, Any] | None = None,
) -> LoadedModel:
    """Version `version` of `name`, verified; RefusedVersion says why it must not be served.

    `loaded_by_sha256` holds models already loaded from verified bytes, by their SHA-256:
    a version whose run recorded one of those hashes (the same model registered again)
    takes that model instead of loading the same bytes again (seconds for a large forest).
    """
    known = (loaded_by_sha256 or {}).get
    started = time.perf_counter()
    if not run_id:
        raise RefusedVersion(f"version {version} of {name} names no training run")
    try:
        expected = recorded_model_sha256(paths, run_id)
    except MlvsError as error:
        raise RefusedVersion(str(error)) from None
    if expected is None:
        raise RefusedVersion(
            f"the run {run_id} of version {version} records no model_sha256, so its file cannot be checked"
        )
    fallback = _workspace_threshold(paths)
    reasons = []

    def loaded(model: Any, threshold: float, source: str, source_file: Path | None) -> LoadedModel:
        return LoadedModel(
            name,
            alias,
            version,
            expected,
            model,
            threshold,
            now_text(),
            source,
            time.perf_counter() - started,
            str(source_file) if source_file is not None else None,
        )

    # The workspace first, when its card names the same hash: no copy to make.
    try:
        workspace_hash = read_card(paths)["model_sha256"]
    except MlvsError:
        workspace_hash = None
    if workspace_hash == expected:
        try:
            model, threshold = verify_model_dir(paths, expected, fallback, known(expected))
            return loaded(model, threshold, "workspace", paths.model_file)
        except IntegrityError as error:
            reasons.append(f"workspace models/: {error}")
    # The run's own copy: read in place from a local store, else fetched into the workspace's
    # state (never outside it) and removed after.
    staging = paths.state / "serve"
    staging.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="download-", dir=staging))
    try:
        source = run_model_dir(paths, run_id, _FILES, folder)
        in_place = ProjectPaths(source)
        model, threshold = verify_model_dir(in_place, expected, fallback, known(expected))
    except MlvsError as error:
        reasons.append(f"run {run_id}'s models/: {error}")
        raise RefusedVersion(
            f"version {version} of {name} failed verification: {'; '.join(reasons)}"
        ) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    # Read in place from a local store: that file is watched; a download is gone.
    kept = None if source.is_relative_to(folder) else in_place.model_file
    return loaded(model, threshold, "run artifacts", kept)
