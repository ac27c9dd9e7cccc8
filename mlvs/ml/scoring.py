"""Scoring requests: the records a caller sends, checked against the declared schema, and the decisions.

The record schema is built from `mlvs.ml.data.SCHEMA`, the one that `01_prepare`
checks the data against, so a column, a category or a range changes in one place.
A record holds the model's raw input columns (and, optionally, the customer's id),
never the label. Types are strict: a number sent as text, a boolean for a 0/1
column or a fraction for a whole number is refused, not coerced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from mlvs.ml.data import FEATURES, SCHEMA, Column

if TYPE_CHECKING:
    import pandas as pd

# One request scores at most this many records: a bound on the memory a caller can make it take.
MAX_RECORDS = 10_000
MAX_ID_LENGTH = 64


def _field(column: Column) -> tuple[Any, Any]:
    """The pydantic type and default of one schema column."""
    if column.kind == "category":
        return Literal[column.allowed], ...
    if column.kind == "id":
        return Annotated[str | None, Field(max_length=MAX_ID_LENGTH)], None
    bounds = Field(ge=column.minimum, le=column.maximum)
    return Annotated[int if column.kind == "int" else float, bounds], ...


# strict: no coercion of "5" to 5 or of true to 1; forbid: the label or a misspelt column is refused by name.
CustomerRecord: type[BaseModel] = create_model(
    "CustomerRecord",
    __config__=ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True),
    **{c.name: _field(c) for c in SCHEMA if c.name in FEATURES or c.kind == "id"},  # type: ignore[call-overload]
)
CustomerRecord.__doc__ = (
    "One customer's raw columns, as the declared schema allows them (no label)."
)


class ScoringRequest(BaseModel):
    """The body of `POST /predict`: the customers to score."""

    model_config = ConfigDict(strict=True, extra="forbid")
    records: list[CustomerRecord] = Field(min_length=1, max_length=MAX_RECORDS)  # type: ignore[valid-type]


class Prediction(BaseModel):
    """One record's churn probability and the decision at the model's threshold."""

    churn_probability: float
    churn: bool


class ScoringResponse(BaseModel):
    """The answer to `POST /predict`: which model version computed it, one prediction per record."""

    model_version: str
    predictions: list[Prediction]


def record_problems(errors: list[Any]) -> list[dict[str, Any]]:
    """Pydantic's errors of a request body as `{record, column, problem}`, without the values sent.

    `record` is the index of the record in `records` (None when the body itself is
    wrong), `column` the column's name (None when the whole record is wrong).
    """
    problems = []
    for error in errors:
        location = [part for part in error.get("loc", ()) if part != "body"]
        record = column = None
        if len(location) >= 2 and location[0] == "records" and isinstance(location[1], int):
            record = location[1]
            if len(location) >= 3:
                column = str(location[2])
        elif location and isinstance(location[0], str):  # not a position in unparsable JSON
            column = location[0]
        message = str(error.get("msg", "is not valid"))
        if error.get("type") == "extra_forbidden":
            message = f"is not a column of the schema (columns: {', '.join(FEATURES)})"
        elif error.get("type") == "missing" and record is not None:
            message = "is missing"
        problems.append({"record": record, "column": column, "problem": message})
    return problems


def parse_request(payload: Any) -> ScoringRequest:
    """`payload` (decoded JSON) checked against the schema; ValidationError names what is wrong."""
    return ScoringRequest.model_validate(payload)


def request_problems(payload: Any) -> list[dict[str, Any]]:
    """Every way `payload` breaks the request schema, as `record_problems` gives them (empty if none)."""
    try:
        parse_request(payload)
    except ValidationError as exc:
        return record_problems(exc.errors())
    return []


def records_frame(records: list[Any]) -> pd.DataFrame:
    """The model's input frame of checked records: the feature columns, in the schema's order."""
    # deferred: pandas (~1 s) is imported only when this runs
    import pandas as pd

    return pd.DataFrame({name: [getattr(r, name) for r in records] for name in FEATURES})


def decisions(probabilities: Any, threshold: float) -> list[dict[str, Any]]:
    """`{"churn_probability", "churn"}` for each probability: churn when at or above `threshold`."""
    return [
        {"churn_probability": p, "churn": p >= threshold} for p in (float(x) for x in probabilities)
    ]


def card_threshold(card: dict[str, Any], fallback: float | None) -> float | None:
    """The decision threshold a model card records (top level, else its training params), else `fallback`.

    A card is read from the registry's store: a value that is not a probability is not used.
    """
    params = card.get("params")
    for value in (
        card.get("decision_threshold"),
        params.get("decision_threshold") if isinstance(params, dict) else None,
        fallback,
    ):
        if isinstance(value, int | float) and not isinstance(value, bool) and 0.0 < value < 1.0:
            return float(value)
    return None
