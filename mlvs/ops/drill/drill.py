"""Incident drills: the steady-state discipline, one step per call, timed.

A drill verifies the healthy state, injects one scenario, detects it, recovers
through the ladder, verifies again and proves with its own hashes that every
tracked byte is back. `03_incident.ipynb` calls the steps one by one so the
executed notebook reads as the postmortem; `run_drill` runs them in one go.

A drill changes the workspace, so it holds the state lock from its injection to
its last verification (`run_drill`, `drill_many`): no other command sees the
system broken or changes it while it heals. The notebook's kernel, started under
that lock, shares it, and so do the stages a pipeline scenario re-runs.

Each drill ends in a `DrillRecord`, written as `record.json` beside its notebook.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import TypeAdapter, ValidationError

from mlvs._io import atomic_write_text, sha256_file
from mlvs.backends.mlflow import tracking
from mlvs.backends.mlflow.backups import backup_mlflow_db
from mlvs.backends.mlflow.store import is_tracking_server, tracking_uri
from mlvs.backends.mlflow.tracking import EXPERIMENT
from mlvs.errors import BadInputError, IntegrityError, MlvsError, NotebookFailedError
from mlvs.ops.drill.incidents import Scenario, inject, not_applicable, scenario
from mlvs.ops.recover import recover
from mlvs.ops.repair import RecoveryOutcome, Repair
from mlvs.ops.reports_index import write_index
from mlvs.ops.run import resolve_notebook, run_notebook
from mlvs.ops.serve.supervise import live_services, served_model, stop
from mlvs.ops.verify import Report, verify
from mlvs.paths import ProjectPaths
from mlvs.state.lock import locked, state_lock
from mlvs.testing.faults import fault_point

if TYPE_CHECKING:
    import pandas as pd

# Runtime state that a drill legitimately changes (locks, logs, its own record).
UNCOMPARED = (
    ".git/",
    ".mlvs/",
    ".dvc/tmp/",
    ".dvc/cache/",
    "reports/",
    "mlartifacts/",
    "mlruns/",
    "mlflow.db",
)


# Not project content: the virtual environment, and the bytecode Python writes when it imports
# the project's own modules (a drill's pipeline run may compile a module for the first time).
_NOT_PROJECT_DIRS = frozenset({".venv", "__pycache__"})


def tracked_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every project file a drill must leave byte-identical."""
    hashes = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if any(rel.startswith(prefix) for prefix in UNCOMPARED) or not _NOT_PROJECT_DIRS.isdisjoint(
            rel.split("/")
        ):
            continue
        if path.is_file() and not path.is_symlink():
            hashes[rel] = sha256_file(path)
    return hashes


def run_ids(paths: ProjectPaths) -> set[str]:
    """Ids of every MLflow run in the embedded store, or in mlvs's experiment on a tracking server."""
    if is_tracking_server(tracking_uri(paths)):
        return _server_run_ids(paths)
    if not paths.mlflow_db.is_file():
        return set()
    try:
        with sqlite3.connect(f"{paths.mlflow_db.resolve().as_uri()}?mode=ro", uri=True) as db:
            return {row[0] for row in db.execute("SELECT run_uuid FROM runs")}
    except sqlite3.Error:
        return set()


def _server_run_ids(paths: ProjectPaths) -> set[str]:
    # Only mlvs's own experiment: a team's server holds other work that no drill touches.
    # deferred: mlflow (~1.7 s) is imported only when this runs
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri(paths))
    try:
        experiment = client.get_experiment_by_name(
            os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
        )
        if experiment is None:
            return set()
        ids: set[str] = set()
        token = None
        while True:
            page = client.search_runs(
                [experiment.experiment_id], max_results=1000, page_token=token
            )
            ids.update(run.info.run_id for run in page)
            token = page.token
            if not token:
                return ids
    except mlflow.exceptions.MlflowException:
        return set()  # an unreachable server shows no run: the drill cannot prove none was lost


@dataclass(frozen=True)
class Verification:
    """The steady state after a drill: healthy, and every tracked byte and MLflow run as before."""

    healthy: bool
    changed_files: list[str]
    lost_runs: list[str]
    byte_identical: bool
    # A serving drill: what the scoring service running after recovery answered on `/model`
    # (version, model_sha256), before the drill stopped the services it caused.
    serving: dict[str, Any] | None = None


