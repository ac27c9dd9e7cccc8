"""The figures the notebooks show and log: each function takes values, returns a Figure."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mlvs.ml.data import CATEGORICAL_FEATURES, NUMERIC_FEATURES, TARGET

CHURN_COLOURS = {0: "#4C72B0", 1: "#DD8452"}


def distributions(frame: pd.DataFrame) -> Any:
    """Numeric features as histograms split by churn; categorical ones as churn rate per level."""
    numeric = [c for c in NUMERIC_FEATURES if c in frame.columns and frame[c].nunique() > 2]
    categorical = [c for c in CATEGORICAL_FEATURES if c in frame.columns]
    panels = numeric + categorical
    cols = 4
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows))
    for ax, column in zip(axes.ravel(), panels, strict=False):
        if column in numeric:
            for label, group in frame.groupby(TARGET):
                ax.hist(
                    group[column],
                    bins=30,
                    alpha=0.6,
                    color=CHURN_COLOURS[int(label)],
                    label="churned" if label else "stayed",
                    density=True,
                )
            ax.set_title(column)
            ax.legend(fontsize=7)
        else:
            rates = frame.groupby(column)[TARGET].mean().sort_values()
            ax.barh(rates.index.astype(str), rates.values, color="#55A868")
            ax.set_title(f"churn rate by {column}")
            ax.set_xlim(0, 1)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


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
