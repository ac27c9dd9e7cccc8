"""Input drift (`mlvs.ml.drift`): each test on data whose shift is known, small and large references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlvs.ml import drift
from mlvs.ml.data import FEATURES, generate_customers

# The generator at its defaults, as the training data and as a later batch of the same customers.
GENERATOR = {"churn_rate": 0.26, "signal_strength": 1.0, "label_noise": 0.03}


def customers(n_rows: int, seed: int):  # type: ignore[no-untyped-def]
    return generate_customers(n_rows, seed=seed, **GENERATOR)


def columns(frame) -> dict[str, list]:  # type: ignore[no-untyped-def]
    return frame[list(FEATURES)].to_dict("list")


@pytest.mark.parametrize("reference_rows", [800, 4000])
def test_a_batch_from_the_training_distribution_drifts_in_no_feature(reference_rows: int) -> None:
    result = drift.dataset_drift(columns(customers(reference_rows, 1)), columns(customers(1000, 2)))
    assert [f.feature for f in result.features if f.drifted] == []
    assert result.share_drifted == 0.0 and not result.drifted
    assert all(f.psi < drift.PSI_MODERATE for f in result.features)


@pytest.mark.parametrize(
    ("reference_rows", "statistic"), [(800, "ks_p_value"), (4000, "wasserstein_normed")]
)
def test_a_price_rise_drifts_monthly_charges_by_the_test_the_reference_size_calls_for(
    reference_rows: int, statistic: str
) -> None:
    batch = customers(1000, 2)
    batch["monthly_charges"] = (batch["monthly_charges"] * 1.25).round(2)
    result = drift.dataset_drift(columns(customers(reference_rows, 1)), columns(batch))
    charges = result.feature("monthly_charges")
    assert (charges.kind, charges.statistic, charges.drifted) == ("numeric", statistic, True)
    assert charges.psi > drift.PSI_MODERATE
    assert not result.feature("contract").drifted and not result.drifted


def test_a_shift_in_the_contract_mix_drifts_the_contract_by_jensen_shannon() -> None:
    batch = customers(1000, 2)
    month_to_month = batch.index[batch["contract"] == "Month-to-month"]
    batch.loc[month_to_month[: len(month_to_month) // 2], "contract"] = "Two year"
    contract = drift.dataset_drift(columns(customers(4000, 1)), columns(batch)).feature("contract")
    assert (contract.kind, contract.statistic) == ("categorical", "jensen_shannon")
    assert contract.value > drift.DISTANCE_THRESHOLD and contract.drifted


def test_a_category_the_training_data_never_had_counts_as_drift() -> None:
    batch = customers(1000, 2)
    batch.loc[batch.index[:300], "payment_method"] = "Crypto wallet"
    payment = drift.dataset_drift(columns(customers(800, 1)), columns(batch)).feature(
        "payment_method"
    )
    assert payment.statistic == "chi2_p_value" and payment.drifted
    assert payment.psi > drift.PSI_SIGNIFICANT


def test_missing_values_are_reported_as_a_share_and_left_out_of_the_test() -> None:
    batch = customers(1000, 2)
    batch["tenure_months"] = batch["tenure_months"].astype(float)
    batch.loc[batch.index[:250], "tenure_months"] = np.nan
    tenure = drift.dataset_drift(columns(customers(4000, 1)), columns(batch)).feature(
        "tenure_months"
    )
    assert tenure.missing_share == pytest.approx(0.25)
    assert not tenure.drifted  # the values present are still the training distribution


def test_a_column_with_nothing_present_has_drifted() -> None:
    result = drift.feature_drift("support_calls", [1, 2, 3, 4, 5, 6, 7], [None, math.nan])
    assert result.missing_share == 1.0 and result.drifted


def test_binary_numbers_are_compared_as_categories() -> None:
    result = drift.dataset_drift(columns(customers(800, 1)), columns(customers(500, 2)))
    assert result.feature("senior_citizen").kind == "categorical"
    assert result.feature("tenure_months").kind == "numeric"


def test_the_dataset_drifts_when_half_of_its_features_do() -> None:
    reference = {"a": list(range(100)), "b": list(range(100))}
    one = drift.dataset_drift(reference, {"a": list(range(50, 150)), "b": list(range(100))})
    assert one.share_drifted == 0.5 and one.drifted
    none = drift.dataset_drift(reference, {"a": list(range(100)), "b": list(range(100))})
    assert none.share_drifted == 0.0 and not none.drifted


def test_psi_is_the_textbook_sum() -> None:
    expected = (0.4 - 0.5) * math.log(0.4 / 0.5) + (0.6 - 0.5) * math.log(0.6 / 0.5)
    assert drift.psi([0.5, 0.5], [0.4, 0.6]) == pytest.approx(expected)
    assert drift.psi([0.5, 0.5], [0.5, 0.5]) == 0.0


def test_the_json_form_names_each_feature_its_statistic_and_verdict() -> None:
    result = drift.dataset_drift(columns(customers(800, 1)), columns(customers(500, 2)))
    document = result.as_dict()
    assert set(document["features"]) == set(FEATURES)
    assert {"statistic", "value", "threshold", "drifted", "psi"} <= set(
        document["features"]["contract"]
    )
    assert document["drift_share_threshold"] == drift.DRIFT_SHARE
