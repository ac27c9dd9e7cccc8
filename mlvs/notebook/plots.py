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
# Beyond this many values (tenure's 72 months), the bars of an integer feature touch.
MAX_SEPARATE_BARS = 20


def distributions(frame: pd.DataFrame, data_name: str = "raw data") -> Any:
    """Every feature of `frame` against churn, one panel each, titled with the data it shows.

    Integer, binary and categorical features: a bar of customers for each value, and the
    churn rate of each value with the base rate marked. Continuous features: a histogram of
    customers (stayed and churned stacked) and the churn rate of each bin.
    """
    # deferred: matplotlib's legend artists are needed only for this figure's key
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    kinds = {column.name: column.kind for column in SCHEMA}
    panels = [c for c in (*NUMERIC_FEATURES, *CATEGORICAL_FEATURES) if c in frame.columns]
    base_rate = float(frame[TARGET].mean())
    cols = 3
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.5 * rows + 0.8), squeeze=False)
    for ax, column in zip(axes.ravel(), panels, strict=False):
        if kinds.get(column) == "float":
            _histogram_with_churn_rate(ax, frame, column, base_rate)
            ax.set_title(f"{column}: customers and churn rate per bin, {data_name}", fontsize=9)
        else:
            _bars_with_churn_rate(ax, frame, column, base_rate)
            ax.set_title(f"{column}: customers and churn rate per value, {data_name}", fontsize=9)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        f"Features against churn, {data_name}: {len(frame):,} customers, "
        f"base churn rate {base_rate:.1%}"
    )
    # One key for every panel, so no legend hides a bar or a rate.
    key = [
        Patch(color=COUNT_COLOUR, label="customers per value"),
        Patch(color=CHURN_COLOURS[0], label="stayed (per bin)"),
        Patch(color=CHURN_COLOURS[1], label="churned (per bin)"),
        Line2D([], [], color=CHURN_RATE_COLOUR, marker="o", label="churn rate (right axis)"),
        Line2D([], [], color=CHURN_RATE_COLOUR, linestyle="--", label=f"base rate {base_rate:.1%}"),
    ]
    fig.legend(
        handles=key,
        loc="upper center",
        ncol=len(key),
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, 1 - 0.45 / fig.get_figheight()),
    )
    # Fixed margins: tight_layout would measure every tick label of all the axes (seconds).
    top = 1 - 0.95 / fig.get_figheight()
    fig.subplots_adjust(left=0.05, right=0.95, bottom=0.08, top=top, wspace=0.42, hspace=0.55)
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
    if len(levels) > MAX_SEPARATE_BARS:
        # One filled outline instead of a patch per value: it reads the same, draws faster.
        edges = np.append(positions, positions[-1] + 1) - 0.5
        ax.stairs(counts, edges, fill=True, color=COUNT_COLOUR)
    else:
        ax.bar(positions, counts, width=0.8, color=COUNT_COLOUR)
    ax.set_ylabel("customers")
    ax.set_xlabel(column)
    ordered = not declared and len(levels) > 2
    _churn_rate_overlay(ax, positions, counts, grouped["mean"].to_numpy(), base_rate, ordered)


