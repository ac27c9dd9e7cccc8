"""Model types, cross-validation, metrics and business value.

A model type is an entry in `MODEL_TYPES`: its hyperparameter schema and a
builder. Adding one here (and a section under `hyperparameters:` in
`params/train.yaml`) makes it selectable without touching any notebook.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Hyper(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, defer_build=True)


class RandomForestHyper(_Hyper):
    n_estimators: int = Field(default=200, ge=1, le=5000)
    max_depth: int | None = Field(default=None, ge=1, le=200)
    min_samples_leaf: int = Field(default=1, ge=1, le=10_000)
    # Share of the features each split chooses from (scikit-learn's `max_features` as a fraction).
    max_features: float = Field(default=0.25, gt=0.0, le=1.0)


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


# The share of distinct rows a bootstrap sample of n rows holds, 1 - 1/e, as n grows.
BOOTSTRAP_SHARE = 0.632
# The largest second derivative one row can add to a leaf under log loss: p(1 - p) at p = 1/2.
MAX_ROW_HESSIAN = 0.25


def _random_forest(h: RandomForestHyper, seed: int) -> Any:
    """A random forest computed by XGBoost's random-forest mode.

    The same model as scikit-learn's `RandomForestClassifier` with these hyperparameters:
    `n_estimators` trees grown side by side to `max_depth`, each on its own sample of the
    rows, each split choosing among a random `max_features` share of the features. What
    differs is how a tree is computed: XGBoost bins each feature once (256 quantiles) and
    finds splits on histograms, where scikit-learn sorts the rows at every node. On the
    default training set that cross-validates about three times faster per core, with
    the same ROC-AUC (`tests/benchmarks/test_cross_validation.py` measures both).

    Two hyperparameters are translated: a tree samples `BOOTSTRAP_SHARE` of the rows
    without replacement (the distinct rows a bootstrap sample holds), and a leaf needs a
    hessian of `MAX_ROW_HESSIAN * min_samples_leaf`, which no fewer than
    `min_samples_leaf` rows can reach.
    """
    # deferred: XGBoost (~0.1 s, after scikit-learn) is imported only when this runs
    from xgboost import XGBRFClassifier

    return XGBRFClassifier(
        n_estimators=h.n_estimators,
        max_depth=0 if h.max_depth is None else h.max_depth,  # 0: no limit
        min_child_weight=MAX_ROW_HESSIAN * h.min_samples_leaf,
        colsample_bynode=h.max_features,
        subsample=BOOTSTRAP_SHARE,
        tree_method="hist",
        random_state=seed,
        # One thread keeps fits bit-for-bit reproducible and lets the cross-validation fit
        # its folds side by side instead.
        n_jobs=1,
    )


def _logistic_regression(h: LogisticRegressionHyper, seed: int) -> Any:
    # deferred: scikit-learn (~2.5 s) is imported only when this runs
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(**h.model_dump(), random_state=seed)


def _gradient_boosting(h: GradientBoostingHyper, seed: int) -> Any:
    """Gradient-boosted trees computed by XGBoost (histogram splits).

    The model of scikit-learn's `GradientBoostingClassifier` with these hyperparameters:
    `n_estimators` trees of depth `max_depth` fitted one after the other to the log loss's
    gradient, each shrunk by `learning_rate`, every row used. XGBoost finds the splits on
    histograms instead of sorted rows (about nine times faster on the default training
    set, the same cross-validated ROC-AUC) and keeps its default L2 penalty of 1 on the
    leaf values.
    """
    # deferred: XGBoost (~0.1 s, after scikit-learn) is imported only when this runs
    from xgboost import XGBClassifier

    return XGBClassifier(
        n_estimators=h.n_estimators,
        learning_rate=h.learning_rate,
        max_depth=h.max_depth,
        tree_method="hist",
        random_state=seed,
        n_jobs=1,  # as the forest: reproducible fits, folds side by side
    )


MODEL_TYPES: dict[str, ModelType] = {
    "random_forest": ModelType(
        RandomForestHyper,
        _random_forest,
        ("xgboost.core.Booster", "xgboost.sklearn.XGBRFClassifier"),
    ),
    "logistic_regression": ModelType(LogisticRegressionHyper, _logistic_regression),
    "gradient_boosting": ModelType(
        GradientBoostingHyper,
        _gradient_boosting,
        ("xgboost.core.Booster", "xgboost.sklearn.XGBClassifier"),
    ),
}


# The model's quality metrics, by scikit-learn scorer name: cross-validated as `cv_<name>_mean`
# and `cv_<name>_std`, held out as `test_<name>`. Every list of metrics derives from this one.
METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
TEST_METRICS = tuple(f"test_{name}" for name in METRICS)


def build_classifier(model_type: str, hyperparameters: BaseModel, seed: int) -> Any:
    """A fresh, unfitted estimator of `model_type`."""
    return MODEL_TYPES[model_type].build(hyperparameters, seed)


@dataclass(frozen=True)
class CrossValidation:
    """Stratified k-fold predictions: every training row scored by the fold that held it out."""

    probability: Any  # out-of-fold churn probability of each training row
    fold: Any  # the fold (0 to k-1) that held each row out
    folds: int

    def fold_metrics(self, y: Any, threshold: float) -> dict[str, list[float]]:
        """Each metric of each fold, at `threshold`."""
        # deferred: numpy (~0.2 s) is imported only when this runs
        import numpy as np

        y = np.asarray(y)
        per_fold = [
            holdout_metrics(y[self.fold == k], self.probability[self.fold == k], threshold)
            for k in range(self.folds)
        ]
        return {m: [scores[f"test_{m}"] for scores in per_fold] for m in METRICS}

    def summary(self, y: Any, threshold: float) -> dict[str, float]:
        """`cv_<metric>_mean` and `cv_<metric>_std` (over folds, ddof=1) at `threshold`."""
        # deferred: numpy (~0.2 s) is imported only when this runs
        import numpy as np

        summary: dict[str, float] = {}
        for metric, values in self.fold_metrics(y, threshold).items():
            summary[f"cv_{metric}_mean"] = float(np.mean(values))
            # ddof=1: the folds are a sample of the ways the data could have been split
            summary[f"cv_{metric}_std"] = float(np.std(values, ddof=1))
        return summary


def stratified_folds(y: Any, folds: int, seed: int) -> Any:
    """The fold (0 to k-1) that holds out each row: stratified, shuffled with `seed`."""
    # deferred: numpy (~0.2 s) and scikit-learn (~2.5 s) are imported only when this runs
    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    fold = np.empty(len(y), dtype=int)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(y)), y)):
        fold[held_out] = k
    return fold


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, as a container or `taskset` sets it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity call on this platform (macOS)
        return max(1, os.cpu_count() or 1)


@contextmanager
def fitting_pool(tasks: int) -> Iterator[Executor | None]:
    """Threads to fit up to `tasks` models side by side, or None when one core (or one task) is all there is.

    Threads, not processes: scikit-learn's tree and linear solvers release the GIL while
    they fit, and a thread shares the training data instead of pickling it to a child.
    Each fit is the same computation in any order, so the results are bit for bit those
    of fitting one after the other.
    """
    workers = min(usable_cores(), tasks)
    if workers < 2:
        yield None
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlvs-fit") as pool:
        yield pool


def cross_validate_models(
    models: dict[str, Any], X: Any, y: Any, folds: int, seed: int, pool: Executor | None = None
) -> dict[str, CrossValidation]:
    """Fit each of `models` once per stratified fold, all on the same folds, and keep each one's
    predictions on the rows held out. The fits run side by side on the usable cores (`pool`,
    or a pool of their own)."""
    # deferred: numpy (~0.2 s) and scikit-learn (~2.5 s) are imported only when this runs
    import numpy as np
    from sklearn.base import clone

    fold = stratified_folds(y, folds, seed)
    # Every estimator is cloned before any fit starts: a clone reads its source's parameters,
    # which a caller may be fitting meanwhile (the final model, beside its cross-validation).
    fits = [(name, k, clone(model)) for name, model in models.items() for k in range(folds)]

    def fit_and_predict(k: int, estimator: Any) -> Any:
        held_out = fold == k
        fitted = estimator.fit(X[~held_out], y[~held_out])
        return fitted.predict_proba(X[held_out])[:, 1]

    with ExitStack() as stack:
        if pool is None:
            pool = stack.enter_context(fitting_pool(len(fits)))
        if pool is None:
            predicted = [fit_and_predict(k, estimator) for _, k, estimator in fits]
        else:
            futures = [pool.submit(fit_and_predict, k, estimator) for _, k, estimator in fits]
            predicted = [future.result() for future in futures]
    probability: dict[str, Any] = {}
    for (name, k, _), held_out_probability in zip(fits, predicted, strict=True):
        probability.setdefault(name, np.empty(len(y), dtype=float))[fold == k] = (
            held_out_probability
        )
    return {
        name: CrossValidation(probability=values, fold=fold, folds=folds)
        for name, values in probability.items()
    }


def cross_validate_model(
    model: Any, X: Any, y: Any, folds: int, seed: int, pool: Executor | None = None
) -> CrossValidation:
    """Fit `model` once per stratified fold and keep its predictions on the rows held out."""
    return cross_validate_models({"model": model}, X, y, folds, seed, pool)["model"]


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
