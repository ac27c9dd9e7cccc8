"""Cross-validation of the project's model on the default training set, against the naive way.

The data are the default prepare stage's (5,000 customers, 20 % held out: 4,000 training rows), the
model and its parameters those of `params/train.yaml`: a random forest. mlvs's figure is
`cross_validate_model` as the train stage calls it, with the forest XGBoost computes (histogram
splits) and the folds fitted side by side. The baseline is the textbook forest, scikit-learn's
`RandomForestClassifier` with the same hyperparameters, fitted on the same stratified folds in
sequence on one core, each fold's ROC-AUC scored. The two ROC-AUCs show the models equivalent.
Both in process, alternated, median of 5 (the host's speed varies by a quarter from minute to minute).
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import REPO
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from mlvs.ml.data import features_and_target, generate_customers, split_customers
from mlvs.ml.features import build_model
from mlvs.ml.modeling import build_classifier, cross_validate_model
from mlvs.ml.params import load_stage

from ._bench import median, record, table, timed

pytestmark = pytest.mark.bench

REPEATS = 5
TARGET_S = 1.0
TARGET_SPEEDUP = 4.0
AUC_TOLERANCE = 0.005


def sequential_cv_auc(model: Any, X: Any, y: Any, folds: int, seed: int) -> float:
    """Mean ROC-AUC of the folds, each fitted after the other on one core: the naive way."""
    scores = []
    for fit_rows, score_rows in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
        fitted = clone(model).fit(X.iloc[fit_rows], y.iloc[fit_rows])
        proba = fitted.predict_proba(X.iloc[score_rows])[:, 1]
        scores.append(roc_auc_score(y.iloc[score_rows], proba))
    return sum(scores) / len(scores)


def test_cross_validation_4000_rows() -> None:
    prepare = load_stage("prepare", REPO)
    train_params = load_stage("train", REPO)
    customers = generate_customers(
        prepare.n_rows,
        prepare.churn_rate,
        prepare.signal_strength,
        prepare.label_noise,
        prepare.seed,
    )
    train, _ = split_customers(customers, prepare.test_size, prepare.seed)
    X, y = features_and_target(train)
    assert len(X) == 4000, len(X)
    classifier = build_classifier(
        train_params.model_type, train_params.model_hyperparameters(), train_params.seed
    )
    model = build_model(classifier)
    folds, seed = train_params.cv_folds, train_params.seed
    assert train_params.model_type == "random_forest", train_params.model_type
    hyperparameters = train_params.model_hyperparameters().model_dump()
    # n_jobs=1: the baseline stays on one core.
    baseline = build_model(RandomForestClassifier(**hyperparameters, random_state=seed, n_jobs=1))

    mlvs_runs, naive_runs, mlvs_auc, naive_auc = [], [], 0.0, 0.0
    for _ in range(REPEATS):
        seconds, predictions = timed(lambda: cross_validate_model(clone(model), X, y, folds, seed))
        mlvs_runs.append(seconds)
        mlvs_auc = predictions.summary(y, 0.5)["cv_roc_auc_mean"]
        seconds, naive_auc = timed(lambda: sequential_cv_auc(baseline, X, y, folds, seed))
        naive_runs.append(seconds)

    mlvs_s, naive_s = median(mlvs_runs), median(naive_runs)
    speedup = round(naive_s / mlvs_s, 3)
    auc_difference = round(abs(mlvs_auc - naive_auc), 6)
    met_time, met_speedup = mlvs_s <= TARGET_S, speedup >= TARGET_SPEEDUP
    met_auc = auc_difference <= AUC_TOLERANCE
    result = {
        "mlvs_cv_s": mlvs_s,
        "naive_cv_s": naive_s,
        "runs_s": {
            "mlvs": [round(v, 3) for v in mlvs_runs],
            "naive": [round(v, 3) for v in naive_runs],
        },
        "speedup": speedup,
        "target_speedup": TARGET_SPEEDUP,
        "mlvs_cv_roc_auc": round(mlvs_auc, 6),
        "naive_cv_roc_auc": round(naive_auc, 6),
        "roc_auc_difference": auc_difference,
        "roc_auc_tolerance": AUC_TOLERANCE,
        "met_time": met_time,
        "met_speedup": met_speedup,
        "met_roc_auc": met_auc,
        "rows": len(X),
        "folds": folds,
        "model_type": train_params.model_type,
        "hyperparameters": hyperparameters,
        "mlvs_estimator": type(classifier).__name__,
        "baseline_estimator": "sklearn RandomForestClassifier, n_jobs=1",
    }
    record(
        "cross_validation_4000_rows",
        result,
        value=mlvs_s,
        unit="s",
        target=TARGET_S,
        target_text=f"{folds}-fold CV on 4,000 rows <= {TARGET_S} s and >= {TARGET_SPEEDUP}x "
        f"faster than folds in sequence on one core, ROC-AUC within {AUC_TOLERANCE}",
        met=met_time and met_speedup and met_auc,
        baseline=naive_s,
        ratio=round(mlvs_s / naive_s, 3),
    )
    table(
        f"cross_validation_4000_rows ({folds} folds, median of {REPEATS}, in process)",
        ["method", "seconds", "ROC-AUC", "speedup"],
        [
            ["scikit-learn forest, folds in sequence, one core", naive_s, round(naive_auc, 4), 1.0],
            ["mlvs cross_validate_model", mlvs_s, round(mlvs_auc, 4), speedup],
            [
                f"target: <= {TARGET_S} s, >= {TARGET_SPEEDUP}x, AUC +-{AUC_TOLERANCE}",
                str(met_time),
                str(met_auc),
                str(met_speedup),
            ],
        ],
    )
    assert met_time and met_speedup and met_auc, result
