"""Cross-validation and the final fit run side by side on the usable cores, with the results of one core."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO, TINY_PREPARE

import mlvs.ml.modeling as modeling
from mlvs.ml.data import features_and_target, generate_customers, split_customers
from mlvs.ml.features import build_model
from mlvs.ml.modeling import MODEL_TYPES, build_classifier, cross_validate_models
from mlvs.ml.params import load_stage
from mlvs.stages.train import train_and_evaluate

ROWS = TINY_PREPARE["n_rows"] * 2


@pytest.fixture(scope="module")
def split() -> tuple[Any, Any]:
    prepare = load_stage("prepare", Path(REPO))
    customers = generate_customers(
        ROWS, prepare.churn_rate, prepare.signal_strength, prepare.label_noise, prepare.seed
    )
    return split_customers(customers, prepare.test_size, prepare.seed)


def small_models(seed: int) -> dict[str, Any]:
    """Every model type, small enough to fit in a fraction of a second."""
    train = load_stage("train", Path(REPO))
    hyper = {
        "random_forest": {"n_estimators": 12, "max_depth": 4, "min_samples_leaf": 5},
        "gradient_boosting": {"n_estimators": 10, "learning_rate": 0.1, "max_depth": 2},
        "logistic_regression": {"C": 1.0, "max_iter": 200},
    }
    return {
        name: build_model(
            build_classifier(
                name, MODEL_TYPES[name].hyperparameters(**hyper[name]), train.seed + seed
            )
        )
        for name in MODEL_TYPES
    }


def on_cores(monkeypatch: pytest.MonkeyPatch, cores: int) -> None:
    """Pretend this process may run on `cores` cores."""
    monkeypatch.setattr(modeling, "usable_cores", lambda: cores)


def test_every_model_types_folds_fitted_side_by_side_equal_those_fitted_one_by_one(
    split: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    X, y = features_and_target(split[0])
    on_cores(monkeypatch, 1)
    alone = cross_validate_models(small_models(0), X, y, 3, 7)
    on_cores(monkeypatch, 2)
    side_by_side = cross_validate_models(small_models(0), X, y, 3, 7)
    assert set(side_by_side) == set(MODEL_TYPES) == set(alone)
    for name in MODEL_TYPES:
        assert np.array_equal(side_by_side[name].fold, alone[name].fold)
        # Bit for bit: the same fits, in another order.
        assert side_by_side[name].probability.tobytes() == alone[name].probability.tobytes(), name


def test_the_folds_run_on_a_pool_of_threads_only_when_there_is_more_than_one_core(
    split: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    X, y = features_and_target(split[0])
    threads: list[str] = []
    pipeline = type(small_models(0)["logistic_regression"])
    fit = pipeline.fit

    def recording_fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(pipeline, "fit", recording_fit)
    on_cores(monkeypatch, 2)
    cross_validate_models({"lr": small_models(0)["logistic_regression"]}, X, y, 3, 7)
    assert len(threads) == 3 and all(name.startswith("mlvs-fit") for name in threads), threads
    threads.clear()
    on_cores(monkeypatch, 1)
    cross_validate_models({"lr": small_models(0)["logistic_regression"]}, X, y, 3, 7)
    assert threads == [threading.current_thread().name] * 3, threads


def trained_on_one_core_and_two(
    split: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch, compare: bool
) -> tuple[Any, Any]:
    """The default training, 3 folds, on one core, then on two."""
    train, test = split
    params = load_stage("train", Path(REPO)).model_copy(
        update={"cv_folds": 3, "compare_model_types": compare}
    )
    trained = []
    for cores in (1, 2):
        on_cores(monkeypatch, cores)
        trained.append(train_and_evaluate(train, test, params))
    return trained[0], trained[1]


def test_training_on_two_cores_gives_the_model_and_figures_of_one(
    split: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    alone, side_by_side = trained_on_one_core_and_two(split, monkeypatch, compare=False)
    assert side_by_side.cv == alone.cv
    assert side_by_side.test == alone.test
    assert side_by_side.decision_threshold == alone.decision_threshold
    assert side_by_side.test_probability.tobytes() == alone.test_probability.tobytes()
    assert side_by_side.cross_validation.probability.tobytes() == (
        alone.cross_validation.probability.tobytes()
    )


def test_the_model_comparison_on_two_cores_is_the_table_of_one(
    split: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    tables = [
        trained.compare_model_types().table
        for trained in trained_on_one_core_and_two(split, monkeypatch, compare=True)
    ]
    assert list(tables[0].index) == list(tables[1].index)
    assert tables[0].equals(tables[1]), (tables[0], tables[1])
    assert len(tables[0]) == len(MODEL_TYPES)
