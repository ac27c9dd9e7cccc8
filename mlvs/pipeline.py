"""The steps of the prepare and train stages, as the notebooks call them.

Each step takes values and returns values; only `write_prepared` and
`save_trained` touch files, and only through `ProjectPaths`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mlvs import data as datamod
from mlvs.hashing import atomic_write_text, sha256_file
from mlvs.paths import ProjectPaths


class InjectedFault(RuntimeError):
    """Raised at a fault point when a drill asked for a failure there (MLVS_FAULT)."""


def fault_point(name: str) -> None:
    """Fail here if a drill injected a fault named `name` (chaos testing of the pipeline)."""
    import os

    if os.environ.get("MLVS_FAULT") == name:
        raise InjectedFault(f"injected fault at '{name}' (incident drill)")


def schema_report(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per declared column: what was found and whether it holds."""
    rows = []
    problems = datamod.validate_schema(frame)
    for column in datamod.SCHEMA:
        present = column.name in frame.columns
        values = frame[column.name] if present else pd.Series(dtype=object)
        issues = [p for p in problems if f"'{column.name}'" in p or (not present and column.name in p)]
        rows.append(
            {
                "column": column.name,
                "kind": column.kind,
                "allowed": (
                    ", ".join(column.allowed)
                    if column.allowed
                    else (f"{column.minimum:g} to {column.maximum:g}" if column.minimum is not None else "unique")
                ),
                "missing": int(values.isna().sum()) if present else len(frame),
                "distinct": int(values.nunique()) if present else 0,
                "status": "ok" if not issues else "; ".join(issues),
            }
        )
    return pd.DataFrame(rows).set_index("column")


@dataclass(frozen=True)
class PreparedData:
    """The outputs of the prepare stage and their hashes."""

    train: pd.DataFrame
    test: pd.DataFrame
    hashes: dict[str, str]


def write_prepared(paths: ProjectPaths, customers: pd.DataFrame, test_size: float, seed: int) -> PreparedData:
    """Write raw data, the stratified split and a summary; return the split and the SHA-256 of each file."""
    datamod.check_schema(customers)
    fault_point("preprocess")
    raw_hash = datamod.write_csv(customers, paths.raw_data)
    fault_point("partial")
    train, test = datamod.split_customers(customers, test_size, seed)
    hashes = {
        "raw": raw_hash,
        "train": datamod.write_csv(train, paths.train_data),
        "test": datamod.write_csv(test, paths.test_data),
    }
    summary = {
        "rows": {"raw": len(customers), "train": len(train), "test": len(test)},
        "churn_rate": {
            "raw": round(float(customers[datamod.TARGET].mean()), 6),
            "train": round(float(train[datamod.TARGET].mean()), 6),
            "test": round(float(test[datamod.TARGET].mean()), 6),
        },
        "sha256": hashes,
    }
    atomic_write_text(paths.processed / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return PreparedData(train, test, hashes)


def data_hash(paths: ProjectPaths) -> str:
    """One SHA-256 over the prepared train and test files: the data a model was trained on."""
    import hashlib

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
    from mlvs.features import build_model
    from mlvs.modeling import build_classifier, business_value, cross_validate_model, holdout_metrics

    X, y = datamod.features_and_target(train)
    X_test, y_test = datamod.features_and_target(test)
    classifier = build_classifier(params.model_type, params.model_hyperparameters(), params.seed)
    model = build_model(classifier)
    fault_point("train")
    cv = cross_validate_model(model, X, y, params.cv_folds, params.seed)
    model.fit(X, y)
    fault_point("evaluate")
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


def save_trained(paths: ProjectPaths, trained: TrainedModel, test: pd.DataFrame, params: Any) -> dict[str, Any]:
    """Save model, card, golden predictions and `reports/metrics.json`; return the card."""
    from mlvs.modelio import save_model

    metrics = all_metrics(trained)
    card = {
        "model_type": params.model_type,
        "params": params.model_dump(),
        "data_sha256": data_hash(paths),
        "metrics": {k: round(v, 6) for k, v in metrics.items()},
    }
    saved = save_model(trained.model, paths, card, golden_sample(test, params.golden_sample_size, params.seed))
    atomic_write_text(paths.metrics, json.dumps(card["metrics"], indent=2, sort_keys=True) + "\n")
    return {**card, "model_sha256": saved.sha256, "model_bytes": saved.size}


def feature_preview(train: pd.DataFrame, rows: int = 5) -> pd.DataFrame:
    """The first rows of the feature matrix the classifier sees, after engineering and scaling."""
    from mlvs.features import build_preprocessor

    X, _ = datamod.features_and_target(train)
    preprocessor = build_preprocessor().fit(X)
    names = list(preprocessor.named_steps["encode"].get_feature_names_out())
    return pd.DataFrame(preprocessor.transform(X.head(rows)), columns=names, index=X.head(rows).index).round(3)
