"""The alias history of the project's registered model, and which version an alias held at a time."""

from __future__ import annotations

import importlib
from datetime import datetime

from mlvs.backends.mlflow.history import AliasHistory
from mlvs.backends.mlflow.registry import read_alias_history
from mlvs.ml.params_files import well_formed_model_name
from mlvs.paths import ProjectPaths

_SCHEMAS = "mlvs.ml.params"


def registered_model_name(paths: ProjectPaths) -> str:
    """The model named in `params/train.yaml`; a malformed name is refused as any parameter is."""
    name = well_formed_model_name(paths.root)
    if name is not None:
        return name
    # The parameter schemas bring pydantic (~0.25 s): imported only to word the refusal.
    return str(importlib.import_module(_SCHEMAS).validated_model_name(paths.root))


def alias_history(paths: ProjectPaths) -> AliasHistory:
    """Every recorded alias move of the model named in `params/train.yaml`, oldest first."""
    return read_alias_history(paths, registered_model_name(paths))


def champion_at(paths: ProjectPaths, moment: datetime, alias: str = "champion") -> str | None:
    """The version `alias` (by default `champion`) pointed at, at `moment`; None if none was recorded."""
    return alias_history(paths).version_at(alias, moment)
