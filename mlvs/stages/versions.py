"""A registered version's model, loaded from the very file mlvs saved for it, hash first.

The run that registered a version tags it with the SHA-256 and the MD5 of the
`models/model.skops` it saved. The file is found by that MD5 in the DVC cache (or
the DVC remote, which then repairs the cache), or is the workspace's model when
its bytes are those; it is loaded only if it hashes to the recorded SHA-256, with
skops and mlvs's own trusted types (`mlvs.ml.modelio`), never pickle.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from mlvs._io import sha256_file
from mlvs.backends.dvc.objects import ObjectStore
from mlvs.backends.mlflow.versions import VersionDetails, register_version, version_details
from mlvs.errors import IntegrityError
from mlvs.ml.modelio import load_model_bytes, model_bytes, read_card
from mlvs.ml.params import load_stage
from mlvs.paths import ProjectPaths

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MD5 = re.compile(r"^[0-9a-f]{32}$")
MODEL_SHA256_TAG = "model_sha256"
MODEL_MD5_TAG = "model_md5"


@dataclass(frozen=True)
class VersionModel:
    """A registered version's fitted model, with what identifies it and how it decides."""

    version: str
    model: Any
    model_sha256: str
    threshold: float
    data_sha256: str | None  # of the data it was trained and tested on, as its run recorded it


def _threshold(details: VersionDetails, default: float) -> float:
    # The run's logged decision threshold; a version logged without one decides at today's.
    text = details.params.get("decision_threshold")
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value < 1.0:
        raise IntegrityError(
            f"version {details.version}'s run records decision_threshold {text[:40]!r}, not a "
            "probability between 0 and 1; the version cannot be compared"
        )
    return value


def _payload(paths: ProjectPaths, details: VersionDetails, sha256: str) -> bytes:
    shown = f"version {details.version}'s model"
    workspace = paths.model_file
    if workspace.is_file() and sha256_file(workspace) == sha256:
        return workspace.read_bytes()
    md5 = details.tags.get(MODEL_MD5_TAG, "")
    if not _MD5.match(md5):
        raise IntegrityError(
            f"{shown} is not in the workspace and its run records no model MD5 to find it in the DVC "
            "cache; roll back to a snapshot that holds it, or train it again"
        )
    store = ObjectStore(paths)
    cached = store.cache_path(md5)
    if not cached.is_file() and not store.fetch_to_cache(md5, sha256):
        raise IntegrityError(
            f"{shown} (DVC object {md5[:12]}…) is neither in the DVC cache nor in the remote; "
            "train it again or fetch it with `dvc fetch`"
        )
    return cached.read_bytes()


def load_version_model(
    paths: ProjectPaths, model_name: str, version: str, default_threshold: float
) -> VersionModel:
    """The model of `model_name` version `version`, verified against the hash its run recorded."""
    details = version_details(paths, model_name, version)
    sha256 = details.tags.get(MODEL_SHA256_TAG, "")
    if not _SHA256.match(sha256):
        raise IntegrityError(
            f"version {version} of {model_name!r} has no recorded model SHA-256 (its run's "
            f"{MODEL_SHA256_TAG} tag), so its model cannot be verified; register it again by training"
        )
    model = load_model_bytes(
        _payload(paths, details, sha256),
        sha256,
        f"version {version}'s model",
        fix="the stored copy is damaged; run `mlvs recover` or train it again",
    )
    data = details.tags.get("data_sha256")
    return VersionModel(
        version,
        model,
        sha256,
        _threshold(details, default_threshold),
        data if data and _SHA256.match(data) else None,
    )


def register_fitted_model(
    paths: ProjectPaths, model: Any, run_name: str, params: dict[str, str]
) -> str:
    """Register a fitted model trained outside the pipeline as a new version; return its number.

    Its file (skops, byte-reproducible) goes into the DVC cache, where `load_version_model`
    finds it by the hashes its run records; `params` should hold its `decision_threshold`.
    """
    train = load_stage("train", paths.root)
    payload = model_bytes(model)
    sha256, md5 = hashlib.sha256(payload).hexdigest(), hashlib.md5(payload).hexdigest()
    ObjectStore(paths).put_bytes(md5, payload)
    try:
        data = read_card(paths).get("data_sha256")
    except IntegrityError:
        data = None
    return register_version(
        paths,
        train.registry.model_name,
        run_name,
        {MODEL_SHA256_TAG: sha256, MODEL_MD5_TAG: md5, "data_sha256": str(data or "")},
        params,
    )
