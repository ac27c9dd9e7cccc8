"""What the train notebook calls: load the split, train and evaluate, save and register the model."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlvs._io import atomic_write_text, sha256_file
from mlvs.backends.mlflow import tracking
from mlvs.backends.mlflow.model_files import ARTIFACT_DIR
from mlvs.ml import data as datamod
from mlvs.ml.features import build_model, feature_importances
from mlvs.ml.modeling import (
    METRICS,
    build_classifier,
    business_value,
    cross_validate_model,
    holdout_metrics,
)
from mlvs.ml.modelio import save_model
from mlvs.paths import ProjectPaths, project
from mlvs.testing.faults import fault_point

if TYPE_CHECKING:
    from mlvs.backends.mlflow.tracking import NotebookRun

# Rows of the test set given to MLflow as the model's input example (its signature is inferred
# from them); the golden sample kept beside the model file is `golden_sample_size` rows.
INPUT_EXAMPLE_ROWS = 5


def data_hash(paths: ProjectPaths) -> str:
    """One SHA-256 over the prepared train and test files: the data a model was trained on."""
    digest = hashlib.sha256()
    for path in (paths.train_data, paths.test_data):
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Split:
    """The prepared train and test sets, and their `data_hash`."""

    train: pd.DataFrame
    test: pd.DataFrame
    data_sha256: str


def load_split(paths: ProjectPaths) -> Split:
    """The prepared train and test sets, schema-checked, with the SHA-256 of the data they are."""
    train = datamod.read_customers(paths.train_data)
    test = datamod.read_customers(paths.test_data)
    datamod.check_schema(train)
    datamod.check_schema(test)
    return Split(train, test, data_hash(paths))


@dataclass
class TrainedModel:
    """A fitted model with everything measured about it."""

    model: Any
    cv: dict[str, float]
    test: dict[str, float]
    business: dict[str, float]
    test_probability: Any

    def metrics(self) -> dict[str, float]:
        """Every metric in one flat mapping: cross-validated, held out, and business value."""
        return {**self.cv, **self.test, **self.business}

    def metrics_table(self) -> pd.DataFrame:
        """Each model metric's cross-validated mean and spread, and its score on the test set."""

        return pd.DataFrame(
            {
                "cv mean": {m: self.cv[f"cv_{m}_mean"] for m in METRICS},
                "cv std": {m: self.cv[f"cv_{m}_std"] for m in METRICS},
                "test": {m: self.test[f"test_{m}"] for m in METRICS},
            }
        ).round(4)

    def feature_importances(self) -> pd.Series:
        """The fitted model's importance of each engineered feature, largest first."""

        return feature_importances(self.model)


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


def save_trained(
    paths: ProjectPaths, trained: TrainedModel, test: pd.DataFrame, params: Any
) -> dict[str, Any]:
    """Save model, card, golden predictions and `reports/metrics.json`; return the card."""

    metrics = trained.metrics()
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


def register_model(
    run: NotebookRun,
    trained: TrainedModel,
    card: dict[str, Any],
    test: pd.DataFrame,
    params: Any,
    paths: ProjectPaths | None = None,
) -> dict[str, Any]:
    """Log the training to `run`, register the model, and promote it if it beats the champion.

    The run gets the parameters (with the chosen model's hyperparameters), every metric
    and the data and model hashes of `card`, and keeps the model directory `save_trained`
    wrote (model file, card, golden predictions) under `models/`, so that any registered
    version can be loaded and verified from the registry alone (`mlvs serve`); the model
    is logged to it with mlvs's trusted types and registered as
    `params.registry.model_name`. `champion` moves to the new version if it beats the
    champion by the promotion margin, otherwise the version becomes the `challenger`.
    Returns that decision.
    """

    run.log(
        {**params.model_dump(), "hyperparameters": params.model_hyperparameters().model_dump()},
        trained.metrics(),
        tags={"data_sha256": card["data_sha256"], "model_sha256": card["model_sha256"]},
    )
    saved = paths or project()
    for path in (saved.model_file, saved.model_card, saved.golden):
        run.log_file(path, ARTIFACT_DIR)
    example = golden_sample(test, INPUT_EXAMPLE_ROWS, params.seed)
    info = tracking.log_and_register_model(trained.model, example, params.registry)
    return tracking.promote(
        params.registry.model_name,
        str(info.registered_model_version),
        params.registry.promotion_metric,
        params.registry.promotion_margin,
        trained.test,
    )
