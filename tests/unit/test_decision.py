"""Decisions by expected value: drivers checked, the threshold chosen out of fold and never on the test set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import mlvs, tree_hashes

from mlvs.errors import ParamsError
from mlvs.ml.data import TARGET, generate_customers, split_customers
from mlvs.ml.decision import choose_threshold, contact_values, cuts, net_value, profit_curve
from mlvs.ml.params import TrainParams, load_stage
from mlvs.ops.verify import check_metrics
from mlvs.paths import ProjectPaths
from mlvs.stages.prepare import write_prepared
from mlvs.stages.train import TrainedModel, save_trained, train_and_evaluate

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "cv_folds": 3,
    "decision_threshold": "value",
    "hyperparameters": {"random_forest": {"n_estimators": 10, "max_depth": 4}},
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A project root holding a copy of the real params/."""
    shutil.copytree(REPO / "params", tmp_path / "params")
    return tmp_path


def edit_business(root: Path, **changes: Any) -> None:
    path = root / "params" / "train.yaml"
    data = yaml.safe_load(path.read_text())
    data["business"].update(changes)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def refusal(root: Path) -> str:
    with pytest.raises(ParamsError) as caught:
        load_stage("train", root)
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    assert "params/train.yaml" in message
    return message


def scored(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, probabilities rounded to create ties, and monthly charges."""
    rng = np.random.default_rng(seed)
    p = np.round(rng.beta(2, 5, n), 2)
    y = (rng.random(n) < p).astype(int)
    return y, p, rng.uniform(20, 120, n)


# --- the drivers and the matrix -------------------------------------------------------


def test_the_default_drivers_give_the_documented_matrix(root: Path) -> None:
    edit_business(root, true_positive=170.0, false_positive=-40.0, false_negative=0.0)
    business = load_stage("train", root).business
    values = contact_values(business, [50.0, 90.0])
    assert values.if_churner.tolist() == [170.0, 170.0]
    assert values.if_not.tolist() == [-40.0, -40.0]


def test_a_matrix_cell_that_disagrees_with_the_drivers_is_refused_in_one_line(root: Path) -> None:
    edit_business(root, true_positive=200.0)
    line = refusal(root)
    assert "true_positive = 200" in line and "170" in line
    assert "remove true_positive or change the drivers" in line


def test_a_contact_cost_other_than_the_offer_cost_is_refused(root: Path) -> None:
    edit_business(root, contact_cost=50.0)
    line = refusal(root)
    assert "contact_cost = 50" in line and "offer_cost = 40" in line


def test_an_offer_that_costs_more_than_it_saves_is_refused(root: Path) -> None:
    edit_business(root, offer_cost=250.0)  # saves 0.35 x 600 = 210 per churner
    line = refusal(root)
    assert "210" in line and "offer_cost = 250" in line and "no campaign pays" in line


def test_a_scaled_customer_value_that_can_never_pay_for_the_offer_is_refused(root: Path) -> None:
    edit_business(root, customer_value=None, customer_value_months=0.5)  # 0.35 x 0.5 x 200 = 35
    line = refusal(root)
    assert "customer_value_months" in line and "no campaign pays" in line


def test_customer_value_can_scale_with_monthly_charges(root: Path) -> None:
    edit_business(root, customer_value=None, customer_value_months=10.0)
    values = contact_values(load_stage("train", root).business, [50.0, 100.0])
    assert values.if_churner.tolist() == [0.35 * 500 - 40, 0.35 * 1000 - 40]


def test_a_threshold_that_is_neither_a_probability_nor_value_is_refused(root: Path) -> None:
    with pytest.raises(ParamsError) as caught:
        load_stage("train", root, {"decision_threshold": "best"})
    assert len(str(caught.value).splitlines()) == 1
    assert "decision_threshold = 'best'" in str(caught.value) and "'value'" in str(caught.value)


def test_mlvs_run_refuses_an_inconsistent_matrix_and_changes_nothing(workspace: Path) -> None:
    edit_business(workspace, false_positive=-10.0)
    before = tree_hashes(workspace)
    result = mlvs(workspace, "run", "02_train")
    assert result.returncode == 2, result.stderr
    assert "business: false_positive = -10 disagrees with the drivers" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert tree_hashes(workspace) == before


# --- the threshold ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scaled", [False, True])
def test_the_chosen_threshold_earns_the_brute_force_maximum(
    root: Path, seed: int, scaled: bool
) -> None:
    if scaled:
        edit_business(root, customer_value=None, customer_value_months=8.0, non_churner_cost=15.0)
    y, p, charges = scored(seed)
    values = contact_values(load_stage("train", root).business, charges)
    chosen = choose_threshold(y, p, values)
    candidates = np.concatenate([np.unique(p), np.linspace(0, 1, 1001)])
    best = max(float(values.realised(y)[p >= t].sum()) for t in candidates)
    assert net_value(y, p, chosen, values) == pytest.approx(best)


def test_every_cut_of_the_profit_curve_earns_what_its_threshold_earns(root: Path) -> None:
    y, p, charges = scored(3)
    values = contact_values(load_stage("train", root).business, charges)
    curve = profit_curve(y, p, values)
    for row in curve.itertuples():
        assert net_value(y, p, row.threshold, values) == pytest.approx(row.net_value)
        assert np.mean(p >= row.threshold) == pytest.approx(row.share_contacted)
    assert curve["net_value"].iloc[0] == 0.0  # contact nobody
    assert curve["net_value"].iloc[-1] == pytest.approx(values.realised(y).sum())  # everyone
    assert len(cuts(y, p, values).thresholds) == len(np.unique(p)) + 1


@pytest.fixture(scope="module")
def trained_twice() -> tuple[TrainedModel, TrainedModel]:
    """One small model trained and tested, then again with every test label flipped."""
    params: TrainParams = load_stage("train", REPO, TINY)
    customers = generate_customers(
        n_rows=600, churn_rate=0.3, signal_strength=1.0, label_noise=0.0, seed=11
    )
    train, test = split_customers(customers, 0.25, 11)
    flipped = test.assign(**{TARGET: 1 - test[TARGET]})
    return train_and_evaluate(train, test, params), train_and_evaluate(train, flipped, params)


def test_changing_the_test_labels_leaves_the_chosen_threshold_unchanged(
    trained_twice: tuple[TrainedModel, TrainedModel],
) -> None:
    original, relabelled = trained_twice
    assert 0.0 < original.decision_threshold < 1.0
    assert relabelled.decision_threshold == original.decision_threshold
    # the test set did change what was measured on it
    assert relabelled.test["test_roc_auc"] == pytest.approx(1 - original.test["test_roc_auc"])


def test_training_chooses_the_brute_force_best_threshold_of_its_out_of_fold_predictions(
    trained_twice: tuple[TrainedModel, TrainedModel],
) -> None:
    trained = trained_twice[0]
    y = trained.train[TARGET].to_numpy()
    p = trained.cross_validation.probability
    values = contact_values(trained.params.business, trained.train["monthly_charges"])
    best = max(net_value(y, p, t, values) for t in np.concatenate([np.unique(p), [1.0]]))
    assert net_value(y, p, trained.decision_threshold, values) == best


# --- the consumers read the card ---------------------------------------------------------


def test_verify_scores_the_model_at_the_threshold_its_card_records(tmp_path: Path) -> None:
    shutil.copytree(REPO / "params", tmp_path / "params")
    paths = ProjectPaths(tmp_path)
    params: TrainParams = load_stage("train", tmp_path, TINY)
    customers = generate_customers(
        n_rows=300, churn_rate=0.3, signal_strength=1.0, label_noise=0.0, seed=5
    )
    prepared = write_prepared(paths, customers, test_size=0.25, seed=5)
    trained = train_and_evaluate(prepared.train, prepared.test, params)
    save_trained(paths, trained, prepared.test, params)
    card = json.loads(paths.model_card.read_text())
    assert card["decision_threshold"] == trained.decision_threshold
    # params now say "value": only the card knows the number the metrics were measured at
    assert check_metrics(paths, trained.model) == []

    card["decision_threshold"] = 0.99
    paths.model_card.write_text(json.dumps(card))
    findings = check_metrics(paths, trained.model)
    assert {f.artifact for f in findings} >= {"reports/metrics.json:test_recall"}
