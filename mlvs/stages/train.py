"""What the train notebook calls: load the split, train and evaluate, save and register the model."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlvs._io import atomic_write_text, hash_file, sha256_file
from mlvs.backends.dvc.outputs import stage_input_hashes
from mlvs.backends.mlflow import tracking
from mlvs.backends.mlflow.history import MoveReason
from mlvs.backends.mlflow.model_files import ARTIFACT_DIR
from mlvs.backends.mlflow.registry import move_alias, read_registry
from mlvs.backends.mlflow.tracking import CHALLENGER, CHAMPION
from mlvs.errors import AliasRaceError, ExternalToolError, MlvsError
from mlvs.logs import get_logger
from mlvs.ml import data as datamod
from mlvs.ml import evaluation
from mlvs.ml.decision import (
    ContactValues,
    campaign,
    choose_threshold,
    contact_values,
    profit_curve,
)
from mlvs.ml.features import build_model, feature_importances
from mlvs.ml.gate import (
    GateDecision,
    Margins,
    Scored,
    campaign_customer_values,
    compare,
    first_champion,
    rows_sha256,
)
from mlvs.ml.modeling import (
    METRICS,
    MODEL_TYPES,
    CrossValidation,
    build_classifier,
    cross_validate_model,
    cross_validate_models,
    fitting_pool,
    holdout_metrics,
)
from mlvs.ml.modelio import save_model
from mlvs.paths import ProjectPaths, project
from mlvs.stages.versions import MODEL_MD5_TAG, MODEL_SHA256_TAG, load_version_model
from mlvs.testing.faults import fault_point

if TYPE_CHECKING:
    from mlvs.backends.mlflow.tracking import NotebookRun

# Rows of the test set given to MLflow as the model's input example (its signature is inferred
# from them); the golden sample kept beside the model file is `golden_sample_size` rows.
INPUT_EXAMPLE_ROWS = 5
# How many times the gate decides again when another clone moves an alias between its read and its move.
PROMOTION_ATTEMPTS = 5

log = get_logger("train")


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

    @property
    def test_labels(self) -> pd.Series:
        """Whether each customer of the test set churned (the label column)."""
        return self.test[datamod.TARGET]


def load_split(paths: ProjectPaths) -> Split:
    """The prepared train and test sets, schema-checked, with the SHA-256 of the data they are."""
    train = datamod.read_customers(paths.train_data)
    test = datamod.read_customers(paths.test_data)
    datamod.check_schema(train)
    datamod.check_schema(test)
    return Split(train, test, data_hash(paths))


@dataclass(frozen=True)
class ModelComparison:
    """Every registered model type on the same folds, and what the table says of the default."""

    table: pd.DataFrame
    verdict: str


@dataclass
class TrainedModel:
    """A fitted model with everything measured about it, out of sample.

    The methods compute the views of `02_train` on demand (each seeded), so that a
    notebook cell shows one of them and its cost is that cell's.
    """

    model: Any
    cv: dict[str, float]
    test: dict[str, float]
    business: dict[str, float]
    test_probability: Any
    decision_threshold: float
    cross_validation: CrossValidation
    majority: dict[str, float]
    train: pd.DataFrame
    test_frame: pd.DataFrame
    params: Any
    test_sha256: str = (
        ""  # of the test rows `test_probability` was computed on (`gate.rows_sha256`)
    )

    def true_logit_auc(self, signal_strength: float) -> float:
        """The test set's ROC-AUC ceiling: the generator's own churn probability on its labels.

        `signal_strength` is the prepare stage's; the model's test AUC is read against it.
        """
        return datamod.true_logit_auc(self.test_frame, signal_strength)

    def metrics(self) -> dict[str, float]:
        """Every metric in one flat mapping: cross-validated, held out, and business value."""
        baseline = {"test_majority_accuracy": self.majority["test_accuracy"]}
        return {**self.cv, **self.test, **baseline, **self.business}

    def metrics_table(self) -> pd.DataFrame:
        """Each metric's cross-validated mean and spread (ddof=1), on the test set, and the
        same for predicting the training set's majority class for everyone."""

        return pd.DataFrame(
            {
                "cv mean": {m: self.cv[f"cv_{m}_mean"] for m in METRICS},
                "cv std": {m: self.cv[f"cv_{m}_std"] for m in METRICS},
                "test": {m: self.test[f"test_{m}"] for m in METRICS},
                "majority class, test": {m: self.majority[f"test_{m}"] for m in METRICS},
            }
        ).round(4)

    def feature_importances(self) -> pd.Series:
        """The fitted model's impurity importance of each engineered feature, largest first."""

        return feature_importances(self.model)

    def _values(self, frame: pd.DataFrame) -> ContactValues:
        return contact_values(self.params.business, frame["monthly_charges"])

    def _y_test(self) -> Any:
        return self.test_frame[datamod.TARGET].to_numpy()

    def value_table(self) -> pd.DataFrame:
        """Test-set net value of the campaign at the chosen threshold, at 0.5 and the baselines."""
        b, values = self.business, self._values(self.test_frame)
        y, p = self._y_test(), self.test_probability
        at_half = campaign(y, p, 0.5, values, self.params.business.budget_share)
        share = self.params.business.budget_share
        rows = {
            f"threshold {self.decision_threshold:.3f} (chosen)": (b["contacted"], b["net_value"]),
            "threshold 0.5": (at_half["contacted"], at_half["net_value"]),
            "contact everyone": (float(len(y)), b["net_value_contact_everyone"]),
            "contact nobody": (0.0, b["net_value_contact_nobody"]),
            f"fixed budget: top {share:.0%}": (b["budget_contacted"], b["budget_net_value"]),
        }
        table = pd.DataFrame(rows, index=["contacted", "net value"]).T
        # ROI only where the spend is fixed: elsewhere it would reward contacting fewer.
        table["ROI"] = [""] * 4 + [f"{b['budget_roi']:.3f}"]
        table["contacted"] = table["contacted"].astype(int)
        return table.round({"net value": 0})

    def profit_curves(self) -> dict[str, pd.DataFrame]:
        """Net value against share contacted, out of fold (where the threshold was chosen) and on test."""
        y_train = self.train[datamod.TARGET].to_numpy()
        return {
            "out-of-fold, training set": profit_curve(
                y_train, self.cross_validation.probability, self._values(self.train)
            ),
            "test set": profit_curve(
                self._y_test(), self.test_probability, self._values(self.test_frame)
            ),
        }

    def intervals(self) -> pd.DataFrame:
        """95% bootstrap intervals of test ROC-AUC and net value at the chosen threshold."""
        return evaluation.bootstrap_intervals(
            self._y_test(),
            self.test_probability,
            self.decision_threshold,
            self._values(self.test_frame),
            self.params.seed,
        )

    def reliability(self) -> dict[str, Any]:
        """Observed churn against predicted on the test set, with Brier scores."""
        base_rate = float(self.train[datamod.TARGET].mean())
        return evaluation.reliability(self._y_test(), self.test_probability, base_rate)

    def gain_and_lift(self) -> pd.DataFrame:
        """Test customers ranked by churn probability in deciles: lift and cumulative gain."""
        return evaluation.gain_and_lift(self._y_test(), self.test_probability)

    def permutation_importance(self) -> pd.DataFrame:
        """Drop in test ROC-AUC when each raw column is shuffled."""
        X_test, y_test = datamod.features_and_target(self.test_frame)
        return evaluation.permutation_importance_by_column(
            self.model, X_test, y_test, self.params.seed
        )

    def segments(self) -> pd.DataFrame:
        """Test churn rate, predictions, contacts and net value by contract and tenure band."""
        return evaluation.segments(
            self.test_frame,
            self.test_probability,
            self.decision_threshold,
            self._values(self.test_frame),
        )

    def compare_model_types(self) -> ModelComparison:
        """Every registered model type on the same folds as the configured one (see `compare_models`).

        Skipped, with an empty table that says so, when `compare_model_types` is false.
        """
        if not self.params.compare_model_types:
            return ModelComparison(
                pd.DataFrame(), "Skipped: compare_model_types is false in the train params."
            )
        X, y = datamod.features_and_target(self.train)
        others = {
            name: build_model(
                build_classifier(name, self.params.hyperparameters_of(name), self.params.seed)
            )
            for name in MODEL_TYPES
            if name != self.params.model_type
        }
        # One pool for every other type's folds: a slow type's fits fill the cores a fast one leaves.
        fitted = cross_validate_models(others, X, y, self.params.cv_folds, self.params.seed)
        fitted[self.params.model_type] = self.cross_validation
        predictions = {name: fitted[name] for name in MODEL_TYPES}  # in the registry's order
        table = evaluation.compare_models(
            y.to_numpy(),
            predictions,
            self.params.model_type,
            self._values(self.train),
            self.params.seed,
        )
        return ModelComparison(table, evaluation.comparison_verdict(table, self.params.model_type))