@dataclass(frozen=True)
class TimelineStep:
    """One step of a drill: when it started after the drill did, and how long it took (seconds)."""

    step: str
    start_s: float
    duration_s: float


@dataclass
class DrillRecord:
    """A drill's postmortem: what was injected, what caught it, what repaired it, and the proof."""

    scenario: str
    family: str
    description: str
    injected: dict[str, Any]  # what the scenario's injector did (its own keys)
    detected: bool
    detected_by: str | None  # the check of the first finding
    detection: str | None  # that finding, in words
    findings: list[str]
    rung: str | None  # the highest rung of the recovery ladder that was needed
    repairs: list[Repair]
    evidence: list[str]  # where the damaged bytes were kept, relative to the project
    bytes_restored: int
    time_to_detect_s: float
    time_to_recover_s: float
    verification: Verification
    timeline: list[TimelineStep]
    recovered: bool
    failed_notebook: str | None = None  # a pipeline drill's failed notebook, kept beside the record

    def to_dict(self) -> dict[str, Any]:
        """The record as `record.json` holds it."""
        document = asdict(self)
        document["injected"] = self.injected  # as the injector gave it, not copied through asdict
        if self.failed_notebook is None:
            del document["failed_notebook"]
        if self.verification.serving is None:  # only a serving drill asks a service
            del document["verification"]["serving"]
        return document

    @classmethod
    def from_dict(cls, data: Any, source: str) -> DrillRecord:
        """Read a record back (`source` names the file in an error); refuse one of the wrong shape."""
        try:
            return _RECORD.validate_python(data)
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(str(part) for part in problem["loc"]) or "(the record)"
            raise IntegrityError(
                f"{source}: field {where}: {problem['msg']}; the drill record is damaged, "
                "run the drill again"
            ) from None


_RECORD = TypeAdapter(DrillRecord)


@dataclass(frozen=True)
class DrillFailure:
    """A drill whose notebook failed before it wrote its record."""

    scenario: str
    error: str
    recovered: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "recovered": self.recovered, "error": self.error}


DrillResult = DrillRecord | DrillFailure


