"""Stage parameters: YAML in `params/`, loaded into typed, validated objects here.

Every stage reads its own file (`params/<stage>.yaml`). A wrong key, type or
range stops the run before any work, with one line per problem naming the
file, the key, the value given and what is allowed.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mlvs.errors import ParamsError
from mlvs.ml.batches import SCENARIOS, Scenario, ScenarioName
from mlvs.ml.data import SCHEMA
from mlvs.ml.decision import CELL_TOLERANCE, MATRIX_CELLS, flat_matrix
from mlvs.ml.modeling import MODEL_TYPES
from mlvs.ml.monitor import DeployGuard, Rule
from mlvs.ml.params_files import MODEL_NAME_PATTERN, read_yaml, stage_file
from mlvs.paths import project


class _Strict(BaseModel):
    # strict: "5" is not 5 and true is not 1; forbid: a typo is an error, not a silent default.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, defer_build=True)


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


# The dearest customer the schema allows: the most a scaled customer value can reach.
MAX_MONTHLY_CHARGES = next(float(c.maximum or 0.0) for c in SCHEMA if c.name == "monthly_charges")


class BusinessParams(_Strict):
    """The drivers of a retention campaign's value, against doing nothing (see `mlvs.ml.decision`).

    The confusion-matrix cells follow from them; a cell still written out must agree.
    """

    customer_value: float | None = Field(default=None, gt=0.0)
    customer_value_months: float | None = Field(default=None, gt=0.0)
    save_rate: float = Field(gt=0.0, le=1.0)
    offer_cost: float = Field(gt=0.0)
    non_churner_cost: float = Field(ge=0.0)
    budget_share: float = Field(gt=0.0, le=1.0)
    # Optional, checked against the drivers: what older params files wrote out by hand.
    true_positive: float | None = None
    false_positive: float | None = None
    false_negative: float | None = None
    true_negative: float | None = None
    contact_cost: float | None = None

    @model_validator(mode="after")
    def _consistent(self) -> BusinessParams:
        if (self.customer_value is None) == (self.customer_value_months is None):
            raise ValueError(
                "give exactly one of customer_value (the same for everyone) and "
                "customer_value_months (that many months of each customer's monthly charges)"
            )
        if self.contact_cost is not None and self.contact_cost != self.offer_cost:
            raise ValueError(
                f"contact_cost = {self.contact_cost:g} disagrees with offer_cost = {self.offer_cost:g}; "
                "remove contact_cost (the cost of one offer is offer_cost)"
            )
        written = {c: getattr(self, c) for c in MATRIX_CELLS if getattr(self, c) is not None}
        if written and self.customer_value is None:
            raise ValueError(
                f"{', '.join(written)} cannot be written out when customer value scales with "
                "monthly charges; remove them (they follow from the drivers)"
            )
        if self.customer_value is not None:
            derived = flat_matrix(self)
            for cell, value in written.items():
                if abs(value - derived[cell]) > CELL_TOLERANCE:
                    raise ValueError(
                        f"{cell} = {value:g} disagrees with the drivers, which make it "
                        f"{derived[cell]:g}; remove {cell} or change the drivers"
                    )
        # The most an offer can save: a flat value, or the dearest customer the schema allows.
        worth, of = (
            (self.customer_value, "customer_value")
            if self.customer_value is not None
            else (
                float(self.customer_value_months or 0.0) * MAX_MONTHLY_CHARGES,
                f"customer_value_months x {MAX_MONTHLY_CHARGES:g} (the highest monthly charges)",
            )
        )
        if self.save_rate * worth <= self.offer_cost:
            raise ValueError(
                f"an offer saves at most save_rate x {of} = {self.save_rate * worth:g} per "
                f"churner contacted but costs offer_cost = {self.offer_cost:g}, so no campaign "
                "pays; check save_rate, the customer value and offer_cost"
            )
        return self


class RegistryParams(_Strict):
    """Where the model is registered, and the gate a new version must pass to become champion."""

    model_name: str = Field(pattern=MODEL_NAME_PATTERN)
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
    # A probability, or "value": the threshold of highest net value on out-of-fold predictions.
    decision_threshold: float | Literal["value"]
    golden_sample_size: int = Field(ge=1, le=10_000)
    # The comparison fits every other model type once per fold: the dearest view of 02_train.
    compare_model_types: bool = True
    hyperparameters: dict[str, dict[str, Any]]
    business: BusinessParams
    registry: RegistryParams

    @field_validator("decision_threshold", mode="before")
    @classmethod
    def _probability_or_value(cls, value: Any) -> Any:
        # One check for both forms, so a wrong value gets one line, not one per form.
        if value == "value" and isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool) and 0.0 < value < 1.0:
            return float(value)
        raise ValueError(
            "must be a probability strictly between 0 and 1, or 'value' (the threshold of "
            "highest net value on out-of-fold predictions)"
        )

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
        return self.hyperparameters_of(self.model_type)

    def hyperparameters_of(self, model_type: str) -> BaseModel:
        """The validated hyperparameters of `model_type` (its defaults where params give none)."""
        return MODEL_TYPES[model_type].hyperparameters.model_validate(
            self.hyperparameters.get(model_type, {})
        )


class MonitoringParams(_Strict):
    """Parameters of monitoring (`notebooks/05_monitor.ipynb`) and of the batches it judges."""

    seed: int = Field(ge=0, le=2**32 - 1)
    batch_rows: int = Field(ge=50, le=1_000_000)
    # Every scenario of `mlvs.ml.batches`, at its default severity.
    scenarios: dict[ScenarioName, Scenario]
    # The alert rules (`mlvs.ml.monitor`), each named once.
    rules: list[Rule] = Field(min_length=1, max_length=100)
    # A fresh deploy judged against the version it replaced once labels arrive.
    deploy_guard: DeployGuard

    @model_validator(mode="after")
    def _every_scenario_and_one_name_per_rule(self) -> MonitoringParams:
        missing = [name for name in SCENARIOS if name not in self.scenarios]
        if missing:
            raise ValueError(f"scenarios: add {', '.join(missing)} (each with its severity)")
        names = [rule.name for rule in self.rules]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"rules: each name once; given more than once: {', '.join(twice)}")
        return self


STAGES: dict[str, type[_Strict]] = {
    "prepare": PrepareParams,
    "train": TrainParams,
    "monitoring": MonitoringParams,
}


def _describe(err: Any, prefix: str = "") -> str:
    key = ".".join(str(part) for part in (prefix, *err["loc"]) if part != "")
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key '{key}'"
    if kind == "missing":
        return f"'{key}' is missing"
    message = err["msg"].removeprefix("Value error, ")
    if not key:
        return message
    if isinstance(err["input"], dict):  # a whole section: its values would hide the message
        return f"{key}: {message}"
    return f"{key} = {err['input']!r} is not allowed: {message}"


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


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


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
        loaded = model.model_validate(data)
    except ValidationError as exc:
        raise ParamsError(_format_errors(str(path.relative_to(root)), exc, model)) from None
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not given:
        return loaded
    try:
        return model.model_validate(_merge(data, given))
    except ValidationError as exc:
        raise ParamsError(_format_errors(f"parameter override for {stage}", exc, model)) from None


def validated_model_name(root: Path) -> str:
    """The registered model's name, with the whole `registry` section checked as `load_stage` checks it."""
    path = stage_file(root, "train")
    section = read_yaml(path).get("registry")
    try:
        return RegistryParams.model_validate(section).model_name
    except ValidationError as exc:
        raise ParamsError(
            _format_errors(f"{path.relative_to(root)} (registry)", exc, RegistryParams)
        ) from None


def stage_keys(stage: str) -> list[str]:
    """Top-level parameter names of `stage`: the names its notebook may override."""
    return sorted(STAGES[stage].model_fields)


def load_params(stage: str, **overrides: Any) -> Any:
    """Validated parameters of `stage` from `params/`, with a notebook's non-None overrides on top."""
    return load_stage(stage, project().root, overrides)
