"""Alert rules over monitored batches (`mlvs.ml.monitor`): raised once, resolved when they pass."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mlvs.ml.batches import make_batch
from mlvs.ml.data import FEATURES, generate_customers, validate_schema
from mlvs.ml.drift import dataset_drift
from mlvs.ml.monitor import AlertState, Observation, Performance, Rule, observations, step
from mlvs.ml.params import load_stage

REPO = Path(__file__).resolve().parents[2]
PSI = Rule(name="feature_drift", metric="feature_psi", above=0.1)
AUC = Rule(name="auc_drop", metric="roc_auc_drop", above=0.05, batches=2, severity="critical")


def psi_of(value: float) -> list[Observation]:
    return [Observation("feature_psi", "monthly_charges", value)]


def auc_drop_of(value: float) -> list[Observation]:
    return [Observation("roc_auc_drop", "roc_auc", value)]


def test_an_alert_is_raised_once_while_its_rule_stays_breached_and_resolved_when_it_passes() -> (
    None
):
    state = AlertState()
    first = step(state, 1, psi_of(0.3), [PSI], "t1")
    again = step(state, 2, psi_of(0.4), [PSI], "t2")
    calm = step(state, 3, psi_of(0.01), [PSI], "t3")
    assert [(a.rule, a.subject, a.value, a.threshold) for a in first.raised] == [
        ("feature_drift", "monthly_charges", 0.3, 0.1)
    ]
    assert again.raised == [] and [a.raised_batch for a in again.still_open] == [1]
    assert [(a.status, a.resolved_batch) for a in calm.resolved] == [("resolved", 3)]
    assert calm.still_open == [] and len(state.alerts) == 1


def test_a_rule_over_several_batches_waits_for_them_in_a_row() -> None:
    state = AlertState()
    assert step(state, 1, auc_drop_of(0.1), [AUC], "t1").raised == []
    assert step(state, 2, auc_drop_of(0.0), [AUC], "t2").raised == []  # the run is broken
    assert step(state, 3, auc_drop_of(0.1), [AUC], "t3").raised == []
    (alert,) = step(state, 4, auc_drop_of(0.2), [AUC], "t4").raised
    assert (alert.severity, alert.raised_batch, alert.value) == ("critical", 4, 0.2)


def test_a_batch_without_the_metric_leaves_its_alert_as_it_was() -> None:
    state = AlertState()
    step(state, 1, psi_of(0.3), [PSI], "t1")
    unlabelled = step(state, 2, [], [PSI], "t2")
    assert unlabelled.resolved == [] and len(unlabelled.still_open) == 1


def test_the_state_survives_its_document() -> None:
    state = AlertState()
    step(state, 1, psi_of(0.3), [PSI], "t1")
    step(state, 2, psi_of(0.3), [PSI, AUC], "t2")
    again = AlertState.from_dict(state.to_dict())
    assert again.to_dict() == state.to_dict()
    assert step(again, 3, psi_of(0.5), [PSI], "t3").raised == []


def test_a_below_rule_breaks_under_its_threshold() -> None:
    rule = Rule(name="few_predicted", metric="predicted_churn_rate", below=0.05)
    assert rule.breached(0.01) and not rule.breached(0.2) and rule.threshold == 0.05


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "r", "metric": "feature_psi"},
        {"name": "r", "metric": "feature_psi", "above": 0.1, "below": 0.0},
        {"name": "r", "metric": "accuracy", "above": 0.1},
        {"name": "R!", "metric": "feature_psi", "above": 0.1},
    ],
)
def test_a_rule_without_one_threshold_or_with_an_unknown_metric_is_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        Rule(**bad)


def test_performance_drops_are_measured_from_the_training_figures() -> None:
    drift = dataset_drift({"a": [1.0, 2.0, 3.0]}, {"a": [1.0, 2.0, 3.0]})
    found = observations(drift, 0, 0.0, 0.25, Performance(0.70, 0.5, 20.0, 0.84, 0.7, 27.8))
    drops = {o.metric: round(o.value, 6) for o in found if o.metric.endswith("_drop")}
    assert drops == {"roc_auc_drop": 0.14, "recall_drop": 0.2, "net_value_per_customer_drop": 7.8}


# Each drift scenario at its default severity, under the project's own rules, raises the
# input-side alerts it should and no other (prediction and performance need a model).
EXPECTED = {
    "none": set(),
    "price_rise": {("feature_drift", "monthly_charges")},
    "contract_shift": {("feature_drift", "contract")},
    "new_payment_method": {("feature_drift", "payment_method"), ("schema", "schema")},
    "concept_drift": set(),  # the same inputs: only the labels can tell
    "missing_values": {("missing_values", "tenure_months"), ("schema", "schema")},
    "gradual": {("feature_drift", "monthly_charges")},
}


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_each_scenario_raises_the_input_alerts_it_should_and_no_other(scenario: str) -> None:
    monitoring = load_stage("monitoring", REPO)
    prepare = load_stage("prepare", REPO)
    world = (prepare.churn_rate, prepare.signal_strength, prepare.label_noise)
    reference = generate_customers(4000, *world, seed=prepare.seed)[list(FEATURES)]
    state, raised = AlertState(), set()
    batches = monitoring.scenarios[scenario].ramp_batches if scenario == "gradual" else 2
    for number in range(1, batches + 1):
        made = make_batch(
            scenario, monitoring.scenarios[scenario], number, 1000, monitoring.seed, *world
        )
        drift = dataset_drift(
            reference.to_dict("list"), made.customers[list(FEATURES)].to_dict("list")
        )
        problems = [p for p in validate_schema(made.customers) if "churn" not in p]
        found = observations(drift, len(problems), 0.0, 0.26)
        raised |= {
            (a.rule, a.subject) for a in step(state, number, found, monitoring.rules, "t").raised
        }
    assert raised == EXPECTED[scenario]


# Concept drift: the same inputs (no input or prediction alert), and a model that ranks and
# earns worse on its labels (both performance alerts). A clean batch with labels: none.
@pytest.mark.parametrize(
    ("scenario", "expected"), [("concept_drift", {"auc_drop", "value_drop"}), ("none", set())]
)
def test_once_labels_arrive_concept_drift_raises_the_performance_alert_and_a_clean_batch_none(
    scenario: str, expected: set[str]
) -> None:
    # deferred: scikit-learn only for the test that fits a model
    from sklearn.metrics import recall_score, roc_auc_score

    from mlvs.ml.data import split_customers
    from mlvs.ml.decision import contact_values, net_value
    from mlvs.ml.drift import numeric_psi
    from mlvs.ml.features import build_model
    from mlvs.ml.modeling import build_classifier

    monitoring, prepare = load_stage("monitoring", REPO), load_stage("prepare", REPO)
    train_params = load_stage("train", REPO)
    business = train_params.business
    world = (prepare.churn_rate, prepare.signal_strength, prepare.label_noise)
    train, test = split_customers(generate_customers(4000, *world, seed=prepare.seed), 0.25, 0)
    hyper = train_params.hyperparameters_of("logistic_regression")
    model = build_model(build_classifier("logistic_regression", hyper, 0))
    model.fit(train[list(FEATURES)], train["churn"])
    threshold = 0.25

    def figures(frame, labels) -> tuple[list[float], float, float, float]:  # type: ignore[no-untyped-def]
        p = model.predict_proba(frame[list(FEATURES)])[:, 1]
        values = contact_values(business, frame["monthly_charges"].to_numpy())
        return (
            p.tolist(),
            float(roc_auc_score(labels, p)),
            float(recall_score(labels, p >= threshold)),
            net_value(labels, p, threshold, values) / len(labels),
        )

    reference_p, *reference = figures(test, test["churn"].to_numpy())
    made = make_batch(scenario, monitoring.scenarios[scenario], 1, 1000, monitoring.seed, *world)
    batch_p, *realised = figures(made.customers, made.labels["churn"].to_numpy())
    drift = dataset_drift(
        train[list(FEATURES)].to_dict("list"), made.customers[list(FEATURES)].to_dict("list")
    )
    found = observations(
        drift,
        0,
        numeric_psi(reference_p, batch_p),
        float((sum(p >= threshold for p in batch_p)) / len(batch_p)),
        Performance(*realised, *reference),
    )
    raised = {a.rule for a in step(AlertState(), 1, found, monitoring.rules, "t").raised}
    assert raised == expected
