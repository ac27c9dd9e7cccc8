"""Judging one batch after deployment: drift, schema, predictions, and realised performance once labels arrive.

A batch and its labels come from outside (a file a user names), so each is read as
untrusted: a file that is not a batch (missing column, a number that is not one, no
rows, a customer twice) or labels that do not fit it (unknown customers, a label that
is not 0 or 1, labels for a batch never monitored) is refused in one line before
anything is written. What a batch *says* about the world (a category the schema does
not know, values missing, values out of range) is not refused: it is what monitoring is
for, and becomes a schema finding and an alert.

The champion at the time is the model judged: its predictions on a batch are kept
(`reports/monitoring/batch-NNNN/predictions.csv`) so that labels arriving later are
compared with what was predicted then. Reference figures are the training data's (for
drift) and the champion's on the test set (for predictions and performance).

Everything kept lives under `reports/monitoring/`: `state.json` (the alert state and
which batches were monitored), each batch's folder (record and predictions), and
`alerts.json` (every alert raised, open and resolved).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlvs._io import atomic_write_bytes, atomic_write_text
from mlvs.backends.mlflow.registry import read_registry
from mlvs.backends.mlflow.tracking import CHAMPION
from mlvs.errors import BadInputError, ExternalToolError, IntegrityError
from mlvs.ml import data as datamod
from mlvs.ml.decision import contact_values, fixed_or_default_threshold, net_value
from mlvs.ml.drift import DatasetDrift, dataset_drift, numeric_psi
from mlvs.ml.monitor import (
    PERFORMANCE_METRICS,
    Alert,
    AlertState,
    Observation,
    Performance,
    Step,
    campaign_roi,
    deploy_is_worse,
    observations,
    step,
)
from mlvs.ml.params import load_stage
from mlvs.ops.history import alias_history
from mlvs.ops.monitor_state import batch_dir, load_state, save_state
from mlvs.ops.rollback.restore import rollback
from mlvs.ops.run import run_notebook
from mlvs.paths import ProjectPaths
from mlvs.stages.versions import VersionModel, load_version_model

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

_BATCH_NAME = re.compile(r"^batch-(\d{4,6})\.csv$")
MAX_BATCH_BYTES = 512 * 1024 * 1024
NUMERIC = tuple(c.name for c in datamod.SCHEMA if c.kind in ("int", "float") and c.name != "churn")


@dataclass(frozen=True)
class BatchFile:
    """A batch read and checked: its number, rows and content hash."""

    number: int
    path: Path
    frame: pd.DataFrame
    sha256: str
    md5: str  # as DVC hashes a file: the key it is stored under


def _sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _read_csv(path: Path, what: str) -> tuple[pd.DataFrame, bytes]:
    # deferred: pandas (~1 s) is imported only when this runs
    import pandas as pd

    if not path.is_file():
        raise BadInputError(f"{what} {path} is not a file; give the path of a CSV file")
    if path.stat().st_size > MAX_BATCH_BYTES:
        raise BadInputError(
            f"{what} {path} is larger than {MAX_BATCH_BYTES >> 20} MiB; split it into batches"
        )
    payload = path.read_bytes()
    try:
        frame = pd.read_csv(io.BytesIO(payload), dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or ["unreadable"])[0]
        raise BadInputError(f"{what} {path} is not a readable CSV file ({first})") from None
    if frame.empty:
        raise BadInputError(f"{what} {path} has no rows; a batch needs at least one customer")
    header = next(csv.reader(io.StringIO(payload.decode("utf-8", errors="replace"))), [])
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise BadInputError(f"{what} {path} repeats column(s) {', '.join(repeated)}")
    return frame, payload


def read_batch(paths: ProjectPaths, path: Path, state: AlertState | None = None) -> BatchFile:
    """Batch file `path`, checked as a batch; its number from its name, else the next one."""
    # deferred: pandas (~1 s) is imported only when this runs
    import pandas as pd

    frame, payload = _read_csv(path, "batch")
    expected = ["customer_id", *datamod.FEATURES]
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        raise BadInputError(
            f"batch {path} lacks column(s) {', '.join(missing)}; a batch has the columns of "
            "data/raw/customer_data.csv without churn"
        )
    extra = [c for c in frame.columns if c not in expected]
    if extra:
        raise BadInputError(
            f"batch {path} has column(s) {', '.join(map(str, extra))} that are not customer columns "
            "(labels go in a separate file, given with --labels)"
        )
    ids = frame["customer_id"]
    if (ids == "").any() or ids.duplicated().any():
        raise BadInputError(
            f"batch {path} has an empty or repeated customer_id; each row is one customer"
        )
    typed = frame[expected].copy()
    for column in NUMERIC:
        text = frame[column].str.strip()
        numbers = pd.to_numeric(text.where(text != ""), errors="coerce")
        wrong = text[(text != "") & numbers.isna()]
        if not wrong.empty:
            raise BadInputError(
                f"batch {path}: column {column} has {len(wrong)} value(s) that are not numbers "
                f"(first at row {int(wrong.index[0]) + 2}); fix the file or the system that wrote it"
            )
        typed[column] = numbers
    for column in datamod.CATEGORICAL_FEATURES:
        typed[column] = frame[column].where(frame[column] != "")
    match = _BATCH_NAME.match(path.name)
    if match:
        number = int(match.group(1))
    else:
        seen = (state or AlertState()).batches_seen
        number = max(seen, default=0) + 1
    return BatchFile(number, path, typed, _sha256(payload), hashlib.md5(payload).hexdigest())


def read_labels(path: Path, batch: BatchFile) -> pd.Series:
    """Labels file `path` for `batch`: one 0/1 `churn` per customer of the batch, in its order."""
    frame, _ = _read_csv(path, "labels")
    if list(frame.columns) != ["customer_id", "churn"]:
        raise BadInputError(
            f"labels {path} must have exactly the columns customer_id, churn (it has "
            f"{', '.join(map(str, frame.columns))})"
        )
    if not frame["churn"].isin(["0", "1"]).all():
        raise BadInputError(f"labels {path}: churn must be 0 or 1 on every row")
    if frame["customer_id"].duplicated().any():
        raise BadInputError(f"labels {path} names a customer twice")
    known = set(batch.frame["customer_id"])
    unknown = [c for c in frame["customer_id"] if c not in known]
    if unknown:
        raise BadInputError(
            f"labels {path} name {len(unknown)} customer(s) not in batch {batch.number} "
            f"(first: {unknown[0][:40]!r}); give the labels of this batch"
        )
    labels = frame.set_index("customer_id")["churn"].astype(int)
    return labels.reindex(batch.frame["customer_id"])


def champion(paths: ProjectPaths) -> VersionModel:
    """The champion's model, verified, with its decision threshold."""
    params = load_stage("train", paths.root)
    name = params.registry.model_name
    registry = read_registry(paths, name, None)
    if registry.error:
        raise ExternalToolError(f"the MLflow registry cannot be read ({registry.error})")
    version = registry.alias_versions().get(CHAMPION)
    if version is None:
        raise BadInputError(f"{name} has no champion to monitor; run `mlvs pipeline` first")
    return load_version_model(
        paths, name, version, fixed_or_default_threshold(params.decision_threshold)
    )


