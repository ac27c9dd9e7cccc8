"""The alias history of the project's registered model, and which version an alias held at a time."""

from __future__ import annotations

from datetime import datetime

from mlvs.backends.mlflow.history import AliasHistory
from mlvs.backends.mlflow.registry import read_alias_history
from mlvs.ml.params import registered_model_name
from mlvs.paths import ProjectPaths


def alias_history(paths: ProjectPaths) -> AliasHistory:
    """Every recorded alias move of the model named in `params/train.yaml`, oldest first."""
    return read_alias_history(paths, registered_model_name(paths.root))


def champion_at(paths: ProjectPaths, moment: datetime, alias: str = "champion") -> str | None:
    """The version `alias` (by default `champion`) pointed at, at `moment`; None if none was recorded."""
    return alias_history(paths).version_at(alias, moment)
