"""Scenario batches (`mlvs.ml.batches`): each moves the training world the one way it says."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from mlvs.ml.batches import SCENARIOS, UNKNOWN_PAYMENT_METHOD, Scenario, make_batch
from mlvs.ml.data import TARGET, frame_log_odds, to_csv_bytes

WORLD = {"n_rows": 2000, "seed": 7, "churn_rate": 0.26, "signal_strength": 1.0, "label_noise": 0.03}


def batch(scenario: str, severity: float = 0.0, number: int = 1, **settings: object):  # type: ignore[no-untyped-def]
    return make_batch(scenario, Scenario(severity=severity, **settings), number, **WORLD)  # type: ignore[arg-type]


def test_a_batch_has_the_same_bytes_every_time_and_differs_from_the_next() -> None:
    first, again, second = batch("none"), batch("none"), batch("none", number=2)
    assert to_csv_bytes(first.customers) == to_csv_bytes(again.customers)
    assert to_csv_bytes(first.labels) == to_csv_bytes(again.labels)
    assert to_csv_bytes(first.customers) != to_csv_bytes(second.customers)


def test_the_customers_come_without_churn_and_the_labels_name_each_of_them() -> None:
    made = batch("none")
    assert TARGET not in made.customers.columns
    assert list(made.labels.columns) == ["customer_id", TARGET]
    assert list(made.labels["customer_id"]) == list(made.customers["customer_id"])
    assert made.customers["customer_id"].iloc[0] == "B0001-000001"


def test_a_price_rise_raises_the_bills_by_its_severity_and_churn_with_them() -> None:
    calm, risen = batch("none"), batch("price_rise", 0.15)
    ratio = risen.customers["monthly_charges"].mean() / calm.customers["monthly_charges"].mean()
    assert ratio == pytest.approx(1.15, abs=0.03)
    assert risen.labels[TARGET].mean() > calm.labels[TARGET].mean() + 0.03


def test_a_contract_shift_moves_that_share_of_month_to_month_customers() -> None:
    calm, shifted = batch("none"), batch("contract_shift", 0.5)
    month_to_month = [(b.customers["contract"] == "Month-to-month").mean() for b in (calm, shifted)]
    assert month_to_month[1] == pytest.approx(month_to_month[0] / 2, abs=0.04)


def test_a_new_payment_method_appears_in_that_share_of_rows() -> None:
    made = batch("new_payment_method", 0.2)
    assert (made.customers["payment_method"] == UNKNOWN_PAYMENT_METHOD).mean() == pytest.approx(
        0.2, abs=0.03
    )


def test_missing_values_leave_that_share_of_the_named_column_empty() -> None:
    made = batch("missing_values", 0.2, column="support_calls")
    assert made.customers["support_calls"].isna().mean() == pytest.approx(0.2, abs=0.03)
    assert made.customers.drop(columns=["support_calls"]).notna().all().all()


def test_concept_drift_keeps_the_inputs_and_changes_what_drives_churn() -> None:
    calm, changed = batch("none"), batch("concept_drift", 1.0)
    # The generator's own ranking of customers no longer tells churners apart as well.
    calm_auc, changed_auc = (
        roc_auc_score(b.labels[TARGET], frame_log_odds(b.customers)) for b in (calm, changed)
    )
    assert changed_auc < calm_auc - 0.1
    calm_mix, changed_mix = (
        b.customers["contract"].value_counts(normalize=True) for b in (calm, changed)
    )
    assert (changed_mix - calm_mix).abs().max() < 0.04


def test_a_gradual_drift_grows_with_each_batch_up_to_its_severity() -> None:
    severities = [batch("gradual", 0.3, number=n, ramp_batches=3).severity for n in (1, 2, 3, 4)]
    assert severities == pytest.approx([0.1, 0.2, 0.3, 0.3])


def test_every_scenario_is_known_and_an_unknown_one_refused() -> None:
    assert set(SCENARIOS) == {
        "none",
        "price_rise",
        "contract_shift",
        "new_payment_method",
        "concept_drift",
        "missing_values",
        "gradual",
    }
    with pytest.raises(ValueError, match="unknown scenario"):
        batch("meteor_strike")


def test_a_missing_values_column_must_be_a_feature() -> None:
    with pytest.raises(ValidationError, match="must be one of the features"):
        Scenario(severity=0.2, column="churn")
