"""Batches of customers scored after deployment, from seeded scenarios whose truth is known.

A batch is what the service would see in a period: the raw customer columns without
`churn`. Its labels (who churned) come separately, as they do weeks later. Each scenario
changes the world the training data came from in one known way, by a `severity`:

- `none`: the training distribution itself;
- `price_rise`: monthly charges up by `severity` (0.15 is 15%), and churn follows the
  bigger bills as the generator's model says it would;
- `contract_shift`: that share of month-to-month customers on two-year contracts instead;
- `new_payment_method`: that share of customers paying by a method the schema does not
  know ("Digital wallet");
- `concept_drift`: the same inputs, other labels: what drives churn changes, from the
  generator's effects towards `CHANGED_EFFECTS`, by `severity` (1 is all the way);
- `missing_values`: that share of one column's values left empty;
- `gradual`: a price rise that grows by `severity / ramp_batches` with each batch, up to
  `severity`.

Everything is drawn from a seed derived from the scenario's seed and the batch's number,
so batch N of a scenario has the same bytes whoever makes it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlvs.ml.data import (
    FEATURES,
    TARGET,
    draw_churn,
    frame_log_odds,
    generate_customers,
    generator_effects,
)

if TYPE_CHECKING:
    import pandas as pd

ScenarioName = Literal[
    "none",
    "price_rise",
    "contract_shift",
    "new_payment_method",
    "concept_drift",
    "missing_values",
    "gradual",
]
SCENARIOS: tuple[str, ...] = ScenarioName.__args__  # type: ignore[attr-defined]

UNKNOWN_PAYMENT_METHOD = "Digital wallet"
# Where churn's drivers go in `concept_drift` at severity 1: contracts stop protecting,
# electronic checks stop mattering, support calls start to keep customers (they were
# helped), and seniors churn much more.
CHANGED_EFFECTS = {
    "one_year": 0.0,
    "two_year": 0.0,
    "electronic_check": 0.0,
    "support_calls": -0.25,
    "senior": 1.5,
}


class Scenario(BaseModel):
    """One scenario of `params/monitoring.yaml`: how far the world moves, and where."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, defer_build=True)

    severity: float = Field(default=0.0, ge=0.0, le=5.0)
    column: str = "tenure_months"  # `missing_values` only: a feature column
    ramp_batches: int = Field(default=5, ge=1, le=1000)  # `gradual` only

    @field_validator("column")
    @classmethod
    def _a_feature(cls, column: str) -> str:
        if column not in FEATURES:
            raise ValueError(f"must be one of the features: {', '.join(FEATURES)}")
        return column


@dataclass(frozen=True)
class Batch:
    """One batch: the customers as scored, and their labels as they arrive later."""

    number: int
    scenario: str
    severity: float  # what this batch was drawn at (`gradual` grows it)
    customers: pd.DataFrame  # the raw columns without `churn`
    labels: pd.DataFrame  # `customer_id`, `churn`


def batch_seed(seed: int, scenario: str, number: int) -> int:
    """The seed of batch `number` of `scenario`: stable, and far from its neighbours'."""
    digest = hashlib.sha256(f"{seed}:{scenario}:{number}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _effects(severity: float) -> dict[str, float]:
    share, base = min(severity, 1.0), generator_effects()
    return {
        name: (1.0 - share) * base[name] + share * CHANGED_EFFECTS[name] for name in CHANGED_EFFECTS
    }


def make_batch(
    scenario: str,
    settings: Scenario,
    number: int,
    n_rows: int,
    seed: int,
    churn_rate: float,
    signal_strength: float,
    label_noise: float,
) -> Batch:
    """Batch `number` (from 1) of `scenario`, `n_rows` customers of a world the generator's
    parameters describe, changed as the scenario says."""
    # deferred: numpy (~0.2 s) is imported only when this runs
    import numpy as np

    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}")
    rng = np.random.default_rng(batch_seed(seed, scenario, number))
    frame = generate_customers(
        n_rows, churn_rate, signal_strength, label_noise, int(rng.integers(2**32))
    )
    frame["customer_id"] = [f"B{number:04d}-{i:06d}" for i in range(1, n_rows + 1)]
    trained_logit = signal_strength * frame_log_odds(frame)
    severity = settings.severity
    if scenario == "gradual":
        severity = settings.severity * min(number, settings.ramp_batches) / settings.ramp_batches
    if scenario in ("price_rise", "gradual"):
        frame["monthly_charges"] = np.minimum(
            np.round(frame["monthly_charges"] * (1.0 + severity), 2), 200.0
        )
    elif scenario == "contract_shift":
        monthly = np.flatnonzero(frame["contract"].to_numpy() == "Month-to-month")
        moved = rng.choice(monthly, size=round(min(severity, 1.0) * monthly.size), replace=False)
        frame.loc[frame.index[moved], "contract"] = "Two year"
    elif scenario == "new_payment_method":
        moved = rng.random(n_rows) < severity
        frame.loc[moved, "payment_method"] = UNKNOWN_PAYMENT_METHOD
    effects = _effects(severity) if scenario == "concept_drift" else None
    logit = signal_strength * frame_log_odds(frame, effects)
    frame[TARGET] = draw_churn(rng, logit, churn_rate, label_noise, intercept_logit=trained_logit)
    labels = frame[["customer_id", TARGET]].copy()
    customers = frame.drop(columns=[TARGET])
    if scenario == "missing_values":
        blank = rng.random(n_rows) < severity
        customers[settings.column] = customers[settings.column].astype(object)
        customers.loc[blank, settings.column] = None
    return Batch(number, scenario, severity, customers, labels)
