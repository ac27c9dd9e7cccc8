"""Out-of-sample evaluation: bootstrap intervals, calibration, gain and lift, importance, segments.

Everything takes predictions (or a fitted model and held-out rows) and returns values;
every random draw is seeded. The bootstraps are vectorised: each draw is a row of
resampling counts, so a thousand draws of a thousand customers cost one matrix product.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlvs.ml.data import TARGET
from mlvs.ml.decision import ContactValues, choose_threshold, net_value

if TYPE_CHECKING:
    from mlvs.ml.modeling import CrossValidation

BOOTSTRAP_DRAWS = 1000
CONFIDENCE = 0.95
# Tenure bands of the segment view, in months: new, first year, second, established, loyal.
TENURE_BANDS = (0, 6, 12, 24, 48, 73)


def bootstrap_counts(n: int, draws: int, seed: int) -> np.ndarray:
    """`draws` rows of resampling counts: how often each of `n` rows is drawn, with replacement."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(draws, n)) + (np.arange(draws) * n)[:, None]
    return np.bincount(picks.ravel(), minlength=draws * n).reshape(draws, n).astype(float)


def weighted_roc_auc(y: Any, probability: Any, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC of each row of `weights` (counts per customer); ties count one half."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(probability, dtype=float)
    weights = np.atleast_2d(weights)
    order = np.argsort(p, kind="stable")
    p_sorted = p[order]
    w = weights[:, order]
    starts = np.flatnonzero(np.concatenate([[True], p_sorted[1:] != p_sorted[:-1]]))
    positives = np.add.reduceat(w * y[order], starts, axis=1)
    negatives = np.add.reduceat(w * (1.0 - y[order]), starts, axis=1)
    below = np.cumsum(negatives, axis=1) - negatives
    pairs = positives.sum(axis=1) * negatives.sum(axis=1)
    won = (positives * (below + 0.5 * negatives)).sum(axis=1)
    return np.divide(won, pairs, out=np.full(len(won), np.nan), where=pairs > 0)


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float


def _interval(estimate: float, draws: np.ndarray) -> Interval:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.nanpercentile(draws, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high))


def bootstrap_intervals(
    y: Any,
    probability: Any,
    threshold: float,
    values: ContactValues,
    seed: int,
    draws: int = BOOTSTRAP_DRAWS,
) -> pd.DataFrame:
    """95% bootstrap intervals of ROC-AUC and net value (at `threshold`) on held-out rows."""
    y = np.asarray(y)
    p = np.asarray(probability, dtype=float)
    counts = bootstrap_counts(len(y), draws, seed)
    earned = values.realised(y) * (p >= threshold)
    rows = {
        "roc_auc": _interval(
            float(weighted_roc_auc(y, p, np.ones(len(y)))[0]), weighted_roc_auc(y, p, counts)
        ),
        "net_value": _interval(float(earned.sum()), counts @ earned),
    }
    return pd.DataFrame({name: vars(interval) for name, interval in rows.items()}).T


