"""The feature plots of 01_prepare: what each panel draws, and that it says on which data."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import Rectangle, StepPatch

from mlvs.ml.data import CATEGORICAL_FEATURES, NUMERIC_FEATURES, TARGET, generate_customers
from mlvs.notebook.plots import MIN_CUSTOMERS_FOR_A_RATE, distributions

FEATURES = (*NUMERIC_FEATURES, *CATEGORICAL_FEATURES)
DATA_NAME = "test set of seed 9"
# Columns drawn one bar per value, and those drawn as histograms.
DISCRETE = ("support_calls", "paperless_billing", "senior_citizen", *CATEGORICAL_FEATURES)
CONTINUOUS = ("monthly_charges", "total_charges")


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_customers(1500, 0.26, 1.0, 0.03, seed=9)


@pytest.fixture(scope="module")
def panels(frame: pd.DataFrame) -> Iterator[dict[str, tuple[Any, Any]]]:
    """Each feature's count axes and its churn-rate axes, by the feature named in its title."""
    figure = distributions(frame, DATA_NAME)
    found: dict[str, tuple[Any, Any]] = {}
    for ax in figure.axes:
        title = ax.get_title()
        feature = title.split(":")[0]
        if feature in FEATURES:
            twins = [o for o in ax.get_shared_x_axes().get_siblings(ax) if o is not ax]
            found[feature] = (ax, twins[0])
    yield found
    plt.close(figure)


def test_every_feature_has_a_panel_titled_with_what_it_shows_and_the_data(
    panels: dict[str, tuple[Any, Any]],
) -> None:
    assert set(panels) == set(FEATURES)
    for feature, (ax, _) in panels.items():
        assert "churn rate" in ax.get_title() and DATA_NAME in ax.get_title(), feature


def test_every_panel_marks_the_base_churn_rate(
    frame: pd.DataFrame, panels: dict[str, tuple[Any, Any]]
) -> None:
    base_rate = frame[TARGET].mean()
    for feature, (_, rates) in panels.items():
        flat = [line for line in rates.get_lines() if len(set(line.get_ydata())) == 1]
        assert [line.get_ydata()[0] for line in flat] == [pytest.approx(base_rate)], feature


@pytest.mark.parametrize("feature", DISCRETE)
def test_integer_binary_and_categorical_features_are_bars_of_customers_per_value(
    frame: pd.DataFrame, panels: dict[str, tuple[Any, Any]], feature: str
) -> None:
    ax, _ = panels[feature]
    heights = [p.get_height() for p in ax.patches if isinstance(p, Rectangle)]
    counts = frame[feature].value_counts()
    if counts.index.dtype.kind in "iu":  # every integer in the range: a gap is a bar of 0
        counts = counts.reindex(range(counts.index.min(), counts.index.max() + 1), fill_value=0)
    assert sorted(heights) == sorted(counts)


def test_tenure_is_drawn_with_one_bar_per_month(
    frame: pd.DataFrame, panels: dict[str, tuple[Any, Any]]
) -> None:
    ax, _ = panels["tenure_months"]
    (outline,) = [p for p in ax.patches if isinstance(p, StepPatch)]
    counts = frame["tenure_months"].value_counts()
    months = range(int(counts.index.min()), int(counts.index.max()) + 1)
    assert list(outline.get_data().values) == list(counts.reindex(months, fill_value=0))


@pytest.mark.parametrize("feature", ["contract", "paperless_billing"])
def test_the_churn_rate_of_each_value_is_drawn_where_enough_customers_have_it(
    frame: pd.DataFrame, panels: dict[str, tuple[Any, Any]], feature: str
) -> None:
    _, rates = panels[feature]
    drawn = [line for line in rates.get_lines() if len(set(line.get_ydata())) > 1]
    grouped = frame.groupby(feature)[TARGET].agg(["size", "mean"])
    expected = grouped.loc[grouped["size"] >= MIN_CUSTOMERS_FOR_A_RATE, "mean"]
    assert sorted(drawn[0].get_ydata()) == pytest.approx(sorted(expected))


@pytest.mark.parametrize("feature", CONTINUOUS)
def test_continuous_features_are_histograms_of_every_customer_in_round_bins(
    frame: pd.DataFrame, panels: dict[str, tuple[Any, Any]], feature: str
) -> None:
    ax, _ = panels[feature]
    everyone, stayed = [p.get_data() for p in ax.patches if isinstance(p, StepPatch)]
    assert everyone.values.sum() == len(frame)
    assert stayed.values.sum() == (frame[TARGET] == 0).sum()
    widths = np.diff(everyone.edges)
    assert np.allclose(widths, widths[0])
    mantissa = widths[0] / 10 ** np.floor(np.log10(widths[0]))
    assert round(mantissa, 6) in (1.0, 2.0, 2.5, 5.0)
    assert 10 <= len(widths) <= 60