def schema_findings(frame: pd.DataFrame) -> list[str]:
    """What the batch says against the declared schema: unknown categories, missing or out-of-range values."""
    return datamod.validate_schema(frame, with_target=False)


def scorable(frame: pd.DataFrame) -> pd.Series:
    """The rows the model can score: every feature present, each category one the schema knows."""
    ok = frame[list(datamod.FEATURES)].notna().all(axis=1)
    for column in datamod.SCHEMA:
        if column.kind == "category":
            ok &= frame[column.name].isin(column.allowed)
        elif column.kind in ("int", "float") and column.name in datamod.FEATURES:
            ok &= frame[column.name].between(column.minimum, column.maximum)
    return ok


@dataclass
class Judgement:
    """Everything one batch says, and the alerts it raised or resolved."""

    batch: BatchFile
    model_version: str
    threshold: float
    drift: DatasetDrift
    schema: list[str]
    scored_share: float
    probabilities: np.ndarray  # of the scorable rows
    reference_probabilities: np.ndarray  # the champion's on the test set
    prediction_psi: float
    predicted_churn_rate: float
    performance: Performance | None
    found: list[Observation]
    alerts: Step | None = None
    undelivered: list[str] = field(default_factory=list)  # alerts the webhook did not take

    def to_dict(self) -> dict[str, Any]:
        """The record of this batch, as `mlvs monitor --json` prints it."""
        perf = self.performance
        return {
            "batch": self.batch.number,
            "batch_file": str(self.batch.path),
            "batch_sha256": self.batch.sha256,
            "rows": len(self.batch.frame),
            "model_version": self.model_version,
            "decision_threshold": self.threshold,
            "drift": self.drift.as_dict(),
            "schema": self.schema,
            "scored_share": self.scored_share,
            "prediction_psi": self.prediction_psi,
            "predicted_churn_rate": self.predicted_churn_rate,
            "performance": None if perf is None else perf.__dict__,
            "alerts": [a.to_dict() for a in self.alerts.raised] if self.alerts else [],
            "resolved": [a.to_dict() for a in self.alerts.resolved] if self.alerts else [],
            "open_alerts": [a.to_dict() for a in self.alerts.still_open] if self.alerts else [],
            "webhook_failures": self.undelivered,
        }


