"""Saved models: skops files verified by hash and trusted types, their card and golden predictions."""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlvs.errors import IntegrityError
from mlvs.ml.data import features_and_target, generate_customers
from mlvs.ml.features import build_model
from mlvs.ml.modeling import MODEL_TYPES, build_classifier
from mlvs.ml.modelio import (
    golden_mismatches,
    load_model_bytes,
    load_verified_model,
    model_bytes,
    read_card,
)
from mlvs.ml.params import TrainParams, load_stage
from mlvs.paths import ProjectPaths
from mlvs.stages.prepare import PreparedData, write_prepared
from mlvs.stages.train import TrainedModel, data_hash, save_trained, train_and_evaluate

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "cv_folds": 3,
    "golden_sample_size": 20,
    "hyperparameters": {"random_forest": {"n_estimators": 10}},
}


class Trained:
    """One tiny model, trained once for the module, and the workspace it was saved in."""

    def __init__(self, root: Path) -> None:
        self.paths = ProjectPaths(root)
        self.params: TrainParams = load_stage("train", REPO, TINY)
        customers = generate_customers(
            n_rows=300, churn_rate=0.3, signal_strength=1.0, label_noise=0.0, seed=7
        )
        self.prepared: PreparedData = write_prepared(self.paths, customers, test_size=0.2, seed=7)
        self.model: TrainedModel = train_and_evaluate(
            self.prepared.train, self.prepared.test, self.params
        )
        self.card: dict[str, Any] = save_trained(
            self.paths, self.model, self.prepared.test, self.params
        )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return Trained(tmp_path_factory.mktemp("trained"))


@pytest.fixture
def paths(trained: Trained, tmp_path: Path) -> ProjectPaths:
    """A private copy of the trained workspace, free to damage."""
    shutil.copytree(trained.paths.root, tmp_path / "ws")
    return ProjectPaths(tmp_path / "ws")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_in_card(paths: ProjectPaths) -> None:
    """Make the card vouch for whatever model.skops now holds, as an attacker with write access could."""
    card = json.loads(paths.model_card.read_text())
    card["model_sha256"] = sha256(paths.model_file)
    paths.model_card.write_text(json.dumps(card))


# --- the happy path -----------------------------------------------------------------


def test_verified_model_predicts_exactly_as_the_trained_one(
    trained: Trained, paths: ProjectPaths
) -> None:
    X_test, _ = features_and_target(trained.prepared.test)
    loaded = load_verified_model(paths)
    assert np.array_equal(loaded.predict_proba(X_test), trained.model.model.predict_proba(X_test))


def test_verified_model_reproduces_its_golden_predictions(paths: ProjectPaths) -> None:
    assert golden_mismatches(load_verified_model(paths), paths) == []


def test_saving_the_same_model_twice_gives_identical_files(
    trained: Trained, paths: ProjectPaths
) -> None:
    before = {p: p.read_bytes() for p in (paths.model_file, paths.model_card, paths.golden)}
    save_trained(paths, trained.model, trained.prepared.test, trained.params)
    assert {p: p.read_bytes() for p in before} == before


def test_retraining_with_the_same_parameters_gives_identical_model_bytes(
    trained: Trained, paths: ProjectPaths
) -> None:
    original = paths.model_file.read_bytes()
    retrained = train_and_evaluate(trained.prepared.train, trained.prepared.test, trained.params)
    save_trained(paths, retrained, trained.prepared.test, trained.params)
    assert paths.model_file.read_bytes() == original


SMALL = {
    "random_forest": {"n_estimators": 8, "max_depth": 4},
    "gradient_boosting": {"n_estimators": 8, "max_depth": 2},
    "logistic_regression": {},
}