@dataclass
class Drill:
    """One drill in progress: its scenario, events and evidence."""

    paths: ProjectPaths
    scenario: Scenario
    seed: int = 0
    record_dir: Path | None = None
    started: float = field(default_factory=time.perf_counter)
    events: list[tuple[str, float, float]] = field(default_factory=list)
    before: dict[str, str] = field(default_factory=dict)
    runs_before: set[str] = field(default_factory=set)
    injected: dict[str, Any] = field(default_factory=dict)
    detection: Report | None = None
    outcome: RecoveryOutcome | None = None
    final: Report | None = None
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    # The scoring services running before the drill (pids): any other is the drill's doing.
    services_before: set[int] = field(default_factory=set)

    @classmethod
    def start(cls, paths: ProjectPaths, name: str, seed: int = 0) -> Drill:
        """A drill of scenario `name`, its record under `reports/incidents/<name>/`."""
        chosen = scenario(paths.root, name)
        record = paths.reports / "incidents" / name
        record.mkdir(parents=True, exist_ok=True)
        (record / "record.json").unlink(missing_ok=True)  # the previous postmortem is in MLflow
        return cls(paths, chosen, seed, record)

    @property
    def folder(self) -> Path:
        """Where this drill's postmortem is written."""
        return self.record_dir or self.paths.reports / "incidents" / self.scenario.name

    def _timed(self, label: str, work: Any) -> Any:
        begin = time.perf_counter()
        result = work()
        self.events.append((label, begin - self.started, time.perf_counter() - begin))
        return result

    def _data_frame(self) -> pd.DataFrame | None:
        # deferred: pandas (~1 s) is imported only when this runs
        import pandas as pd

        target = self.scenario.target
        if self.scenario.family != "data" or not target:
            return None
        try:
            return pd.read_csv(self.paths.root / target)
        except Exception:  # a truncated or deleted file has no distribution to show
            return None

    def steady_state(self) -> Report:
        """Verify the healthy state and back up the MLflow store; refuse to drill a sick system."""
        report = self._timed("steady state", lambda: verify(self.paths))
        if (reason := unhealthy_reason(report)) is not None:
            raise MlvsError(reason)
        backup_mlflow_db(self.paths)
        self.before = tracked_hashes(self.paths.root)
        self.runs_before = run_ids(self.paths)
        self.services_before = {status.pid for status in live_services(self.paths).values()}
        if (frame := self._data_frame()) is not None:
            self.frames["before"] = frame
        return report

    def inject(self) -> dict[str, Any]:
        """Break the system as the scenario says."""
        with state_lock(self.paths):
            self.injected = self._timed(
                "inject", lambda: inject(self.paths, self.scenario, self.seed)
            )
        fault_point("drill:injected")
        if (frame := self._data_frame()) is not None:
            self.frames["during"] = frame
        return self.injected

    def detect(self) -> Report:
        """Run every check; the drill fails if nothing notices."""
        self.detection = self._timed("detect", lambda: verify(self.paths))
        return self.detection

    def recover(self) -> RecoveryOutcome:
        """Climb the recovery ladder (damaged bytes go to the record's evidence folder)."""
        # One folder per drill: evidence of earlier drills of the same scenario is kept,
        # also of one that finished within the same second.
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        folders = (self.record_dir or self.paths.state) / "evidence"
        evidence, count = folders / stamp, 1
        while evidence.exists():
            count += 1
            evidence = folders / f"{stamp}-{count}"
        self.outcome = self._timed("recover", lambda: recover(self.paths, evidence, self.detection))
        if (frame := self._data_frame()) is not None:
            self.frames["after"] = frame
        return self.outcome

    def verify_again(self) -> Verification:
        """Verify the steady state again and compare every tracked byte with the state before."""
        self.final = self._timed("verify", lambda: verify(self.paths))
        after = tracked_hashes(self.paths.root)
        changed = sorted(
            k for k in self.before.keys() | after.keys() if self.before.get(k) != after.get(k)
        )
        lost_runs = sorted(self.runs_before - run_ids(self.paths))
        serving = self._stop_services_started()
        return Verification(self.final.healthy, changed, lost_runs, not changed, serving)

    def _stop_services_started(self) -> dict[str, Any] | None:
        """Ask each scoring service the drill caused what it serves, then stop it; the first answer."""
        answered = None
        for alias, status in live_services(self.paths).items():
            if status.pid in self.services_before:
                continue
            if answered is None and status.port is not None:
                answered = {"alias": alias, "pid": status.pid, **served_model(status.port)}
            stop(self.paths, alias)
        return answered

    @property
    def detected(self) -> bool:
        return bool(self.detection and self.detection.findings)

    def write_record(self, verification: Verification) -> DrillRecord:
        """Write the postmortem's JSON record next to its executed notebook; return it."""
        timings = {label: duration for label, _, duration in self.events}
        findings = self.detection.findings if self.detection else []
        detection = findings[0] if findings else None
        outcome = self.outcome
        record = DrillRecord(
            scenario=self.scenario.name,
            family=self.scenario.family,
            description=self.scenario.description,
            injected=self.injected,
            detected=self.detected,
            detected_by=detection.check if detection else None,
            detection=str(detection) if detection else None,
            findings=[str(f) for f in findings],
            rung=outcome.rung if outcome else None,
            repairs=list(outcome.repairs) if outcome else [],
            evidence=[
                Path(e).relative_to(self.paths.root).as_posix()
                if Path(e).is_relative_to(self.paths.root)
                else e
                for e in (outcome.evidence if outcome else [])
            ],
            bytes_restored=sum(r.bytes_restored for r in outcome.repairs) if outcome else 0,
            time_to_detect_s=round(timings.get("detect", 0.0), 4),
            time_to_recover_s=round(timings.get("recover", 0.0), 4),
            verification=verification,
            timeline=[
                TimelineStep(label, round(start, 4), round(duration, 4))
                for label, start, duration in self.events
            ],
            recovered=bool(
                self.detected
                and outcome
                and outcome.healthy
                and verification.healthy
                and verification.byte_identical
                and not verification.lost_runs
                and self._serves_as_before(verification)
            ),
        )
        if self.scenario.family == "pipeline" and self.injected.get("failed_report"):
            failed = Path(self.injected["failed_report"])
            if failed.exists():
                shutil.copy2(failed, self.folder / f"failed-{failed.name}")
                record.failed_notebook = f"failed-{failed.name}"
        atomic_write_text(
            self.folder / "record.json",
            json.dumps(record.to_dict(), indent=2, sort_keys=True, default=str) + "\n",
        )
        return record

    def _serves_as_before(self, verification: Verification) -> bool:
        # A serving drill recovers only once a service answers with the version and bytes it served before.
        if self.scenario.family != "serving":
            return True
        served = verification.serving or {}
        return bool(
            served.get("version") == self.injected.get("served_version")
            and served.get("model_sha256") == self.injected.get("served_sha256")
        )

    def log_run(self, record: DrillRecord, timeline: Any) -> str:
        """Log the postmortem as an MLflow run of kind `incident`: its timings, record and timeline figure.

        Called once the drill is over: a run written while a drill breaks and restores
        the MLflow store could go with it. Returns the run's id.
        """

        return tracking.log_kind_run(
            self.paths,
            "03_incident",
            tracking.INCIDENT,
            params={
                "scenario": self.scenario.name,
                "family": self.scenario.family,
                "seed": self.seed,
            },
            metrics={
                "time_to_detect_s": record.time_to_detect_s,
                "time_to_recover_s": record.time_to_recover_s,
                "bytes_restored": record.bytes_restored,
                "recovered": float(record.recovered),
            },
            details={
                "incident": self.scenario.name,
                "detected_by": record.detected_by,
                "rung": record.rung,
            },
            figures={"timeline": timeline},
            files=[(self.folder / "record.json", "postmortem")],
        )


