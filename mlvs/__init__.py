"""mlvs: notebook-driven MLOps versioning over Git, DVC and MLflow.

The names below are what the notebooks call; everything else is internal.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import mlvs._fastimport  # noqa: F401  (first: it keeps a slow import out)
from mlvs.ml.params import load_stage
from mlvs.paths import ProjectPaths, project

__version__ = importlib.metadata.version("mlvs")  # pyproject.toml is the one place it is written


def load_params(stage: str, **overrides: Any) -> Any:
    """Validated parameters of `stage` from `params/`, with a notebook's non-None overrides on top."""
    return load_stage(stage, project().root, overrides)


__all__ = ["ProjectPaths", "__version__", "load_params", "project"]