@pytest.mark.parametrize("model_type", sorted(MODEL_TYPES))
def test_every_model_type_round_trips_through_its_file_with_the_same_predictions(
    trained: Trained, model_type: str
) -> None:
    X, y = features_and_target(trained.prepared.train)
    hyper = MODEL_TYPES[model_type].hyperparameters(**SMALL[model_type])
    model = build_model(build_classifier(model_type, hyper, 3)).fit(X, y)
    payload = model_bytes(model)
    assert model_bytes(model) == payload, "the same model must give the same bytes"
    loaded = load_model_bytes(payload, hashlib.sha256(payload).hexdigest(), "models/model.skops")
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_a_scikit_learn_forest_saved_before_xgboost_computed_the_forest_still_loads(
    trained: Trained,
) -> None:
    # deferred: scikit-learn's own forest is no model type now, only what older model files hold
    from sklearn.ensemble import RandomForestClassifier

    X, y = features_and_target(trained.prepared.train)
    forest = build_model(RandomForestClassifier(n_estimators=5, random_state=0, n_jobs=1)).fit(X, y)
    payload = model_bytes(forest)
    loaded = load_model_bytes(payload, hashlib.sha256(payload).hexdigest(), "models/model.skops")
    assert type(loaded.named_steps["classifier"]) is RandomForestClassifier
    assert np.array_equal(loaded.predict_proba(X), forest.predict_proba(X))


def test_an_xgboost_forest_archive_names_its_booster_in_order_not_by_a_random_uuid(
    trained: Trained,
) -> None:
    # skops names a byte string after uuid4(); the archive must not change from save to save.
    names = zipfile.ZipFile(io.BytesIO(model_bytes(trained.model.model))).namelist()
    bins = [name for name in names if name.endswith(".bin")]
    assert bins and all(re.fullmatch(r"\d+\.bin", name) for name in bins), names
    assert model_bytes(trained.model.model) == model_bytes(trained.model.model)


def test_model_card_records_hashes_metrics_and_parameters(
    trained: Trained, paths: ProjectPaths
) -> None:
    card = json.loads(paths.model_card.read_text())
    assert card["model_sha256"] == sha256(paths.model_file)
    assert card["data_sha256"] == data_hash(paths)
    assert card["params"] == json.loads(json.dumps(trained.params.model_dump()))
    assert {
        "cv_roc_auc_mean",
        "cv_roc_auc_std",
        "test_roc_auc",
        "test_f1",
        "net_value",
        "budget_roi",
        "decision_threshold",
    } <= set(card["metrics"])


def test_save_trained_writes_the_metrics_of_the_card(paths: ProjectPaths) -> None:
    card = json.loads(paths.model_card.read_text())
    assert json.loads(paths.metrics.read_text()) == card["metrics"]


# --- damaged or replaced files --------------------------------------------------------


