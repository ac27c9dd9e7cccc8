"""Synthetic customers, their declared schema, the stratified split and the prepared files."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlvs.errors import BadInputError, ParamsError, SchemaViolationError
from mlvs.ml.data import (
    TARGET,
    TELCO_CHURN_RATES,
    TELCO_MEDIAN_TENURE_MONTHS,
    TELCO_OVERALL_CHURN_RATE,
    check_schema,
    churn_log_odds,
    features_and_target,
    generate_customers,
    read_customers,
    split_customers,
    to_csv_bytes,
    true_logit_auc,
    validate_schema,
    write_csv,
)
from mlvs.ml.params import load_stage
from mlvs.paths import ProjectPaths
from mlvs.stages.prepare import write_prepared

REPO = Path(__file__).resolve().parents[2]
DEFAULTS = {
    "n_rows": 600,
    "churn_rate": 0.26,
    "signal_strength": 1.0,
    "label_noise": 0.03,
    "seed": 42,
}


def customers(**changes: float) -> pd.DataFrame:
    return generate_customers(**{**DEFAULTS, **changes})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- generation ---------------------------------------------------------------------


def test_same_parameters_write_identical_csv_bytes(tmp_path: Path) -> None:
    first = write_csv(customers(), tmp_path / "first.csv")
    second = write_csv(customers(), tmp_path / "second.csv")
    assert first == second == sha256(tmp_path / "first.csv") == sha256(tmp_path / "second.csv")


def test_different_seed_gives_different_bytes() -> None:
    assert to_csv_bytes(customers(seed=1)) != to_csv_bytes(customers(seed=2))


def test_generated_customers_satisfy_the_schema() -> None:
    assert validate_schema(customers()) == []


@pytest.mark.parametrize(
    ("churn_rate", "label_noise"),
    [(0.26, 0.03), (0.02, 0.0), (0.1, 0.05), (0.5, 0.2), (0.8, 0.0)],
)
def test_churn_rate_is_within_three_points_of_the_parameter(
    churn_rate: float, label_noise: float
) -> None:
    frame = customers(n_rows=5000, churn_rate=churn_rate, label_noise=label_noise, seed=3)
    assert abs(frame[TARGET].mean() - churn_rate) <= 0.03


def test_an_accepted_churn_rate_is_honoured_whatever_the_label_noise(tmp_path: Path) -> None:
    # Flipping a share n of labels pulls the rate towards n; a rate below n cannot be reached.
    # Such a combination must be refused by the parameters, not silently produce another rate.
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "prepare.yaml").write_bytes(
        (REPO / "params" / "prepare.yaml").read_bytes()
    )
    try:
        params = load_stage("prepare", tmp_path, {"churn_rate": 0.05, "label_noise": 0.1})
    except ParamsError:
        return
    frame = generate_customers(
        5000, params.churn_rate, params.signal_strength, params.label_noise, params.seed
    )
    assert abs(frame[TARGET].mean() - params.churn_rate) <= 0.03


def holdout_auc(frame: pd.DataFrame) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from mlvs.ml.features import build_model

    train, test = split_customers(frame, 0.3, seed=0)
    model = build_model(LogisticRegression(max_iter=500)).fit(*features_and_target(train))
    X_test, y_test = features_and_target(test)
    return float(roc_auc_score(y_test, model.predict_proba(X_test)[:, 1]))


def test_zero_signal_strength_gives_labels_no_model_can_predict() -> None:
    assert abs(holdout_auc(customers(n_rows=5000, signal_strength=0.0)) - 0.5) <= 0.1


def test_default_signal_strength_gives_labels_a_model_can_predict() -> None:
    assert holdout_auc(customers(n_rows=5000)) > 0.7


def test_default_parameters_reproduce_the_raw_data_bytes_recorded_in_dvc_lock() -> None:
    params = load_stage("prepare", REPO)
    frame = generate_customers(
        params.n_rows, params.churn_rate, params.signal_strength, params.label_noise, params.seed
    )
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    recorded = {out["path"]: out["md5"] for out in lock["stages"]["prepare"]["outs"]}
    assert hashlib.md5(to_csv_bytes(frame)).hexdigest() == recorded["data/raw/customer_data.csv"]


# --- a telecom's churn: the public Telco sample's rates at the default parameters ----------

# Two seeds of the default parameters: the rates are the generator's, not one draw's.
SEEDS = (42, 2026)
# The generator aims at the sample's rates; a 5,000-row draw lands within a few points.
POINTS = 0.05


@pytest.fixture(scope="module")
def default_draws() -> dict[int, pd.DataFrame]:
    return {seed: customers(n_rows=5000, seed=seed) for seed in SEEDS}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("column", list(TELCO_CHURN_RATES))
def test_churn_by_level_lands_within_five_points_of_the_telco_sample(
    default_draws: dict[int, pd.DataFrame], seed: int, column: str
) -> None:
    rates = default_draws[seed].groupby(column)[TARGET].mean()
    for level, telco_rate in TELCO_CHURN_RATES[column].items():
        assert abs(rates[level] - telco_rate) <= POINTS, (column, level, rates[level], telco_rate)


@pytest.mark.parametrize("seed", SEEDS)
def test_overall_churn_lands_within_five_points_of_the_telco_sample(
    default_draws: dict[int, pd.DataFrame], seed: int
) -> None:
    assert abs(default_draws[seed][TARGET].mean() - TELCO_OVERALL_CHURN_RATE) <= POINTS


@pytest.mark.parametrize("seed", SEEDS)
def test_median_tenure_is_within_three_months_of_the_telco_sample(
    default_draws: dict[int, pd.DataFrame], seed: int
) -> None:
    median = default_draws[seed]["tenure_months"].median()
    assert abs(median - TELCO_MEDIAN_TENURE_MONTHS) <= 3, median


@pytest.mark.parametrize("seed", SEEDS)
def test_tenure_is_u_shaped_with_many_new_and_many_long_standing_customers(
    default_draws: dict[int, pd.DataFrame], seed: int
) -> None:
    per_month = default_draws[seed]["tenure_months"].value_counts()
    middle = per_month.reindex(range(20, 51), fill_value=0).mean()
    assert per_month.get(1, 0) > 3 * middle and per_month.get(72, 0) > 3 * middle, per_month


@pytest.mark.parametrize("seed", SEEDS)
def test_customers_without_internet_pay_about_20_with_no_pile_up_at_a_bound(
    default_draws: dict[int, pd.DataFrame], seed: int
) -> None:
    frame = default_draws[seed]
    charges = frame.loc[frame["internet_service"] == "No internet", "monthly_charges"]
    assert charges.between(18.0, 27.0).all(), charges.describe()
    assert 19.0 <= charges.mean() <= 22.0
    # The old generator clipped N(22, 12) at 10: 17% of them paid exactly 10.00.
    assert charges.value_counts(normalize=True).max() < 0.02


def test_total_charges_add_up_a_price_that_rose_on_each_anniversary() -> None:
    frame = customers(n_rows=5000)
    paid_at_todays_price = frame["monthly_charges"] * frame["tenure_months"]
    first_year = frame["tenure_months"] <= 12
    assert np.allclose(
        frame.loc[first_year, "total_charges"], paid_at_todays_price[first_year], atol=0.01
    )
    ratio = (frame["total_charges"] / paid_at_todays_price)[~first_year]
    assert (ratio < 1.0).all(), "before a rise, every month cost less than today"
    years = (frame.loc[~first_year, "tenure_months"] - 1) // 12
    # Each rise lowers the share of today's price paid on average: not noise around monthly x tenure.
    assert ratio.groupby(years).mean().is_monotonic_decreasing


def test_a_bill_that_has_grown_raises_the_churn_log_odds() -> None:
    same = {"contract": "Month-to-month", "internet": "DSL", "payment": "Mailed check"}
    odds = churn_log_odds(
        tenure=[36, 36],
        monthly=[60.0, 60.0],
        total=[2160.0, 1800.0],  # the second paid less on average: its price has risen
        support_calls=[1, 1],
        senior=[0, 0],
        paperless=[0, 0],
        **{k: [v, v] for k, v in same.items()},
    )
    assert odds[1] > odds[0]


# --- the true-logit AUC ceiling ------------------------------------------------------


def test_no_model_beats_the_true_logit_auc_on_the_test_set() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from mlvs.ml.features import build_model

    train, test = split_customers(customers(n_rows=5000, seed=5), 0.3, seed=0)
    model = build_model(LogisticRegression(max_iter=500)).fit(*features_and_target(train))
    X_test, y_test = features_and_target(test)
    model_auc = roc_auc_score(y_test, model.predict_proba(X_test)[:, 1])
    ceiling = true_logit_auc(test, signal_strength=1.0)
    assert 0.5 < model_auc <= ceiling + 0.01, (model_auc, ceiling)


def test_the_true_logit_auc_is_one_half_without_signal() -> None:
    assert true_logit_auc(customers(signal_strength=0.0), signal_strength=0.0) == 0.5


def test_the_true_logit_auc_rises_with_signal_and_falls_with_label_noise() -> None:
    def ceiling(**changes: float) -> float:
        frame = customers(n_rows=5000, **changes)
        return true_logit_auc(frame, changes.get("signal_strength", 1.0))

    assert ceiling(signal_strength=0.5) < ceiling() < ceiling(signal_strength=2.0)
    assert ceiling(label_noise=0.2) < ceiling(label_noise=0.0)


# --- schema -------------------------------------------------------------------------


def broken_in_every_way() -> pd.DataFrame:
    frame = customers(n_rows=200).drop(columns=["paperless_billing"])
    frame.loc[3, "contract"] = "Weekly"
    frame.loc[4, "tenure_months"] = -1
    frame.loc[5, "monthly_charges"] = np.nan
    frame.loc[6, "customer_id"] = frame.loc[7, "customer_id"]
    frame.loc[8, "total_charges"] = np.inf
    return pd.concat([frame, frame[["senior_citizen"]]], axis=1)  # a repeated column


def test_validate_schema_lists_every_violation_once_in_one_call() -> None:
    problems = validate_schema(broken_in_every_way())
    expected = {
        "missing column": "paperless_billing",
        "contract": "'Weekly'",
        "tenure_months": "outside [0, 72]",
        "monthly_charges": "1 missing value",
        "customer_id": "1 duplicated value",
        "total_charges": "infinite",
        "senior_citizen": "more than once",
    }
    for subject, detail in expected.items():
        assert [p for p in problems if subject in p and detail in p], (subject, problems)
    assert len(problems) == len(expected), problems


def test_repeated_csv_header_is_reported_as_a_duplicate_column(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    frame = customers(n_rows=200)
    with_repeat = pd.concat([frame, frame[["senior_citizen"]]], axis=1)
    with_repeat.to_csv(path, index=False)  # header: ...,senior_citizen,churn,senior_citizen
    problems = validate_schema(read_customers(path))
    assert len(problems) == 1, problems
    assert "'senior_citizen'" in problems[0] and "more than once" in problems[0]


def test_single_class_target_is_flagged() -> None:
    frame = customers(n_rows=200)
    frame[TARGET] = 0
    problems = validate_schema(frame)
    assert len(problems) == 1 and "single class" in problems[0]


def test_empty_frame_is_flagged() -> None:
    problems = validate_schema(customers(n_rows=200).iloc[0:0])
    assert any("no rows" in p for p in problems)


def test_check_schema_raises_with_every_violation() -> None:
    with pytest.raises(SchemaViolationError) as caught:
        check_schema(broken_in_every_way())
    assert caught.value.violations == validate_schema(broken_in_every_way())


# --- reading ------------------------------------------------------------------------


def test_written_customers_read_back_unchanged(tmp_path: Path) -> None:
    frame = customers(n_rows=200)
    write_csv(frame, tmp_path / "customers.csv")
    pd.testing.assert_frame_equal(read_customers(tmp_path / "customers.csv"), frame)


def test_read_customers_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        read_customers(tmp_path / "absent.csv")


def test_read_customers_refuses_an_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(BadInputError, match="not a readable CSV"):
        read_customers(tmp_path / "empty.csv")


def test_read_customers_refuses_binary_garbage(tmp_path: Path) -> None:
    (tmp_path / "garbage.csv").write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(BadInputError, match="not a readable CSV"):
        read_customers(tmp_path / "garbage.csv")


# --- split and prepared files -------------------------------------------------------


@pytest.fixture(scope="module")
def split() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    frame = customers(n_rows=2000)
    return (frame, *split_customers(frame, test_size=0.2, seed=7))


def test_split_is_stratified(split: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
    _, train, test = split
    assert abs(train[TARGET].mean() - test[TARGET].mean()) <= 0.01


def test_split_is_disjoint_and_covers_every_row(
    split: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    frame, train, test = split
    train_ids, test_ids = set(train["customer_id"]), set(test["customer_id"])
    assert not train_ids & test_ids
    assert train_ids | test_ids == set(frame["customer_id"])
    assert len(train) + len(test) == len(frame)


def test_split_holds_out_the_test_share(
    split: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    frame, _, test = split
    assert len(test) == round(0.2 * len(frame))


def test_write_prepared_records_the_hash_of_every_file_in_the_summary(tmp_path: Path) -> None:
    paths = ProjectPaths(tmp_path)
    prepared = write_prepared(paths, customers(), test_size=0.2, seed=7)
    summary = json.loads((paths.processed / "summary.json").read_text())
    on_disk = {
        "raw": sha256(paths.raw_data),
        "train": sha256(paths.train_data),
        "test": sha256(paths.test_data),
    }
    assert summary["sha256"] == prepared.hashes == on_disk
    assert summary["rows"] == {"raw": 600, "train": len(prepared.train), "test": len(prepared.test)}


def test_write_prepared_writes_the_split_it_returns(tmp_path: Path) -> None:
    paths = ProjectPaths(tmp_path)
    prepared = write_prepared(paths, customers(), test_size=0.2, seed=7)
    pd.testing.assert_frame_equal(
        read_customers(paths.train_data), prepared.train.reset_index(drop=True)
    )
    pd.testing.assert_frame_equal(
        read_customers(paths.test_data), prepared.test.reset_index(drop=True)
    )


def test_write_prepared_refuses_invalid_data_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(SchemaViolationError):
        write_prepared(ProjectPaths(tmp_path), broken_in_every_way(), test_size=0.2, seed=7)
    assert list(tmp_path.iterdir()) == []


def test_prepared_data_shows_churn_by_level_next_to_the_telco_sample(tmp_path: Path) -> None:
    frame = customers()
    table = write_prepared(ProjectPaths(tmp_path), frame, test_size=0.2, seed=7).churn_by_level()
    contract = table.loc["contract"]
    assert list(contract.index) == list(TELCO_CHURN_RATES["contract"])
    assert contract["customers"].sum() == len(frame)
    assert contract.loc["Two year", "churn rate"] == round(
        frame.loc[frame["contract"] == "Two year", TARGET].mean(), 3
    )
    assert contract.loc["Two year", "Telco sample"] == TELCO_CHURN_RATES["contract"]["Two year"]


def test_prepared_run_metrics_log_the_true_logit_auc_of_each_frame(tmp_path: Path) -> None:
    prepared = write_prepared(ProjectPaths(tmp_path), customers(), test_size=0.2, seed=7)
    ceiling = prepared.true_logit_auc(signal_strength=1.0)
    assert ceiling["test"] == true_logit_auc(prepared.test, 1.0)
    metrics = prepared.run_metrics(ceiling)
    assert set(ceiling) == {"raw", "train", "test"}
    assert {name: metrics[f"true_logit_auc_{name}"] for name in ceiling} == ceiling
    assert "true_logit_auc_raw" not in prepared.run_metrics()
