"""Stage parameters: YAML in `params/`, loaded into typed, validated objects here.

Every stage reads its own file (`params/<stage>.yaml`). A wrong key, type or
range stops the run before any work, with one line per problem naming the
file, the key, the value given and what is allowed.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mlvs.errors import ParamsError
from mlvs.ml.modeling import MODEL_TYPES
from mlvs.paths import project


class _Strict(BaseModel):
    # strict: "5" is not 5 and true is not 1; forbid: a typo is an error, not a silent default.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class PrepareParams(_Strict):
    """Parameters of the prepare stage: synthetic data and the train/test split."""

    seed: int = Field(ge=0, le=2**32 - 1)
    n_rows: int = Field(ge=100, le=5_000_000)
    churn_rate: float = Field(ge=0.02, le=0.8)
    signal_strength: float = Field(ge=0.0, le=5.0)
    label_noise: float = Field(ge=0.0, le=0.3)
    test_size: float = Field(ge=0.05, le=0.5)

    @model_validator(mode="after")
    def _reachable_churn_rate(self) -> PrepareParams:
        # Flipped labels pull the rate towards label_noise, so some pairs cannot be met.
        if not self.label_noise < self.churn_rate < 1 - self.label_noise:
            raise ValueError(
                f"churn_rate = {self.churn_rate} cannot be reached with label_noise = {self.label_noise}; "
                "keep churn_rate between label_noise and 1 - label_noise"
            )
        return self


class BusinessParams(_Strict):
    """Value per customer of each confusion-matrix cell, against doing nothing."""

    true_positive: float
    false_positive: float
    false_negative: float
    true_negative: float
    contact_cost: float = Field(gt=0.0)


class RegistryParams(_Strict):
    """Where the model is registered, and the gate a new version must pass to become champion."""

    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    # The gate (`mlvs.ml.gate`): the gain over the champion each metric must reach, absolute and
    # relative to the champion's figure, and the paired bootstrap that tells a gain from noise.
    min_roc_auc_gain: float = Field(ge=0.0, le=1.0)
    min_roc_auc_gain_relative: float = Field(ge=0.0, le=1.0)
    min_net_value_gain: float = Field(ge=0.0)
    min_net_value_gain_relative: float = Field(ge=0.0, le=10.0)
    bootstrap_resamples: int = Field(ge=100, le=100_000)
    bootstrap_confidence: float = Field(ge=0.5, lt=1.0)


class TrainParams(_Strict):
    """Parameters of the train stage: model, validation, business and registry."""

    seed: int = Field(ge=0, le=2**32 - 1)
    model_type: str
    cv_folds: int = Field(ge=2, le=20)
    decision_threshold: float = Field(gt=0.0, lt=1.0)
    golden_sample_size: int = Field(ge=1, le=10_000)
    hyperparameters: dict[str, dict[str, Any]]
    business: BusinessParams
    registry: RegistryParams

    @field_validator("model_type")
    @classmethod
    def _known_model_type(cls, value: str) -> str:
        if value not in MODEL_TYPES:
            raise ValueError(f"must be one of {', '.join(sorted(MODEL_TYPES))}")
        return value

    @model_validator(mode="after")
    def _valid_hyperparameters(self) -> TrainParams:
        for name, values in self.hyperparameters.items():
            if name not in MODEL_TYPES:
                raise ValueError(
                    f"hyperparameters.{name} names no model type; known: {', '.join(sorted(MODEL_TYPES))}"
                )
            try:
                MODEL_TYPES[name].hyperparameters.model_validate(values)
            except ValidationError as exc:
                allowed = ", ".join(MODEL_TYPES[name].hyperparameters.model_fields)
                raise ValueError(
                    "; ".join(
                        _describe(err, prefix=f"hyperparameters.{name}")
                        + (f" (allowed: {allowed})" if err["type"] == "extra_forbidden" else "")
                        for err in exc.errors()
                    )
                ) from None
        return self

    def model_hyperparameters(self) -> BaseModel:
        """The validated hyperparameters of the chosen model type."""
        return MODEL_TYPES[self.model_type].hyperparameters.model_validate(
            self.hyperparameters.get(self.model_type, {})
        )


STAGES: dict[str, type[_Strict]] = {"prepare": PrepareParams, "train": TrainParams}


def _describe(err: Any, prefix: str = "") -> str:
    key = ".".join(str(part) for part in (prefix, *err["loc"]) if part != "")
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key '{key}'"
    if kind == "missing":
        return f"'{key}' is missing"
    message = err["msg"].removeprefix("Value error, ")
    return f"{key} = {err['input']!r} is not allowed: {message}" if key else message


def _format_errors(source: str, exc: ValidationError, model: type[BaseModel]) -> str:
    known = sorted(model.model_fields)
    lines = []
    for err in exc.errors():
        line = f"{source}: {_describe(err)}"
        if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
            close = difflib.get_close_matches(str(err["loc"][0]), known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            line += f" ({hint}allowed: {', '.join(known)})"
        lines.append(line)
    return "\n".join(lines)


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


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def stage_file(root: Path, stage: str) -> Path:
    """The params file of `stage`."""
    return root / "params" / f"{stage}.yaml"


def load_stage(stage: str, root: Path, overrides: dict[str, Any] | None = None) -> Any:
    """Load and validate the parameters of `stage`, with optional overrides on top.

    None values in `overrides` mean "keep the file's value", which is how a
    notebook's parameters cell says "not overridden".
    """
    if stage not in STAGES:
        raise ParamsError(f"unknown stage '{stage}'; known stages: {', '.join(STAGES)}")
    model = STAGES[stage]
    path = stage_file(root, stage)
    data = read_yaml(path)
    try:
        model.model_validate(data)
    except ValidationError as exc:
        raise ParamsError(_format_errors(str(path.relative_to(root)), exc, model)) from None
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not given:
        return model.model_validate(data)
    try:
        return model.model_validate(_merge(data, given))
    except ValidationError as exc:
        raise ParamsError(_format_errors(f"parameter override for {stage}", exc, model)) from None


def stage_keys(stage: str) -> list[str]:
    """Top-level parameter names of `stage`: the names its notebook may override."""
    return sorted(STAGES[stage].model_fields)


def load_params(stage: str, **overrides: Any) -> Any:
    """Validated parameters of `stage` from `params/`, with a notebook's non-None overrides on top."""
    return load_stage(stage, project().root, overrides)
