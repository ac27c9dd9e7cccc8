"""How well the monitor tells drift from noise, and how fast it judges a batch (issue 17, outcome 8).

At the project's own sizes: the reference is the default prepare's training split (4,000
rows), the model the default train params' model fitted on it, the batches 1,000 rows of
each scenario of `params/monitoring.yaml`, judged by its rules, in process (the judging
`mlvs monitor` runs in its notebook, without the notebook's kernel start and plots).

- false alarms: the share of 100 batches of `none` that raise any alert (target <= 2%);
- detection: for each drift scenario at its default severity, the batches until its first
  alert (target 1);
- sensitivity: the smallest severity of each scenario whose first batch raises its alert;
- speed: the time to judge one batch of 1,000 rows in process (target <= 1 s), and `mlvs
  monitor` end to end on the default project (its notebook and dashboard; reported).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO, make_workspace, mlvs

from mlvs.ml.batches import Scenario, make_batch
from mlvs.ml.data import FEATURES, generate_customers, split_customers, validate_schema
from mlvs.ml.decision import contact_values, fixed_or_default_threshold, net_value
from mlvs.ml.drift import dataset_drift, numeric_psi
from mlvs.ml.features import build_model
from mlvs.ml.modeling import build_classifier
from mlvs.ml.monitor import AlertState, Performance, observations, step
from mlvs.ml.params import load_stage

from ._bench import median, record, table

pytestmark = pytest.mark.bench

CLEAN_BATCHES = 100
MAX_FALSE_ALARM_SHARE = 0.02
MAX_BATCHES_TO_DETECT = 1
MAX_SECONDS_PER_BATCH = 1.0
SEVERITIES = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
# The alert each scenario must raise (rule names of params/monitoring.yaml).
EXPECTED = {
    "price_rise": "feature_drift",
    "contract_shift": "feature_drift",
    "new_payment_method": "schema",
    "concept_drift": "auc_drop",
    "missing_values": "missing_values",
    "gradual": "feature_drift",
}


class World:
    """The reference data, the fitted model and its test-set figures, as training leaves them."""

    def __init__(self) -> None:
        self.prepare = load_stage("prepare", REPO)
        self.train_params = load_stage("train", REPO)
        self.monitoring = load_stage("monitoring", REPO)
        p = self.prepare
        frame = generate_customers(p.n_rows, p.churn_rate, p.signal_strength, p.label_noise, p.seed)
        train, test = split_customers(frame, p.test_size, p.seed)
        t = self.train_params
        self.model = build_model(build_classifier(t.model_type, t.model_hyperparameters(), t.seed))
        self.model.fit(train[list(FEATURES)], train["churn"])
        self.threshold = fixed_or_default_threshold(t.decision_threshold)
        self.reference = train[list(FEATURES)].to_dict("list")
        self.test_probability = self.model.predict_proba(test[list(FEATURES)])[:, 1]
        y = test["churn"].to_numpy()
        values = contact_values(t.business, test["monthly_charges"].to_numpy())
        from sklearn.metrics import recall_score, roc_auc_score

        self.test_figures = (
            float(roc_auc_score(y, self.test_probability)),
            float(recall_score(y, self.test_probability >= self.threshold)),
            net_value(y, self.test_probability, self.threshold, values) / len(y),
        )

    def judge(self, scenario: str, severity: float | None, number: int) -> list[Any]:
        """The observations of batch `number` of `scenario` (with its labels)."""
        from sklearn.metrics import recall_score, roc_auc_score

        settings = self.monitoring.scenarios[scenario]
        if severity is not None:
            settings = Scenario(**{**settings.model_dump(), "severity": severity})
        p = self.prepare
        batch = make_batch(
            scenario,
            settings,
            number,
            self.monitoring.batch_rows,
            self.monitoring.seed,
            p.churn_rate,
            p.signal_strength,
            p.label_noise,
        )
        frame = batch.customers
        drift = dataset_drift(self.reference, frame[list(FEATURES)].to_dict("list"))
        schema = validate_schema(frame, with_target=False)
        ok = frame[list(FEATURES)].notna().all(axis=1)
        for column in ("contract", "payment_method", "internet_service"):
            ok &= frame[column].isin(set(self.reference[column]))
        rows = frame[ok]
        probability = self.model.predict_proba(rows[list(FEATURES)])[:, 1]
        y = batch.labels["churn"].to_numpy()[ok.to_numpy()]
        values = contact_values(self.train_params.business, rows["monthly_charges"].to_numpy())
        performance = Performance(
            float(roc_auc_score(y, probability)),
            float(recall_score(y, probability >= self.threshold)),
            net_value(y, probability, self.threshold, values) / max(len(y), 1),
            *self.test_figures,
        )
        return observations(
            drift,
            len(schema),
            numeric_psi(self.test_probability.tolist(), probability.tolist()),
            float((probability >= self.threshold).mean()),
            performance,
        )

    def alerts(self, found: list[Any], number: int) -> set[str]:
        """The rules one batch breaks, judged on its own."""
        raised = step(AlertState(), number, found, self.monitoring.rules, "bench").raised
        return {a.rule for a in raised}


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def test_monitoring_tells_drift_from_noise(world: World) -> None:
    false_alarms = 0
    noisy_rules: dict[str, int] = {}
    for number in range(1, CLEAN_BATCHES + 1):
        rules = world.alerts(world.judge("none", None, number), number)
        false_alarms += bool(rules)
        for rule in rules:
            noisy_rules[rule] = noisy_rules.get(rule, 0) + 1
    share = false_alarms / CLEAN_BATCHES

    detection: dict[str, int | None] = {}
    for scenario, rule in EXPECTED.items():
        state = AlertState()
        detection[scenario] = None
        for number in range(1, 11):
            raised = step(
                state, number, world.judge(scenario, None, number), world.monitoring.rules, "b"
            ).raised
            if any(a.rule == rule for a in raised):
                detection[scenario] = number
                break
    smallest: dict[str, float | None] = {}
    for scenario, rule in EXPECTED.items():
        smallest[scenario] = next(
            (s for s in SEVERITIES if rule in world.alerts(world.judge(scenario, s, 1), 1)), None
        )
    worst = max((d if d is not None else 99) for d in detection.values())
    met = share <= MAX_FALSE_ALARM_SHARE and worst <= MAX_BATCHES_TO_DETECT
    record(
        "monitoring_detection",
        {
            "clean_batches": CLEAN_BATCHES,
            "false_alarm_share": share,
            "false_alarms_by_rule": noisy_rules,
            "batches_to_first_alert": detection,
            "smallest_severity_detected": smallest,
            "default_severities": {s: world.monitoring.scenarios[s].severity for s in EXPECTED},
        },
        value=share,
        unit="share of clean batches alerting",
        target=MAX_FALSE_ALARM_SHARE,
        target_text=(
            f"<= {MAX_FALSE_ALARM_SHARE:.0%} of {CLEAN_BATCHES} clean batches alert, and every "
            f"scenario at its default severity alerts within {MAX_BATCHES_TO_DETECT} batch"
        ),
        met=met,
    )
    table(
        "monitoring_detection (1,000-row batches, the project's rules)",
        [
            "scenario",
            "expected alert",
            "default severity",
            "batches to first alert",
            "smallest severity detected",
        ],
        [
            [s, EXPECTED[s], world.monitoring.scenarios[s].severity, detection[s], smallest[s]]
            for s in EXPECTED
        ]
        + [["none", "-", 0.0, f"false alarms: {share:.1%}", str(noisy_rules)]],
    )
    assert met, (share, detection)


def test_judging_one_batch_in_process_takes_under_a_second(world: World) -> None:
    world.judge("none", None, 1)  # warm: scipy's tests and the model's first call
    runs = []
    for number in range(1, 6):
        started = time.perf_counter()
        world.alerts(world.judge("price_rise", None, number), number)
        runs.append(time.perf_counter() - started)
    seconds = median(runs)
    record(
        "monitoring_batch_seconds",
        {"rows": world.monitoring.batch_rows, "runs_s": [round(r, 3) for r in runs]},
        value=seconds,
        unit="s",
        target=MAX_SECONDS_PER_BATCH,
        target_text=f"judge one batch of {world.monitoring.batch_rows:,} rows in process <= {MAX_SECONDS_PER_BATCH} s",
    )
    table(
        "monitoring_batch_seconds (median of 5, wall clock)",
        ["figure", "seconds"],
        [["median", seconds], ["fastest", round(float(np.min(runs)), 3)]],
    )
    assert seconds <= MAX_SECONDS_PER_BATCH, seconds


# The issue asks for the notebook run end to end to be reported; this target only catches a
# regression (a batch judged in well under a minute on two cores, kernel start included).
MAX_SECONDS_END_TO_END = 30.0


def test_mlvs_monitor_end_to_end_on_the_default_project(tmp_path: Path) -> None:
    root = make_workspace(tmp_path / "ws", tiny=False)
    mlvs(root, "pipeline", check=True)
    mlvs(root, "batches", "generate", "--scenario", "none", "--n-batches", "3", check=True)
    runs, labelled = [], []
    for number in (1, 2, 3):
        batch = f"data/batches/batch-{number:04d}.csv"
        started = time.perf_counter()
        judged = mlvs(root, "monitor", batch)
        runs.append(time.perf_counter() - started)
        assert judged.returncode in (0, 1), judged.stderr[-2000:]
        started = time.perf_counter()
        judged = mlvs(root, "monitor", batch, "--labels", f"data/labels/batch-{number:04d}.csv")
        labelled.append(time.perf_counter() - started)
        assert judged.returncode in (0, 1), judged.stderr[-2000:]
    seconds = median(runs)
    record(
        "monitoring_end_to_end_seconds",
        {
            "rows": 1000,
            "runs_s": [round(r, 3) for r in runs],
            "with_labels_runs_s": [round(r, 3) for r in labelled],
            "with_labels_median_s": median(labelled),
        },
        value=seconds,
        unit="s",
        target=MAX_SECONDS_END_TO_END,
        target_text=(
            f"`mlvs monitor` of one 1,000-row batch, notebook and dashboard included, "
            f"<= {MAX_SECONDS_END_TO_END:.0f} s (reported; the target catches a regression)"
        ),
    )
    table(
        "monitoring_end_to_end_seconds (`mlvs monitor`, default project, median of 3)",
        ["run", "seconds"],
        [["without labels", seconds], ["with labels", median(labelled)]],
    )
    assert seconds <= MAX_SECONDS_END_TO_END, seconds
