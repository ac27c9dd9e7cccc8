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
