"""What the train notebook calls: load the split, train and evaluate, save the model."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mlvs._io import atomic_write_text, sha256_file
from mlvs.ml import data as datamod
from mlvs.ml.features import build_model
from mlvs.ml.modeling import build_classifier, business_value, cross_validate_model, holdout_metrics
from mlvs.ml.modelio import save_model
from mlvs.paths import ProjectPaths
from mlvs.testing.faults import fault_point


def data_hash(paths: ProjectPaths) -> str:
    """One SHA-256 over the prepared train and test files: the data a model was trained on."""
    digest = hashlib.sha256()
    for path in (paths.train_data, paths.test_data):
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def load_split(paths: ProjectPaths) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The prepared train and test sets, schema-checked."""
    train = datamod.read_customers(paths.train_data)
    test = datamod.read_customers(paths.test_data)
    datamod.check_schema(train)
    datamod.check_schema(test)
    return train, test


@dataclass
class TrainedModel:
    """A fitted model with everything measured about it."""

    model: Any
    cv: dict[str, float]
    test: dict[str, float]
    business: dict[str, float]
    test_probability: Any


def train_and_evaluate(train: pd.DataFrame, test: pd.DataFrame, params: Any) -> TrainedModel:
    """Cross-validate the configured model on `train`, fit it, and score it on `test`."""
    X, y = datamod.features_and_target(train)
    X_test, y_test = datamod.features_and_target(test)
    classifier = build_classifier(params.model_type, params.model_hyperparameters(), params.seed)
    model = build_model(classifier)
    fault_point("train:train")
    cv = cross_validate_model(model, X, y, params.cv_folds, params.seed)
    model.fit(X, y)
    fault_point("train:evaluate")
    proba = model.predict_proba(X_test)[:, 1]
    return TrainedModel(
        model=model,
        cv=cv,
        test=holdout_metrics(y_test, proba, params.decision_threshold),
        business=business_value(y_test, proba, params.decision_threshold, params.business),
        test_probability=proba,
    )


def golden_sample(test: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """A fixed sample of test rows (model inputs only) whose predictions are kept as a fingerprint."""
    X_test, _ = datamod.features_and_target(test)
    return X_test.sample(n=min(size, len(X_test)), random_state=seed).sort_index()


def all_metrics(trained: TrainedModel) -> dict[str, float]:
    """Every metric of a trained model in one flat mapping."""
    return {**trained.cv, **trained.test, **trained.business}


def save_trained(
    paths: ProjectPaths, trained: TrainedModel, test: pd.DataFrame, params: Any
) -> dict[str, Any]:
    """Save model, card, golden predictions and `reports/metrics.json`; return the card."""
    metrics = all_metrics(trained)
    card = {
        "model_type": params.model_type,
        "params": params.model_dump(),
        "data_sha256": data_hash(paths),
        "metrics": {k: round(v, 6) for k, v in metrics.items()},
    }
    saved = save_model(
        trained.model, paths, card, golden_sample(test, params.golden_sample_size, params.seed)
    )
    atomic_write_text(paths.metrics, json.dumps(card["metrics"], indent=2, sort_keys=True) + "\n")
    return {**card, "model_sha256": saved.sha256, "model_bytes": saved.size}