def _figures(
    business: Any, labels: Any, probabilities: Any, monthly_charges: Any, threshold: float
) -> tuple[float, float, float, float]:
    """ROC-AUC, recall, net value per customer and ROI of contacting from `threshold` up."""
    # deferred: scikit-learn (~2.5 s) is imported only when this runs
    from sklearn.metrics import recall_score, roc_auc_score

    values = contact_values(business, monthly_charges)
    contacted = probabilities >= threshold
    auc = float(roc_auc_score(labels, probabilities)) if len(set(labels)) == 2 else float("nan")
    recall = float(recall_score(labels, contacted, zero_division=0))
    net = net_value(labels, probabilities, threshold, values)
    roi = campaign_roi(net, int(contacted.sum()), values.offer_cost)
    return auc, recall, net / max(len(labels), 1), roi


def judge(
    paths: ProjectPaths, batch: BatchFile, labels: Any | None, monitored: dict[str, Any]
) -> Judgement:
    """Judge `batch` against the training data and the champion; with `labels`, its realised performance."""
    # deferred: numpy (~0.2 s) is imported only when this runs
    import numpy as np

    model = champion(paths)
    train = datamod.read_customers(paths.train_data)
    test = datamod.read_customers(paths.test_data)
    features = list(datamod.FEATURES)
    drift = dataset_drift(train[features].to_dict("list"), batch.frame[features].to_dict("list"))
    ok = scorable(batch.frame)
    rows = batch.frame[ok]
    probabilities = model.model.predict_proba(rows[features])[:, 1] if len(rows) else np.zeros(0)
    reference = model.model.predict_proba(test[features])[:, 1]
    business = load_stage("train", paths.root).business
    auc_then, recall_then, value_then, roi_then = _figures(
        business,
        test["churn"].to_numpy(),
        reference,
        test["monthly_charges"].to_numpy(),
        model.threshold,
    )
    performance = None
    if labels is not None:
        before = monitored.get(str(batch.number))
        kept = batch_dir(paths, batch.number) / "predictions.csv"
        if before is None or not kept.is_file():
            raise BadInputError(
                f"batch {batch.number}'s predictions are not kept; monitor it without --labels "
                "first, then again with its labels when they arrive"
            )
        then = datamod.read_customers(kept)
        scored = then.set_index("customer_id")["churn_probability"]
        charges = batch.frame.set_index("customer_id").loc[scored.index, "monthly_charges"]
        auc, recall, value, roi = _figures(
            business,
            labels[scored.index].to_numpy(),
            scored.to_numpy(),
            charges.to_numpy(),
            float(before["threshold"]),
        )
        performance = Performance(
            auc, recall, value, auc_then, recall_then, value_then, roi, roi_then
        )
    schema = schema_findings(batch.frame)
    prediction_psi = (
        numeric_psi(reference.tolist(), probabilities.tolist()) if len(rows) else float("inf")
    )
    predicted = float((probabilities >= model.threshold).mean()) if len(rows) else 0.0
    found = observations(drift, len(schema), prediction_psi, predicted, performance)
    return Judgement(
        batch,
        model.version,
        model.threshold,
        drift,
        schema,
        float(ok.mean()),
        probabilities,
        reference,
        prediction_psi,
        predicted,
        performance,
        found,
    )


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def record(
    paths: ProjectPaths,
    judgement: Judgement,
    labelled: bool,
    deliver: Callable[[list[dict[str, Any]]], list[str]] | None = None,
) -> Judgement:
    """Apply the rules, send what changed (`deliver`), keep the predictions (first time) and
    the record, and save the state."""
    # deferred: pandas (~1 s) is imported only when this runs
    import pandas as pd

    rules = load_stage("monitoring", paths.root).rules
    state, monitored = load_state(paths)
    # A batch's inputs were judged when it was first monitored; its labels add only the
    # performance figures, so a streak does not count the same batch twice.
    found = (
        [o for o in judgement.found if o.metric in PERFORMANCE_METRICS]
        if labelled
        else judgement.found
    )
    judgement.alerts = step(state, judgement.batch.number, found, rules, now_text())
    changed = [a.to_dict() for a in (*judgement.alerts.raised, *judgement.alerts.resolved)]
    judgement.undelivered = deliver(changed) if deliver is not None else []
    folder = batch_dir(paths, judgement.batch.number)
    folder.mkdir(parents=True, exist_ok=True)
    if not labelled:
        ok = scorable(judgement.batch.frame)
        kept = pd.DataFrame(
            {
                "customer_id": judgement.batch.frame["customer_id"][ok].to_numpy(),
                "churn_probability": judgement.probabilities,
            }
        )
        atomic_write_bytes(
            folder / "predictions.csv", kept.to_csv(index=False, float_format="%.6f").encode()
        )
        monitored[str(judgement.batch.number)] = {
            "sha256": judgement.batch.sha256,
            "model_version": judgement.model_version,
            "threshold": judgement.threshold,
            "monitored_at": now_text(),
        }
    name = "record-labelled.json" if labelled else "record.json"
    atomic_write_text(
        folder / name, json.dumps(judgement.to_dict(), indent=2, default=float) + "\n"
    )
    save_state(paths, state, monitored)
    return judgement


