"""The figures the notebooks show and log: each function takes values, returns a Figure."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mlvs.ml.data import CATEGORICAL_FEATURES, NUMERIC_FEATURES, SCHEMA, TARGET

CHURN_COLOURS = {0: "#4C72B0", 1: "#DD8452"}


# What 01_prepare shows: every feature against churn, on the data it names.

CHURN_RATE_COLOUR = "#C44E52"
COUNT_COLOUR = "#8C8C8C"
# A value or bin needs this many customers before its churn rate is drawn: fewer would
# put noise on the plot that reads like signal.
MIN_CUSTOMERS_FOR_A_RATE = 20
# Freedman-Diaconis bins, within these bounds: few enough to read, enough to show a shape.
MIN_BINS, MAX_BINS = 10, 60


def distributions(frame: pd.DataFrame, data_name: str = "raw data") -> Any:
    """Every feature of `frame` against churn, one panel each, titled with the data it shows.

    Integer, binary and categorical features: a bar of customers for each value, and the
    churn rate of each value with the base rate marked. Continuous features: a histogram of
    customers (stayed and churned stacked) and the churn rate of each bin.
    """
    kinds = {column.name: column.kind for column in SCHEMA}
    panels = [c for c in (*NUMERIC_FEATURES, *CATEGORICAL_FEATURES) if c in frame.columns]
    base_rate = float(frame[TARGET].mean())
    cols = 3
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    for ax, column in zip(axes.ravel(), panels, strict=False):
        if kinds.get(column) == "float":
            _histogram_with_churn_rate(ax, frame, column, base_rate)
            ax.set_title(f"{column}: customers and churn rate per bin\n{data_name}", fontsize=10)
        else:
            _bars_with_churn_rate(ax, frame, column, base_rate)
            ax.set_title(f"{column}: customers and churn rate per value\n{data_name}", fontsize=10)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        f"Features against churn, {data_name}: {len(frame):,} customers, "
        f"base churn rate {base_rate:.1%}"
    )
    fig.tight_layout()
    return fig


def _bars_with_churn_rate(ax: Any, frame: pd.DataFrame, column: str, base_rate: float) -> None:
    """Customers per value as bars; churn rate per value (right axis) against the base rate."""
    grouped = frame.groupby(column, observed=True)[TARGET].agg(["size", "mean"])
    declared = next((c.allowed for c in SCHEMA if c.name == column and c.allowed), ())
    if declared:
        levels: list[Any] = [v for v in declared if v in grouped.index]
        levels += [v for v in grouped.index if v not in declared]
        positions = np.arange(len(levels))
        grouped = grouped.reindex(levels)
        ax.set_xticks(positions, [str(v) for v in levels], rotation=15, fontsize=8)
    else:
        # Every integer between the smallest and the largest, so a gap shows as a gap.
        values = grouped.index.astype(int)
        levels = list(range(int(values.min()), int(values.max()) + 1))
        grouped = grouped.reindex(levels)
        positions = np.asarray(levels)
        if len(levels) <= 2:
            ax.set_xticks(positions, [str(v) for v in levels])
    counts = grouped["size"].fillna(0).to_numpy()
    ax.bar(positions, counts, width=0.8, color=COUNT_COLOUR, label="customers")
    ax.set_ylabel("customers")
    ax.set_xlabel(column)
    _churn_rate_overlay(ax, positions, counts, grouped["mean"].to_numpy(), base_rate)


def _histogram_with_churn_rate(
    ax: Any, frame: pd.DataFrame, column: str, base_rate: float
) -> None:
    """Customers per bin, stayed and churned stacked; churn rate per bin against the base rate."""
    values = frame[column].to_numpy(dtype=float)
    churned = frame[TARGET].to_numpy() == 1
    edges = np.histogram_bin_edges(values, bins="fd")
    if not MIN_BINS <= len(edges) - 1 <= MAX_BINS:
        bins = min(max(len(edges) - 1, MIN_BINS), MAX_BINS)
        edges = np.linspace(values.min(), values.max(), bins + 1)
    ax.hist(
        [values[~churned], values[churned]],
        bins=edges,
        stacked=True,
        color=[CHURN_COLOURS[0], CHURN_COLOURS[1]],
        label=["stayed", "churned"],
    )
    all_counts = np.histogram(values, bins=edges)[0]
    churned_counts = np.histogram(values[churned], bins=edges)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = churned_counts / all_counts
    ax.set_ylabel("customers")
    ax.set_xlabel(f"{column} (bins of {edges[1] - edges[0]:.4g})")
    ax.legend(loc="upper center", fontsize=7)
    _churn_rate_overlay(ax, (edges[:-1] + edges[1:]) / 2, all_counts, rates, base_rate)


def _churn_rate_overlay(
    ax: Any, positions: Any, counts: Any, rates: Any, base_rate: float
) -> None:
    """Churn rate per value (right axis) where enough customers have it, and the base rate."""
    shown = np.asarray(counts) >= MIN_CUSTOMERS_FOR_A_RATE
    rate_axis = ax.twinx()
    rate_axis.plot(
        np.asarray(positions)[shown],
        np.asarray(rates)[shown],
        "o-",
        color=CHURN_RATE_COLOUR,
        markersize=3,
        linewidth=1,
        label="churn rate",
    )
    rate_axis.axhline(
        base_rate,
        color=CHURN_RATE_COLOUR,
        linestyle="--",
        linewidth=1,
        label=f"base rate {base_rate:.1%}",
    )
    top = np.nanmax(np.asarray(rates, dtype=float)[shown], initial=base_rate)
    rate_axis.set_ylim(0, min(1.0, top * 1.15 + 0.02))
    rate_axis.set_ylabel("churn rate", color=CHURN_RATE_COLOUR)
    rate_axis.legend(loc="upper right", fontsize=7)


def compare_distributions(frames: dict[str, pd.DataFrame], columns: list[str]) -> Any:
    """The same columns across several states of a data set (e.g. before, during, after an incident)."""
    fig, axes = plt.subplots(1, len(columns), figsize=(4.5 * len(columns), 3.2), squeeze=False)
    for ax, column in zip(axes[0], columns, strict=True):
        # Distinct line styles: identical states (before and after a full recovery) overlap exactly.
        for (label, frame), style in zip(frames.items(), ("-", ":", "--", "-."), strict=False):
            if column in frame.columns:
                values = pd.to_numeric(frame[column], errors="coerce").dropna()
                ax.hist(
                    values,
                    bins=30,
                    histtype="step",
                    linewidth=2.0,
                    linestyle=style,
                    label=label,
                    density=True,
                )
        ax.set_title(column)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def cv_scores(cv: dict[str, float]) -> Any:
    """Cross-validated metrics as bars with their spread."""
    names = sorted({k.removeprefix("cv_").removesuffix("_mean") for k in cv if k.endswith("_mean")})
    means = [cv[f"cv_{n}_mean"] for n in names]
    stds = [cv[f"cv_{n}_std"] for n in names]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(names, means, yerr=stds, capsize=4, color="#4C72B0")
    ax.set_ylim(0, 1)
    ax.set_title("cross-validated metrics (mean ± std)")
    fig.tight_layout()
    return fig


def confusion(y_true: Any, probability: Any, threshold: float) -> Any:
    """Confusion matrix of the test set at the decision threshold."""
    # deferred: scikit-learn (~2.5 s) is imported only when this runs
    from sklearn.metrics import ConfusionMatrixDisplay

    predicted = (np.asarray(probability) >= threshold).astype(int)
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ConfusionMatrixDisplay.from_predictions(
        y_true, predicted, display_labels=["stayed", "churned"], ax=ax, colorbar=False
    )
    ax.set_title(f"test set, threshold {threshold:g}")
    fig.tight_layout()
    return fig


def roc(y_true: Any, probability: Any) -> Any:
    """ROC curve of the test set."""
    # deferred: scikit-learn (~2.5 s) is imported only when this runs
    from sklearn.metrics import RocCurveDisplay

    fig, ax = plt.subplots(figsize=(4, 3.6))
    RocCurveDisplay.from_predictions(y_true, probability, ax=ax, name="model")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set_title("ROC curve, test set")
    fig.tight_layout()
    return fig


def importances(values: pd.Series, top: int = 15) -> Any:
    """The most important features of a fitted model."""
    shown = values.head(top)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(shown) + 1))
    ax.barh(shown.index, shown.values, color="#8172B2")
    ax.set_title("feature importance")
    fig.tight_layout()
    return fig


def metric_comparison(states: dict[str, dict[str, float]], metrics: list[str]) -> Any:
    """Grouped bars: the same metrics across several states (e.g. current and restored)."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    width = 0.8 / max(len(states), 1)
    x = np.arange(len(metrics))
    for i, (label, values) in enumerate(states.items()):
        ax.bar(x + i * width, [values.get(m, np.nan) for m in metrics], width, label=label)
    ax.set_xticks(x + width * (len(states) - 1) / 2, metrics, rotation=20)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def timeline(events: list[tuple[str, float, float]]) -> Any:
    """Horizontal bars of (label, start, duration) in seconds: the phases of a drill."""
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(events) + 1))
    for i, (label, start, duration) in enumerate(events):
        ax.barh(
            i, max(duration, 1e-3), left=start, color="#C44E52" if "inject" in label else "#4C72B0"
        )
        ax.text(start + duration, i, f" {duration * 1000:.0f} ms", va="center", fontsize=8)
    ax.set_yticks(range(len(events)), [e[0] for e in events])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the drill started")
    fig.tight_layout()
    return fig