def _histogram_with_churn_rate(ax: Any, frame: pd.DataFrame, column: str, base_rate: float) -> None:
    """Customers per bin, stayed and churned stacked; churn rate per bin against the base rate."""
    values = frame[column].to_numpy(dtype=float)
    churned = frame[TARGET].to_numpy() == 1
    edges = _readable_bin_edges(values)
    all_counts = np.histogram(values, bins=edges)[0]
    churned_counts = np.histogram(values[churned], bins=edges)[0]
    # Two filled outlines (all customers, then those who stayed over them) draw a stacked
    # histogram with two artists rather than one patch per bin.
    ax.stairs(all_counts, edges, fill=True, color=CHURN_COLOURS[1])
    ax.stairs(all_counts - churned_counts, edges, fill=True, color=CHURN_COLOURS[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = churned_counts / all_counts
    ax.set_ylabel("customers")
    ax.set_xlabel(f"{column} (bins of {edges[1] - edges[0]:g})")
    _churn_rate_overlay(ax, (edges[:-1] + edges[1:]) / 2, all_counts, rates, base_rate)


def _readable_bin_edges(values: np.ndarray) -> np.ndarray:
    """Bins of a round width (1, 2, 2.5 or 5 times a power of ten) near the Freedman-Diaconis
    width, about MIN_BINS to MAX_BINS of them over the range of `values`."""
    low, high = float(np.min(values)), float(np.max(values))
    span = max(high - low, 1e-9)
    quartiles = np.percentile(values, [25, 75])
    width = 2.0 * float(quartiles[1] - quartiles[0]) / max(len(values), 1) ** (1 / 3)
    width = min(max(width, span / MAX_BINS), span / MIN_BINS)
    magnitude = 10.0 ** np.floor(np.log10(width))
    width = min((m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0)), key=lambda w: abs(w - width))
    start = np.floor(low / width) * width
    bins = max(int(np.ceil((high - start) / width)), 1)
    return start + width * np.arange(bins + 1)


def _churn_rate_overlay(
    ax: Any, positions: Any, counts: Any, rates: Any, base_rate: float, ordered: bool = True
) -> None:
    """Churn rate per value (right axis) where enough customers have it, and the base rate;
    joined by a line only when the values are ordered (not between categories)."""
    shown = np.asarray(counts) >= MIN_CUSTOMERS_FOR_A_RATE
    rate_axis = ax.twinx()
    rate_axis.plot(
        np.asarray(positions)[shown],
        np.asarray(rates)[shown],
        "o-" if ordered else "o",
        color=CHURN_RATE_COLOUR,
        markersize=3 if ordered else 7,
        linewidth=1,
    )
    rate_axis.axhline(base_rate, color=CHURN_RATE_COLOUR, linestyle="--", linewidth=1)
    top = np.nanmax(np.asarray(rates, dtype=float)[shown], initial=base_rate)
    rate_axis.set_ylim(0, min(1.0, top * 1.15 + 0.02))
    rate_axis.set_ylabel("churn rate", color=CHURN_RATE_COLOUR)


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


def cv_scores(cv: dict[str, float], folds: int | None = None) -> Any:
    """Cross-validated metrics as bars with their spread over folds."""
    names = sorted({k.removeprefix("cv_").removesuffix("_mean") for k in cv if k.endswith("_mean")})
    means = [cv[f"cv_{n}_mean"] for n in names]
    stds = [cv[f"cv_{n}_std"] for n in names]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(names, means, yerr=stds, capsize=4, color="#4C72B0")
    ax.set_ylim(0, 1)
    of = f"{folds} folds" if folds else "folds"
    ax.set_title(f"cross-validated metrics, training set ({of}: mean ± std, ddof=1)")
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
    ax.set_title(f"confusion matrix, test set, threshold {threshold:.3f}")
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
    """The most important features of a fitted model (impurity, on the training set)."""
    shown = values.head(top)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(shown) + 1))
    ax.barh(shown.index, shown.values, color="#8172B2")
    ax.set_title("impurity importance, training set (features the classifier sees)")
    fig.tight_layout()
    return fig