def train_and_evaluate(train: pd.DataFrame, test: pd.DataFrame, params: Any) -> TrainedModel:
    """Cross-validate the configured model on `train`, choose the threshold, fit, score on `test`.

    With `decision_threshold: value` the threshold is the one of highest net value on the
    out-of-fold predictions of the cross-validation: the test set plays no part in it.
    """
    X, y = datamod.features_and_target(train)
    X_test, y_test = datamod.features_and_target(test)
    hyperparameters = params.model_hyperparameters()
    model = build_model(build_classifier(params.model_type, hyperparameters, params.seed))
    fault_point("train:train")
    with fitting_pool(params.cv_folds + 1) as pool:
        # The final fit needs nothing from the cross-validation: it runs beside the folds, on
        # an estimator of its own (the folds clone theirs from a second, never fitted).
        final = pool.submit(model.fit, X, y) if pool is not None else None
        unfitted = build_model(build_classifier(params.model_type, hyperparameters, params.seed))
        cross_validation = cross_validate_model(unfitted, X, y, params.cv_folds, params.seed, pool)
        if final is None:
            model.fit(X, y)
        else:
            final.result()
    if params.decision_threshold == "value":
        threshold = choose_threshold(
            y.to_numpy(),
            cross_validation.probability,
            contact_values(params.business, train["monthly_charges"]),
        )
    else:
        threshold = float(params.decision_threshold)
    fault_point("train:evaluate")
    proba = model.predict_proba(X_test)[:, 1]
    test_values = contact_values(params.business, test["monthly_charges"])
    majority = float(y.mean() >= 0.5)
    return TrainedModel(
        model=model,
        cv=cross_validation.summary(y.to_numpy(), threshold),
        test=holdout_metrics(y_test, proba, threshold),
        business=campaign(y_test, proba, threshold, test_values, params.business.budget_share),
        test_probability=proba,
        decision_threshold=threshold,
        cross_validation=cross_validation,
        majority=holdout_metrics(y_test, [majority] * len(y_test), 0.5),
        train=train,
        test_frame=test,
        params=params,
        test_sha256=rows_sha256(X_test, y_test),
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
        # Every later consumer (verify, the scoring service, monitoring) decides with this one.
        "decision_threshold": trained.decision_threshold,
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
    """Log the training to `run`, register the model, and promote it if it passes the gate.

    The run gets the parameters (with the chosen model's hyperparameters), every metric
    and the data and model hashes of `card`; the model is logged to it with mlvs's
    trusted types and registered as `params.registry.model_name`, and the model
    directory `save_trained` wrote (model file, card, golden predictions) is kept with the run,
    so that any registered version can be loaded and verified from the registry alone. The new version and
    the champion are compared by the promotion gate (`mlvs.ml.gate`) on the test set:
    `champion` moves to the new version only if it wins beyond the noise, otherwise the
    version becomes the `challenger`. Either move is recorded in the alias history.
    Returns that decision with the gate's figures.
    """
    paths = paths or project()
    model_md5 = hash_file(paths.model_file).md5 if paths.model_file.is_file() else ""
    run.log(
        {
            **params.model_dump(),
            "hyperparameters": params.model_hyperparameters().model_dump(),
            # the threshold the model decides at, as chosen; the rule that chose it beside it
            "decision_threshold": trained.decision_threshold,
            "decision_threshold_rule": params.decision_threshold,
        },
        trained.metrics(),
        tags={
            "data_sha256": card["data_sha256"],
            MODEL_SHA256_TAG: card["model_sha256"],
            MODEL_MD5_TAG: model_md5,
        },
    )
    for path in (paths.model_file, paths.model_card, paths.golden):
        run.log_file(path, ARTIFACT_DIR)
    # Lineage: the data this version was trained and tested on, by the hash DVC keeps it under.
    processed = stage_input_hashes(paths, "train").get("data/processed", card["data_sha256"])
    run.log_dataset(trained.train, "train", paths.train_data, processed, "training", datamod.TARGET)
    run.log_dataset(test, "test", paths.test_data, processed, "testing", datamod.TARGET)
    example = golden_sample(test, INPUT_EXAMPLE_ROWS, params.seed)
    info = tracking.log_and_register_model(trained.model, example, params.registry)
    version = str(info.registered_model_version)
    name = params.registry.model_name
    for attempt in range(1, PROMOTION_ATTEMPTS + 1):
        decision, previous, seen = _gate_new_version(paths, trained, test, params, version)
        alias = CHAMPION if decision.promote else CHALLENGER
        fault_point("train:gated")
        try:
            move_alias(paths, name, alias, version, MoveReason("pipeline", decision.reason), seen)
            break
        except AliasRaceError as error:
            # Another clone moved an alias after the gate read them: its decision is void, take it again.
            if attempt == PROMOTION_ATTEMPTS:
                raise AliasRaceError(
                    f"version {version} was neither promoted nor made the challenger: {error}, "
                    f"{PROMOTION_ATTEMPTS} times; run `mlvs deploy {version}` once the registry is quiet"
                ) from None
            log.warning("%s; the gate decides again for version %s", error, version)
    figures = decision.figures()
    if figures:
        run.log({}, figures)
    return {
        "version": version,
        "alias": alias,
        "previous_champion": previous,
        "reason": decision.reason,
        "gate": decision.method,
        **{k: round(v, 6) for k, v in figures.items()},
    }


def _gate_new_version(
    paths: ProjectPaths, trained: TrainedModel, test: pd.DataFrame, params: Any, version: str
) -> tuple[GateDecision, str | None, dict[str, str]]:
    """The gate's decision on the new version against the champion; the champion's version; the aliases it read."""
    name = params.registry.model_name
    state = read_registry(paths, name, None)
    if state.error:
        raise ExternalToolError(
            f"the MLflow registry cannot be read ({state.error}), so version {version} was not promoted"
        )
    seen = state.alias_versions()
    champion = seen.get(CHAMPION)
    label = f"version {version}"
    if champion is None:
        return first_champion(label), None, seen
    X_test, y_test = datamod.features_and_target(test)
    try:
        loaded = load_version_model(paths, name, champion, trained.decision_threshold)
    except MlvsError as error:
        # No comparison, no promotion: the champion stays until `mlvs deploy` can compare the two.
        return (
            GateDecision(
                False, label, f"version {champion}", f"the champion could not be scored ({error})"
            ),
            champion,
            seen,
        )
    data_sha256 = rows_sha256(X_test, y_test)
    decision = compare(
        y_test,
        Scored(label, trained.test_probability, trained.test_sha256, trained.decision_threshold),
        Scored(
            f"version {champion}",
            loaded.model.predict_proba(X_test)[:, 1],
            data_sha256,
            loaded.threshold,
        ),
        campaign_customer_values(y_test, contact_values(params.business, test["monthly_charges"])),
        Margins.from_params(params.registry),
        params.seed,
    )
    return decision, champion, seen
