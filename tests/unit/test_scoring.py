"""Scoring requests: records are held to the declared schema of `01_prepare`, record by record, column by column."""

from __future__ import annotations

from typing import Any

import pytest

from mlvs.ml.data import FEATURES, SCHEMA
from mlvs.ml.scoring import (
    MAX_RECORDS,
    card_threshold,
    decisions,
    parse_request,
    records_frame,
    request_problems,
)

VALID: dict[str, Any] = {
    "customer_id": "C0000001",
    "tenure_months": 12,
    "contract": "Month-to-month",
    "monthly_charges": 70.5,
    "total_charges": 846.0,
    "support_calls": 2,
    "payment_method": "Electronic check",
    "internet_service": "Fiber optic",
    "paperless_billing": 1,
    "senior_citizen": 0,
}


def changed(**columns: Any) -> dict[str, Any]:
    record = dict(VALID)
    for name, value in columns.items():
        if value is ...:
            record.pop(name)
        else:
            record[name] = value
    return record


def test_a_valid_request_becomes_a_frame_of_the_feature_columns_in_schema_order() -> None:
    request = parse_request({"records": [VALID, changed(customer_id=...)]})
    frame = records_frame(request.records)
    assert list(frame.columns) == list(FEATURES)
    assert frame["contract"].tolist() == ["Month-to-month"] * 2
    assert frame["tenure_months"].tolist() == [12, 12]


@pytest.mark.parametrize(
    ("record", "column", "words"),
    [
        (changed(contract=...), "contract", "missing"),
        (changed(tenure_months="12"), "tenure_months", "integer"),
        (changed(senior_citizen=True), "senior_citizen", "integer"),
        (changed(support_calls=2.5), "support_calls", "integer"),
        (changed(monthly_charges="70.5"), "monthly_charges", "number"),
        (changed(contract="Weekly"), "contract", "Month-to-month"),
        (changed(tenure_months=73), "tenure_months", "72"),
        (changed(monthly_charges=5.0), "monthly_charges", "10"),
        (changed(total_charges=float("nan")), "total_charges", "finite"),
        (changed(churn=1), "churn", "not a column"),
        (changed(customer_id=12), "customer_id", "string"),
    ],
    ids=[
        "missing",
        "text-for-int",
        "bool-for-int",
        "fraction-for-int",
        "text-for-float",
        "unknown-category",
        "above-range",
        "below-range",
        "not-finite",
        "the-label",
        "id-not-text",
    ],
)
def test_a_bad_record_is_named_by_its_index_and_column(
    record: dict[str, Any], column: str, words: str
) -> None:
    problems = request_problems({"records": [VALID, VALID, record]})
    assert [(p["record"], p["column"]) for p in problems] == [(2, column)]
    assert words in problems[0]["problem"]


def test_every_column_of_the_schema_but_the_label_and_the_id_is_required() -> None:
    required = {c.name for c in SCHEMA if c.name in FEATURES}
    problems = request_problems({"records": [{}]})
    assert {p["column"] for p in problems} == required


@pytest.mark.parametrize(
    "body",
    [{}, {"records": []}, {"records": VALID}, {"records": [VALID] * (MAX_RECORDS + 1)}, [VALID]],
    ids=["no-records", "empty", "not-a-list", "too-many", "not-an-object"],
)
def test_a_body_that_is_not_a_list_of_records_is_refused_without_naming_a_record(body: Any) -> None:
    problems = request_problems(body)
    assert problems
    assert all(p["record"] is None for p in problems)


def test_a_problem_never_repeats_the_value_sent() -> None:
    problems = request_problems({"records": [changed(contract="Secret-Plan-4711")]})
    assert "Secret-Plan-4711" not in str(problems)


def test_churn_is_decided_at_or_above_the_threshold() -> None:
    assert decisions([0.2, 0.3, 0.31], 0.3) == [
        {"churn_probability": 0.2, "churn": False},
        {"churn_probability": 0.3, "churn": True},
        {"churn_probability": 0.31, "churn": True},
    ]


@pytest.mark.parametrize(
    ("card", "fallback", "expected"),
    [
        ({"decision_threshold": 0.18, "params": {"decision_threshold": 0.5}}, 0.4, 0.18),
        ({"params": {"decision_threshold": 0.35}}, 0.4, 0.35),
        ({"params": {"decision_threshold": "value"}}, 0.4, 0.4),
        ({"decision_threshold": 1.5, "params": {}}, 0.4, 0.4),
        ({"decision_threshold": True}, None, None),
    ],
    ids=["card-top-level", "card-params", "params-not-a-number", "out-of-range", "none"],
)
def test_the_threshold_comes_from_the_card_then_its_params_then_the_fallback(
    card: dict[str, Any], fallback: float | None, expected: float | None
) -> None:
    assert card_threshold(card, fallback) == expected