def importance_views(impurity: pd.Series, permutation: pd.DataFrame, top: int = 12) -> Any:
    """Impurity importance (training set, engineered features) beside permutation importance
    (test set, raw columns): the second says what the model needs on new customers."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.3 * top + 1.4))
    shown = impurity.head(top)[::-1]
    left.barh(shown.index, shown.values, color="#8172B2")
    left.set_title("impurity importance, training set\n(features the classifier sees)")
    perm = permutation.iloc[::-1]
    right.barh(perm.index, perm["importance"], xerr=perm["std"], color="#55A868", capsize=3)
    right.axvline(0, color="grey", linewidth=1)
    right.set_title(
        "permutation importance, test set\n(drop in ROC-AUC when a raw column is shuffled)"
    )
    fig.tight_layout()
    return fig


def profit_curves(curves: dict[str, pd.DataFrame], chosen: float) -> Any:
    """Net value against the share of customers contacted, with the contact-everyone and
    contact-nobody baselines and the chosen threshold marked, one panel per data set."""
    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 3.6), squeeze=False)
    for ax, (label, curve) in zip(axes[0], curves.items(), strict=True):
        ax.plot(curve["share_contacted"], curve["net_value"], color="#4C72B0", label="model")
        ax.axhline(0, color="grey", linestyle=":", label="contact nobody")
        everyone = float(curve["net_value"].iloc[-1])
        ax.axhline(everyone, color="#C44E52", linestyle="--", label="contact everyone")
        for threshold, style in ((chosen, "o"), (0.5, "s")):
            cut = curve[curve["lowest_contacted"] >= threshold].iloc[-1]
            ax.plot(
                cut["share_contacted"],
                cut["net_value"],
                style,
                color="black",
                label=f"threshold {threshold:.3f}",
            )
        ax.set_xlabel("share of customers contacted, most likely churners first")
        ax.set_ylabel("net value")
        ax.set_title(f"profit curve, {label}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def reliability(calibration: dict[str, Any]) -> Any:
    """Observed churn rate against mean predicted probability, in equal-count bins."""
    fig, ax = plt.subplots(figsize=(4.4, 4))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    ax.plot(
        calibration["mean_predicted"], calibration["observed"], "o-", color="#4C72B0", label="model"
    )
    ax.set_xlabel("mean predicted churn probability")
    ax.set_ylabel("observed churn rate")
    ax.set_title(
        f"reliability, test set (deciles)\nBrier {calibration['brier']:.3f}, "
        f"constant base rate {calibration['brier_constant']:.3f}"
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def precision_recall(y_true: Any, probability: Any) -> Any:
    """Precision against recall on the test set, with average precision and the base rate."""
    # deferred: scikit-learn (~2.5 s) is imported only when this runs
    from sklearn.metrics import PrecisionRecallDisplay, average_precision_score

    fig, ax = plt.subplots(figsize=(4.4, 4))
    PrecisionRecallDisplay.from_predictions(y_true, probability, ax=ax, name="model")
    base = float(np.mean(y_true))
    ax.axhline(base, linestyle="--", color="grey", linewidth=1, label=f"base rate {base:.3f}")
    ax.legend(fontsize=7)
    average = average_precision_score(y_true, probability)
    ax.set_title(f"precision-recall, test set\naverage precision {average:.3f}")
    fig.tight_layout()
    return fig


def gain_and_lift(table: pd.DataFrame) -> Any:
    """Cumulative gain and lift of customers ranked by churn probability, by decile."""
    fig, (gain, lift) = plt.subplots(1, 2, figsize=(10, 3.6))
    share = np.concatenate([[0.0], np.cumsum(table["customers"]) / table["customers"].sum()])
    captured = np.concatenate([[0.0], table["cumulative_gain"]])
    gain.plot(share, captured, "o-", color="#4C72B0", label="model")
    gain.plot([0, 1], [0, 1], "--", color="grey", label="random order")
    gain.set_xlabel("share of customers contacted")
    gain.set_ylabel("share of churners reached")
    gain.set_title("cumulative gain, test set")
    gain.legend(fontsize=7)
    lift.bar(table.index, table["lift"], color="#55A868")
    lift.axhline(1, linestyle="--", color="grey", linewidth=1)
    lift.set_xticks(table.index)
    lift.set_xlabel("decile of churn probability (1 = highest)")
    lift.set_ylabel("churn rate / base rate")
    lift.set_title("lift by decile, test set")
    fig.tight_layout()
    return fig


def segments(table: pd.DataFrame) -> Any:
    """Churn rate (observed and predicted) and net value by segment."""
    labels = [f"{segment}: {level}" for segment, level in table.index]
    y = np.arange(len(labels))
    fig, (rate, value) = plt.subplots(1, 2, figsize=(11, 0.35 * len(labels) + 1.4), sharey=True)
    rate.barh(y - 0.2, table["churn_rate"], 0.4, color="#DD8452", label="observed")
    rate.barh(y + 0.2, table["mean_predicted"], 0.4, color="#4C72B0", label="mean predicted")
    rate.set_yticks(y, labels)
    rate.invert_yaxis()
    rate.set_title("churn rate by contract and tenure (months), test set")
    rate.legend(fontsize=7)
    value.barh(y, table["net_value"], color="#55A868")
    value.axvline(0, color="grey", linewidth=1)
    value.set_title("net value of the campaign by segment, test set")
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


# What 05_monitor shows: one batch against the training data and the training-time model.

DRIFT_COLOURS = {True: "#C44E52", False: "#4C72B0"}


def drift_overview(table: pd.DataFrame) -> Any:
    """Per feature: its PSI with the 0.1 and 0.25 marks, and its test against the threshold.

    `table` is `Monitor.drift_table()`: one row per feature with `psi`, `statistic`,
    `value`, `threshold` and `drifted`. p-values are drifted below the threshold,
    distances above it; the bars are coloured by the verdict either way.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.45 * len(table) + 1.6))
    names = list(table.index)
    colours = [DRIFT_COLOURS[bool(d)] for d in table["drifted"]]
    psi = table["psi"].clip(upper=2.0)
    left.barh(names, psi, color=colours)
    for mark, style in ((0.1, ":"), (0.25, "--")):
        left.axvline(mark, color="#555555", linestyle=style, linewidth=1)
    left.set_xlabel("population stability index (0.1 moderate, 0.25 significant; cut at 2)")
    left.invert_yaxis()
    values = table["value"].replace(np.inf, np.nan).fillna(0.0)
    right.barh(names, values, color=colours)
    for name, (value, threshold, statistic) in zip(
        names, table[["value", "threshold", "statistic"]].itertuples(index=False), strict=True
    ):
        right.plot([threshold, threshold], [names.index(name) - 0.4, names.index(name) + 0.4], "k-")
        right.text(
            max(float(np.nan_to_num(value)), threshold),
            names.index(name),
            f"  {statistic}",
            va="center",
            fontsize=7,
        )
    right.set_xlabel("drift statistic (black: its threshold; red: drifted)")
    right.invert_yaxis()
    right.set_yticks([])
    fig.tight_layout()
    return fig


