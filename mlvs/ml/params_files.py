"""Reading `params/`: the files, and the one value read without the parameter schemas.

The schemas (`mlvs.ml.params`) import pydantic and build every stage's model, about a
quarter of a second; a command that only needs the registered model's name (the alias
history of the reports index, after every snapshot and rollback) reads it here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from mlvs.errors import ParamsError

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every way it can be broken into a ParamsError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(
            f"{path}: the file does not exist; create it or restore it from git"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamsError(f"{path}: cannot be read ({exc}); check the file") from None
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:  # PyYAML recurses once per nesting level
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise ParamsError(f"{path}: is not valid YAML{at} ({problem}); fix the syntax") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(
            f"{path}: must be a mapping of parameter names to values, not a {type(data).__name__}"
        )
    return data


def stage_file(root: Path, stage: str) -> Path:
    """The params file of `stage`."""
    return root / "params" / f"{stage}.yaml"


def well_formed_model_name(root: Path) -> str | None:
    """The registered model's name from `params/train.yaml` if it is well formed, else None.

    None leaves the refusal, worded as every parameter refusal is, to the schema's check
    of the `registry` section (`mlvs.ml.params.validated_model_name`).
    """
    section = read_yaml(stage_file(root, "train")).get("registry")
    name = section.get("model_name") if isinstance(section, dict) else None
    if isinstance(name, str) and re.fullmatch(MODEL_NAME_PATTERN, name):
        return name
    return None