def test_flipped_byte_is_refused_before_loading(paths: ProjectPaths) -> None:
    payload = bytearray(paths.model_file.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    paths.model_file.write_bytes(bytes(payload))
    with pytest.raises(IntegrityError) as caught:
        load_verified_model(paths)
    assert "models/model.skops" in str(caught.value)
    assert "not loaded" in str(caught.value)


def test_truncated_model_is_refused(paths: ProjectPaths) -> None:
    paths.model_file.write_bytes(paths.model_file.read_bytes()[:1000])
    with pytest.raises(IntegrityError, match="not loaded"):
        load_verified_model(paths)


def test_card_with_another_hash_is_refused(paths: ProjectPaths) -> None:
    card = json.loads(paths.model_card.read_text())
    card["model_sha256"] = "0" * 64
    paths.model_card.write_text(json.dumps(card))
    with pytest.raises(IntegrityError, match="not loaded"):
        load_verified_model(paths)


def test_missing_card_is_refused(paths: ProjectPaths) -> None:
    paths.model_card.unlink()
    with pytest.raises(IntegrityError, match=re.escape("model_card.json is missing")):
        load_verified_model(paths)


def test_perturbed_golden_prediction_names_its_row(paths: ProjectPaths) -> None:
    golden = json.loads(paths.golden.read_text())
    golden["churn_probability"][3] = repr(float(golden["churn_probability"][3]) + 1e-9)
    paths.golden.write_text(json.dumps(golden))
    mismatches = golden_mismatches(load_verified_model(paths), paths)
    assert len(mismatches) == 1 and mismatches[0].startswith("golden row 3:")


# --- hostile files ----------------------------------------------------------------------


class _OpensFile:
    """Unpickling this object runs builtins.open(marker, "w")."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.open, (str(self.marker), "w"))


def test_pickle_payload_creates_its_marker_when_unpickled(tmp_path: Path) -> None:
    # The payload of the next test is live: plain pickle does run it.
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(_OpensFile(marker))).close()
    assert marker.exists()


def test_pickle_disguised_as_model_is_refused_without_running_it(
    paths: ProjectPaths, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    paths.model_file.write_bytes(pickle.dumps(_OpensFile(marker)))
    record_in_card(paths)
    with pytest.raises(IntegrityError, match="cannot be loaded"):
        load_verified_model(paths)
    assert not marker.exists()


def test_skops_archive_with_untrusted_types_is_refused(paths: ProjectPaths) -> None:
    import skops.io as sio

    paths.model_file.write_bytes(sio.dumps({"run": os.system}))
    record_in_card(paths)
    with pytest.raises(IntegrityError, match="untrusted types") as caught:
        load_verified_model(paths)
    assert f"'{os.system.__module__}.system'" in str(caught.value) and "not loaded" in str(
        caught.value
    )


@pytest.mark.parametrize(
    ("card", "field"),
    [
        ("[]", "the document"),
        ("{}", "model_sha256"),
        ('{"model_sha256": "1 OR 1", "model_file": "model.skops"}', "model_sha256"),
        ('{"model_sha256": "' + "a" * 64 + '", "model_file": 7}', "model_file"),
        ('{"model_sha256": "' + "a" * 64 + '", "model_file": "../../victim"}', "model_file"),
    ],
)
def test_a_malformed_model_card_is_refused_in_one_line_naming_the_field(
    tmp_path: Path, card: str, field: str
) -> None:
    paths = ProjectPaths(tmp_path)
    paths.models.mkdir()
    paths.model_card.write_text(card)
    with pytest.raises(IntegrityError, match=r"model_card\.json is malformed") as refused:
        read_card(paths)
    assert field in str(refused.value) and "mlvs recover" in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("golden", "field"),
    [
        ("{}", "model_sha256"),
        ("[]", "the document"),
        ('{"model_sha256": "' + "a" * 64 + '", "rows": [{}], "churn_probability": []}', "rows"),
        (
            '{"model_sha256": "' + "a" * 64 + '", "rows": [{}], "churn_probability": ["x"]}',
            "not a number",
        ),
        (
            '{"model_sha256": "' + "a" * 64 + '", "rows": [[1]], "churn_probability": ["1"]}',
            "rows.0",
        ),
        (
            '{"model_sha256": "'
            + "a" * 64
            + '", "rows": [{"x": NaN}], "churn_probability": ["1"]}',
            "rows.0.x",
        ),
    ],
)
def test_a_malformed_golden_file_is_a_finding_not_a_traceback(
    tmp_path: Path, golden: str, field: str
) -> None:
    paths = ProjectPaths(tmp_path)
    paths.models.mkdir()
    paths.golden.write_text(golden)
    (problem,) = golden_mismatches(object(), paths)
    assert problem.startswith("golden predictions unreadable (") and field in problem, problem


def test_golden_rows_the_model_cannot_score_are_a_finding_not_a_traceback(tmp_path: Path) -> None:
    paths = ProjectPaths(tmp_path)
    paths.models.mkdir()
    paths.golden.write_text(
        '{"model_sha256": "' + "a" * 64 + '", "rows": [{"x": 1}], "churn_probability": ["0.5"]}'
    )
    (problem,) = golden_mismatches(object(), paths)  # has no predict_proba: it cannot score
    assert "cannot score" in problem and "AttributeError" in problem, problem