def prediction_drift(reference: Any, current: Any, threshold: float) -> Any:
    """The churn probabilities of the batch against the test set's at training time."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    bins = [i / 40 for i in range(41)]
    ax.hist(reference, bins=bins, density=True, alpha=0.55, label="test set (training time)")
    ax.hist(current, bins=bins, density=True, alpha=0.55, label="this batch")
    ax.axvline(
        threshold, color="#C44E52", linestyle="--", label=f"decision threshold {threshold:.3f}"
    )
    ax.set_xlabel("predicted churn probability")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def batch_performance(performance: Any) -> Any:
    """Realised ROC-AUC, recall, net value per customer and ROI of the batch beside the test set's."""
    p = performance
    pairs = {
        "ROC-AUC": (p.reference_roc_auc, p.roc_auc),
        "recall": (p.reference_recall, p.recall),
        "net value per customer": (p.reference_net_value_per_customer, p.net_value_per_customer),
        "ROI of the offers": (p.reference_roi, p.roi),
    }
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    for ax, (label, (then, now)) in zip(axes, pairs.items(), strict=True):
        ax.bar(["test set", "this batch"], [then, now], color=["#8C8C8C", "#4C72B0"])
        ax.set_title(label, fontsize=9)
        for i, value in enumerate((then, now)):
            ax.text(
                i,
                value,
                f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}",
                ha="center",
                va="bottom",
                fontsize=8,
            )
    fig.tight_layout()
    return fig