def _resolve(paths: ProjectPaths, given: str, what: str) -> Path:
    if not given:
        raise BadInputError(f"no {what} given; pass the path of a CSV file")
    path = Path(given)
    return path if path.is_absolute() else paths.root / path


def check_inputs(paths: ProjectPaths, batch: str, labels: str = "") -> tuple[BatchFile, Any | None]:
    """Read a batch (and its labels) as given (from the project root, or absolute) and check them.

    Labels are taken only for a batch monitored before, so that they are compared with
    the predictions made then.
    """
    state, monitored = load_state(paths)
    read = read_batch(paths, _resolve(paths, batch, "batch"), state)
    truth = read_labels(_resolve(paths, labels, "labels"), read) if labels else None
    if truth is not None:
        before = monitored.get(str(read.number))
        if before is None or before.get("sha256") != read.sha256:
            raise BadInputError(
                f"batch {read.number} was never monitored (or has changed since); monitor it "
                "without --labels first, then again with its labels when they arrive"
            )
    return read, truth


def report_dir(paths: ProjectPaths, number: int, labelled: bool) -> Path:
    """Where the executed `05_monitor` of batch `number` goes (the labelled run beside the first)."""
    folder = batch_dir(paths, number)
    return folder / "labelled" if labelled else folder


def read_record(paths: ProjectPaths, number: int, labelled: bool) -> dict[str, Any]:
    """The record the notebook wrote for batch `number`; refused in one line when it is not one."""
    path = batch_dir(paths, number) / ("record-labelled.json" if labelled else "record.json")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise IntegrityError(
            f"{path} is not a monitoring record ({type(exc).__name__}); run `mlvs monitor` again"
        ) from None
    if not isinstance(document, dict) or document.get("batch") != number:
        raise IntegrityError(
            f"{path} is not the record of batch {number}; run `mlvs monitor` again"
        )
    check = batch_dir(paths, number) / "deploy-check.json"
    if labelled and check.is_file():
        with contextlib.suppress(OSError, ValueError):
            document["deploy_check"] = json.loads(check.read_text(encoding="utf-8"))
        state, _ = load_state(paths)
        document["alerts"] += [
            a.to_dict() for a in state.alerts if a.rule == DEPLOY_GUARD and a.raised_batch == number
        ]
    return document


def monitor_batch(paths: ProjectPaths, batch: str, labels: str = "") -> dict[str, Any]:
    """`mlvs monitor`: check the inputs, run `05_monitor` on them, return the batch's record.

    Bad input is refused before the notebook starts, so it leaves no run, report or state.
    """
    read, truth = check_inputs(paths, batch, labels)
    labelled = truth is not None
    run_notebook(
        paths,
        "05_monitor",
        {"batch": batch, "labels": labels},
        output_dir=report_dir(paths, read.number, labelled),
        progress=False,
    )
    return read_record(paths, read.number, labelled)