def unhealthy_reason(report: Report) -> str | None:
    """Why a drill is refused on this state (the reason and the fix), or None when it is healthy."""
    if report.healthy:
        return None
    shown = "; ".join(str(f) for f in report.findings[:3])
    more = f" and {len(report.findings) - 3} more" if len(report.findings) > 3 else ""
    return (
        f"refused: the system is not healthy before the drill ({shown}{more}); "
        "run `mlvs recover` first, then drill again"
    )


@locked
def run_drill(paths: ProjectPaths, name: str, seed: int = 0) -> DrillRecord:
    """Every step of a drill in one call (the notebook calls them one by one)."""
    drill = Drill.start(paths, name, seed)
    drill.steady_state()
    drill.inject()
    drill.detect()
    drill.recover()
    return drill.write_record(drill.verify_again())


def drill_many(
    paths: ProjectPaths, names: list[str], seed: int = 0
) -> tuple[list[DrillResult], Path]:
    """Run `03_incident.ipynb` once per scenario (each a postmortem), then rebuild the reports index."""
    for name in names:  # refuse an unknown or inapplicable scenario before any drill runs
        reason = not_applicable(paths, scenario(paths.root, name))
        if reason is not None:
            raise BadInputError(reason)
    resolve_notebook(paths, "03_incident")  # a project without it cannot drill at all: say so first
    records: list[DrillResult] = []
    with state_lock(paths):  # every drill as a whole, and the index of their postmortems
        for name in names:
            # Refused here, before the notebook starts, so a sick system gets the reason on
            # the console and no MLflow run or report folder for a drill that never ran.
            if (reason := unhealthy_reason(verify(paths))) is not None:
                records.append(DrillFailure(name, reason))
                continue
            folder = paths.reports / "incidents" / name
            try:
                run_notebook(
                    paths,
                    "03_incident",
                    {"scenario": name, "seed": seed},
                    output_dir=folder,
                    progress=False,
                )
            except NotebookFailedError as exc:
                records.append(DrillFailure(name, str(exc)))
                continue
            records.append(_read_record(folder / "record.json"))
        return records, write_index(paths)


def _read_record(path: Path) -> DrillRecord:
    """The record a drill's notebook wrote; refused in one line when it is not one."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise IntegrityError(
            f"{path} cannot be read as a drill record ({error}); run the drill again"
        ) from None
    return DrillRecord.from_dict(document, str(path))