def paired_difference(
    y: Any,
    probability: Any,
    baseline: Any,
    statistic: str,
    counts: np.ndarray,
    earned: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[float, float, float, float]:
    """`statistic` of `probability` minus that of `baseline` on the same resamples.

    Returns the difference, its 95% interval and a two-sided bootstrap p-value (twice the
    share of resamples on the far side of zero). For "net_value", `earned` holds what
    each customer earned under either model's campaign.
    """
    if statistic == "roc_auc":
        ones = np.ones(len(np.asarray(y)))
        point = float(
            weighted_roc_auc(y, probability, ones)[0] - weighted_roc_auc(y, baseline, ones)[0]
        )
        draws = weighted_roc_auc(y, probability, counts) - weighted_roc_auc(y, baseline, counts)
    else:
        assert earned is not None, "net value needs what each campaign earned"
        point = float(earned[0].sum() - earned[1].sum())
        draws = counts @ (earned[0] - earned[1])
    interval = _interval(point, draws)
    p_value = min(1.0, 2 * min(np.mean(draws <= 0), np.mean(draws >= 0)))
    return point, interval.low, interval.high, float(p_value)


def compare_models(
    y: Any,
    predictions: dict[str, CrossValidation],
    default: str,
    values: ContactValues,
    seed: int,
    draws: int = BOOTSTRAP_DRAWS,
) -> pd.DataFrame:
    """Model types side by side on the same folds' out-of-fold predictions.

    For each: mean and spread (ddof=1) of the folds' ROC-AUC; the net value at its own
    value-optimal threshold; and the paired bootstrap difference of both to `default`.
    The threshold is chosen on the predictions it is scored on, which flatters every
    model alike: the table ranks models, the test set measures the chosen one.
    """
    y = np.asarray(y)
    counts = bootstrap_counts(len(y), draws, seed)
    earned: dict[str, np.ndarray] = {}
    rows: dict[str, dict[str, float]] = {}
    for name, cv in predictions.items():
        threshold = choose_threshold(y, cv.probability, values)
        earned[name] = values.realised(y) * (cv.probability >= threshold)
        auc = cv.fold_metrics(y, threshold)["roc_auc"]
        rows[name] = {
            "oof_roc_auc": float(np.mean(auc)),
            "oof_roc_auc_std": float(np.std(auc, ddof=1)),
            "threshold": threshold,
            "oof_net_value": net_value(y, cv.probability, threshold, values),
        }
    base = predictions[default].probability
    for name, cv in predictions.items():
        if name == default:
            rows[name].update(
                dict.fromkeys(("auc_diff", "auc_p", "net_value_diff", "net_value_p"), np.nan)
            )
            continue
        auc_diff, _, _, auc_p = paired_difference(y, cv.probability, base, "roc_auc", counts)
        net_diff, _, _, net_p = paired_difference(
            y, cv.probability, base, "net_value", counts, (earned[name], earned[default])
        )
        rows[name].update(
            {"auc_diff": auc_diff, "auc_p": auc_p, "net_value_diff": net_diff, "net_value_p": net_p}
        )
    table = pd.DataFrame(rows).T
    table.index.name = "model type"
    return table.sort_values("oof_net_value", ascending=False)


def comparison_verdict(table: pd.DataFrame, default: str, alpha: float = 0.05) -> str:
    """One sentence: whether the table supports the default model type, and why.

    Net value decides (it is what the campaign earns); a better ranking (ROC-AUC) that
    does not earn more beyond the noise is named, but does not replace the default.
    """
    rivals = table.drop(index=default)
    earns_more = rivals[(rivals["net_value_diff"] > 0) & (rivals["net_value_p"] < alpha)]
    if not earns_more.empty:
        best = earns_more.index[0]
        return (
            f"{best} earns more out-of-fold net value than {default} beyond the noise "
            f"(+{earns_more.loc[best, 'net_value_diff']:,.0f}, paired bootstrap p = "
            f"{earns_more.loc[best, 'net_value_p']:.3f}): set model_type: {best} in params/train.yaml."
        )
    ranks_better = rivals[(rivals["auc_diff"] > 0) & (rivals["auc_p"] < alpha)]
    verdict = (
        f"No model type earns more out-of-fold net value than {default} beyond the noise "
        f"(paired bootstrap, p >= {alpha})"
    )
    if ranks_better.empty:
        return verdict + f", nor ranks customers better: the default stays {default}."
    best = ranks_better.index[0]
    return (
        verdict + f"; {best} ranks customers better (ROC-AUC "
        f"+{ranks_better.loc[best, 'auc_diff']:.4f}, p = {ranks_better.loc[best, 'auc_p']:.3f}) "
        f"but that does not earn more here, so the default stays {default}."
    )


def majority_baseline(y_train: Any, y_test: Any) -> float:
    """Test accuracy of predicting the training set's majority class for everyone."""
    majority = int(np.mean(np.asarray(y_train)) >= 0.5)
    return float(np.mean(np.asarray(y_test) == majority))


def reliability(y: Any, probability: Any, base_rate: float, bins: int = 10) -> dict[str, Any]:
    """Observed churn rate against mean predicted in equal-count bins, Brier scores and AP.

    The Brier score of a constant prediction of the training base rate is the bar a
    useful probability must clear.
    """
    y = np.asarray(y, dtype=float)
    p = np.asarray(probability, dtype=float)
    order = np.argsort(p, kind="stable")
    groups = np.array_split(order, bins)
    # deferred: scikit-learn (~2.5 s) is imported only when this runs
    from sklearn.metrics import average_precision_score

    return {
        "base_rate": float(y.mean()),
        "average_precision": float(average_precision_score(y, p)),
        "mean_predicted": np.array([p[g].mean() for g in groups if len(g)]),
        "observed": np.array([y[g].mean() for g in groups if len(g)]),
        "brier": float(np.mean((p - y) ** 2)),
        "brier_constant": float(np.mean((base_rate - y) ** 2)),
    }


def gain_and_lift(y: Any, probability: Any, deciles: int = 10) -> pd.DataFrame:
    """Customers ranked by churn probability in deciles: churn rate, lift and cumulative gain."""
    y = np.asarray(y, dtype=float)
    order = np.argsort(-np.asarray(probability, dtype=float), kind="stable")
    groups = np.array_split(y[order], deciles)
    customers = np.array([len(g) for g in groups])
    churners = np.array([g.sum() for g in groups])
    base = y.mean()
    table = pd.DataFrame(
        {
            "customers": customers,
            "churners": churners.astype(int),
            "churn_rate": churners / customers,
            "lift": churners / customers / base,
            "cumulative_gain": np.cumsum(churners) / churners.sum(),
            "cumulative_lift": np.cumsum(churners) / np.cumsum(customers) / base,
        },
        index=pd.RangeIndex(1, deciles + 1, name="decile"),
    )
    return table


def permutation_importance_by_column(
    model: Any, X: pd.DataFrame, y: Any, seed: int, repeats: int = 5
) -> pd.DataFrame:
    """Drop in held-out ROC-AUC when each raw column is shuffled (mean and spread over repeats).

    The model takes raw rows, so shuffling a raw column also shuffles every engineered
    feature made from it: the importance of the column, not of one derived feature.
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    n, ones = len(X), np.ones(len(y))
    reference = float(weighted_roc_auc(y, model.predict_proba(X)[:, 1], ones)[0])
    # All repeats of one column in one call: a model's fixed cost per call dominates small sets.
    stacked = pd.concat([X] * repeats, ignore_index=True)
    drops: dict[str, np.ndarray] = {}
    for column in X.columns:
        shuffled = stacked.copy()
        values = X[column].to_numpy()
        shuffled[column] = np.concatenate([values[rng.permutation(n)] for _ in range(repeats)])
        scores = model.predict_proba(shuffled)[:, 1].reshape(repeats, n)
        drops[column] = reference - np.array(
            [weighted_roc_auc(y, score, ones)[0] for score in scores]
        )
    table = pd.DataFrame(
        {
            "importance": {c: float(np.mean(d)) for c, d in drops.items()},
            "std": {c: float(np.std(d, ddof=1)) for c, d in drops.items()},
        }
    )
    table.index.name = "column"
    return table.sort_values("importance", ascending=False)


def tenure_band(tenure_months: pd.Series) -> pd.Series:
    """Tenure in bands of months (0-5, 6-11, 12-23, 24-47, 48-72)."""
    labels = [f"{lo}-{hi - 1}" for lo, hi in itertools.pairwise(TENURE_BANDS)]
    return pd.cut(tenure_months, bins=list(TENURE_BANDS), labels=labels, right=False)


def segments(
    frame: pd.DataFrame, probability: Any, threshold: float, values: ContactValues
) -> pd.DataFrame:
    """Churn rate, mean predicted, contacts and net value by contract and by tenure band."""
    p = np.asarray(probability, dtype=float)
    contacted = p >= threshold
    scored = pd.DataFrame(
        {
            "contract": frame["contract"].to_numpy(),
            "tenure": tenure_band(frame["tenure_months"]).array,  # ordered bands, not by name
            "churned": frame[TARGET].to_numpy(),
            "predicted": p,
            "contacted": contacted.astype(int),
            "net_value": values.realised(frame[TARGET]) * contacted,
        }
    )
    parts = []
    for by in ("contract", "tenure"):
        grouped = scored.groupby(by, observed=True).agg(
            customers=("churned", "size"),
            churn_rate=("churned", "mean"),
            mean_predicted=("predicted", "mean"),
            contacted=("contacted", "sum"),
            net_value=("net_value", "sum"),
        )
        grouped.index = pd.MultiIndex.from_product([[by], grouped.index.astype(str)])
        parts.append(grouped)
    table = pd.concat(parts)
    table.index.names = ["segment", "level"]
    return table
