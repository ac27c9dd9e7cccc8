"""Out-of-sample evaluation: vectorised bootstraps, gain and lift, the comparison of model types."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mlvs.ml.decision import contact_values
from mlvs.ml.evaluation import (
    bootstrap_counts,
    bootstrap_intervals,
    compare_models,
    comparison_verdict,
    gain_and_lift,
    paired_difference,
    weighted_roc_auc,
)
from mlvs.ml.modeling import CrossValidation
from mlvs.ml.params import load_stage

REPO = Path(__file__).resolve().parents[2]
BUSINESS = load_stage("train", REPO).business


def scored(seed: int, n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = np.round(rng.beta(2, 5, n), 3)
    return (rng.random(n) < p).astype(int), p


def test_the_weighted_roc_auc_of_each_resample_is_scikit_learns_on_the_rows_drawn() -> None:
    y, p = scored(0)
    counts = bootstrap_counts(len(y), 5, seed=1)
    for row, auc in zip(counts, weighted_roc_auc(y, p, counts), strict=True):
        drawn = np.repeat(np.arange(len(y)), row.astype(int))
        assert auc == pytest.approx(roc_auc_score(y[drawn], p[drawn]))


def test_bootstrap_intervals_cover_their_point_estimates() -> None:
    y, p = scored(1)
    values = contact_values(BUSINESS, np.full(len(y), 70.0))
    table = bootstrap_intervals(y, p, 0.2, values, seed=3)
    assert table.loc["roc_auc", "estimate"] == pytest.approx(roc_auc_score(y, p))
    assert table.loc["net_value", "estimate"] == values.realised(y)[p >= 0.2].sum()
    assert (table["low"] < table["estimate"]).all() and (table["estimate"] < table["high"]).all()


def test_bootstrap_intervals_are_seeded() -> None:
    y, p = scored(2)
    values = contact_values(BUSINESS, np.full(len(y), 70.0))
    first = bootstrap_intervals(y, p, 0.2, values, seed=3)
    pd.testing.assert_frame_equal(first, bootstrap_intervals(y, p, 0.2, values, seed=3))
    assert not first.equals(bootstrap_intervals(y, p, 0.2, values, seed=4))


def test_a_model_compared_with_itself_differs_by_nothing() -> None:
    y, p = scored(3)
    counts = bootstrap_counts(len(y), 200, seed=0)
    difference, low, high, p_value = paired_difference(y, p, p, "roc_auc", counts)
    assert (difference, low, high, p_value) == (0.0, 0.0, 0.0, 1.0)


def test_gain_reaches_every_churner_and_lift_averages_to_one() -> None:
    y, p = scored(4)
    table = gain_and_lift(y, p)
    assert table["customers"].sum() == len(y) and table["churners"].sum() == y.sum()
    assert table["cumulative_gain"].iloc[-1] == pytest.approx(1.0)
    assert np.average(table["lift"], weights=table["customers"]) == pytest.approx(1.0)
    assert table["lift"].iloc[0] > 1.0 > table["lift"].iloc[-1]  # the ranking has signal


def test_a_clearly_better_model_type_is_named_and_a_copy_of_the_default_is_not() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 1000)
    fold = np.arange(1000) % 5
    noisy = np.clip(0.5 + (y - 0.5) * 0.2 + rng.normal(0, 0.3, 1000), 0, 1)
    sharp = np.clip(0.5 + (y - 0.5) * 0.8 + rng.normal(0, 0.3, 1000), 0, 1)
    values = contact_values(BUSINESS, np.full(1000, 70.0))
    table = compare_models(
        y,
        {
            "default": CrossValidation(noisy, fold, 5),
            "copy": CrossValidation(noisy.copy(), fold, 5),
            "sharp": CrossValidation(sharp, fold, 5),
        },
        "default",
        values,
        seed=0,
        draws=200,
    )
    assert table.index[0] == "sharp" and table.loc["sharp", "auc_p"] < 0.05
    assert table.loc["copy", "auc_diff"] == 0.0 and table.loc["copy", "net_value_p"] == 1.0
    verdict = comparison_verdict(table, "default")
    assert verdict.startswith("sharp earns more out-of-fold net value than default")
    assert "set model_type: sharp" in verdict
    assert "the default stays default" in comparison_verdict(table.drop(index="sharp"), "default")
