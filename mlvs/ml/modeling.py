"""Model types, cross-validation, metrics and business value.

A model type is an entry in `MODEL_TYPES`: its hyperparameter schema and a
builder. Adding one here (and a section under `hyperparameters:` in
`params/train.yaml`) makes it selectable without touching any notebook.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Hyper(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class RandomForestHyper(_Hyper):
    n_estimators: int = Field(default=200, ge=1, le=5000)
    max_depth: int | None = Field(default=None, ge=1, le=200)
    min_samples_leaf: int = Field(default=1, ge=1, le=10_000)


class LogisticRegressionHyper(_Hyper):
    C: float = Field(default=1.0, gt=0.0, le=1e6)
    max_iter: int = Field(default=1000, ge=10, le=100_000)


class GradientBoostingHyper(_Hyper):
    n_estimators: int = Field(default=150, ge=1, le=5000)
    learning_rate: float = Field(default=0.05, gt=0.0, le=1.0)
    max_depth: int = Field(default=3, ge=1, le=50)


@dataclass(frozen=True)
class ModelType:
    """A selectable estimator: its hyperparameter schema and how to build it."""

    hyperparameters: type[_Hyper]
    build: Callable[[Any, int], Any]
    # Types skops must be told to trust when it loads this estimator.
    trusted_types: tuple[str, ...] = ()


def _random_forest(h: RandomForestHyper, seed: int) -> Any:
    # deferred: scikit-learn (~2.5 s) is imported only when this runs
    from sklearn.ensemble import RandomForestClassifier

    # n_jobs=1 keeps fits bit-for-bit reproducible and leaves the second core to the kernel.
    return RandomForestClassifier(**h.model_dump(), random_state=seed, n_jobs=1)


def _logistic_regression(h: LogisticRegressionHyper, seed: int) -> Any:
    # deferred: scikit-learn (~2.5 s) is imported only when this runs
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(**h.model_dump(), random_state=seed)


def _gradient_boosting(h: GradientBoostingHyper, seed: int) -> Any:
    # deferred: scikit-learn (~2.5 s) is imported only when this runs
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(**h.model_dump(), random_state=seed)


MODEL_TYPES: dict[str, ModelType] = {
    "random_forest": ModelType(RandomForestHyper, _random_forest, ("sklearn.tree._tree.Tree",)),
    "logistic_regression": ModelType(LogisticRegressionHyper, _logistic_regression),
    "gradient_boosting": ModelType(
        GradientBoostingHyper, _gradient_boosting, ("sklearn.tree._tree.Tree",)
    ),
}


# The model's quality metrics, by scikit-learn scorer name: cross-validated as `cv_<name>_mean`
# and `cv_<name>_std`, held out as `test_<name>`. Every list of metrics derives from this one.
METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
TEST_METRICS = tuple(f"test_{name}" for name in METRICS)


def build_classifier(model_type: str, hyperparameters: BaseModel, seed: int) -> Any:
    """A fresh, unfitted estimator of `model_type`."""
    return MODEL_TYPES[model_type].build(hyperparameters, seed)


def cross_validate_model(model: Any, X: Any, y: Any, folds: int, seed: int) -> dict[str, float]:
    """Stratified k-fold scores: `<metric>_mean` and `<metric>_std` for each metric."""
    # deferred: numpy (~0.2 s) and scikit-learn (~2.5 s) are imported only when this runs
    import numpy as np
    from sklearn.model_selection import StratifiedKFold, cross_validate

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_validate(model, X, y, cv=cv, scoring=list(METRICS), n_jobs=1)
    summary: dict[str, float] = {}
    for metric in METRICS:
        values = scores[f"test_{metric}"]
        summary[f"cv_{metric}_mean"] = float(np.mean(values))
        summary[f"cv_{metric}_std"] = float(np.std(values))
    return summary


def holdout_metrics(y_true: Any, proba: Any, threshold: float) -> dict[str, float]:
    """Held-out metrics of predicted churn probabilities at `threshold`."""
    # deferred: numpy (~0.2 s) and scikit-learn (~2.5 s) are imported only when this runs
    import numpy as np
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y_pred = (np.asarray(proba) >= threshold).astype(int)
    scores = {
        "accuracy": accuracy_score(y_true, y_pred),
        "precision": precision_score(y_true, y_pred, zero_division=0),
        "recall": recall_score(y_true, y_pred, zero_division=0),
        "f1": f1_score(y_true, y_pred, zero_division=0),
        "roc_auc": roc_auc_score(y_true, proba),  # of the probabilities, not the threshold
    }
    return {f"test_{name}": float(scores[name]) for name in METRICS}


def business_value(y_true: Any, proba: Any, threshold: float, business: Any) -> dict[str, float]:
    """Net value and ROI of a retention campaign that contacts every flagged customer."""
    # deferred: numpy (~0.2 s) and scikit-learn (~2.5 s) are imported only when this runs
    import numpy as np
    from sklearn.metrics import confusion_matrix

    y_pred = (np.asarray(proba) >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    net = (
        tp * business.true_positive
        + fp * business.false_positive
        + fn * business.false_negative
        + tn * business.true_negative
    )
    spend = (tp + fp) * business.contact_cost
    return {
        "net_value": float(net),
        "campaign_cost": float(spend),
        "roi": float(net / spend) if spend else 0.0,
        "contacted": float(tp + fp),
    }