# The commands whose alias moves put a new model in front of customers.
DEPLOYING_COMMANDS = ("deploy", "pipeline")
DEPLOY_GUARD = "deploy_guard"


@dataclass(frozen=True)
class DeployCheck:
    """A fresh champion against the version it replaced, on one labelled batch, and what was done."""

    batch: int
    deployed: str
    previous: str
    snapshot: str | None  # taken before the deploy: where a rollback goes
    deployed_at: str
    batches_since: int
    metric: str
    champion_value: float
    previous_value: float
    margin: float
    worse: bool
    action: str  # "none", "rolled back" or "recommended"
    command: str  # the exact command that undoes the deploy
    rollback: dict[str, Any] | None = None  # the verified rollback's report, when one ran

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _last_deploy(paths: ProjectPaths) -> Any | None:
    history = alias_history(paths)
    moves = [m for m in history.moves if m.alias == CHAMPION]
    if not moves or moves[-1].command not in DEPLOYING_COMMANDS or not moves[-1].from_version:
        return None
    return moves[-1]


def check_deploy(paths: ProjectPaths, judgement: Judgement, labels: Any) -> DeployCheck | None:
    """Judge the last deploy on this labelled batch, if it is fresh; roll it back if the guard says so.

    Both versions score the same rows of the batch with the same labels and their own
    decision thresholds. The rollback restores the models and the registry of the
    snapshot taken before the deploy (data that arrived since stays), verified as every
    rollback; a service following the champion swaps back by itself.
    """
    guard = load_stage("monitoring", paths.root).deploy_guard
    move = _last_deploy(paths)
    if move is None or move.to_version != judgement.model_version:
        return None
    _, monitored = load_state(paths)
    since = sum(
        1
        for v in monitored.values()
        if isinstance(v, dict) and datetime.fromisoformat(v["monitored_at"]) >= move.when()
    )
    if since > guard.within_batches:
        return None
    train = load_stage("train", paths.root)
    previous = load_version_model(
        paths,
        train.registry.model_name,
        move.from_version,
        fixed_or_default_threshold(train.decision_threshold),
    )
    deployed = champion(paths)
    ok = scorable(judgement.batch.frame)
    rows = judgement.batch.frame[ok]
    truth = labels[ok.to_numpy()].to_numpy()
    features = list(datamod.FEATURES)
    which = 0 if guard.metric == "roc_auc" else 2  # in `_figures`' order
    figures = [
        _figures(
            train.business,
            truth,
            model.model.predict_proba(rows[features])[:, 1],
            rows["monthly_charges"].to_numpy(),
            model.threshold,
        )[which]
        for model in (deployed, previous)
    ]
    worse = deploy_is_worse(guard, figures[0], figures[1])
    command = (
        f"mlvs rollback {move.snapshot} --only models,registry"
        if move.snapshot
        else "mlvs deploy " + move.from_version
    )
    action, report = "none", None
    if worse and guard.auto_rollback and move.snapshot:
        report = rollback(paths, move.snapshot, only="models,registry").to_dict()
        action = "rolled back"
    elif worse:
        action = "recommended"
    check = DeployCheck(
        judgement.batch.number,
        move.to_version,
        move.from_version,
        move.snapshot,
        move.time,
        since,
        guard.metric,
        figures[0],
        figures[1],
        guard.margin,
        worse,
        action,
        command,
        report,
    )
    if worse:
        _alert_deploy(paths, check)
    return check


def _alert_deploy(paths: ProjectPaths, check: DeployCheck) -> None:
    """Record the guard's alert: resolved at once when the rollback ran, open when only recommended."""
    state, monitored = load_state(paths)
    done = check.action == "rolled back"
    what = (
        f"rolled back to {check.snapshot} (models, registry; verified)"
        if done
        else f"recommended: {check.command}"
    )
    alert = Alert(
        DEPLOY_GUARD,
        "critical",
        check.metric,
        f"version {check.deployed} (replaced {check.previous}): {what}",
        check.champion_value - check.previous_value,
        -check.margin,
        check.batch,
        now_text(),
        status="resolved" if done else "open",
        resolved_batch=check.batch if done else None,
        resolved_at=now_text() if done else None,
    )
    state.alerts.append(alert)
    save_state(paths, state, monitored)
    atomic_write_text(
        batch_dir(paths, check.batch) / "deploy-check.json",
        json.dumps(check.to_dict(), indent=2, default=str) + "\n",
    )
