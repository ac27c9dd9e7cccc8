"""`mlvs verify`: check the current state and name everything that is wrong.

Each check returns findings: which check, which artifact, what was expected and
what was found. The checks never change anything and never trust a file before
its hash: the model is hashed before it is loaded, DVC's cache objects are
re-hashed before anyone would copy from them.

The deep checks (schema, model and golden predictions, metrics) are pure
functions of bytes and code: the same data, model, card, golden sample, metrics
and parameters, read by the same interpreter, packages and check code, give the
same verdict. So a deep check that passed is remembered by a fingerprint of all
of those (in `.mlvs/hashes.sqlite`, beside the file hashes it is built from), and
is not run again while the fingerprint holds. The file hashes behind a
fingerprint come from the hash cache only while a file's size, times and inode
are unchanged, so a file whose bytes changed since its last deep check always
gets that check again.

The check code is named by the modules themselves (imported here, not spelled
as strings), and each one's source is read from the file it was loaded from: a
module that moves or is renamed breaks the import above, never the fingerprint.
"""

from __future__ import annotations

import inspect
import json
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import mlvs.errors
import mlvs.ml.data
import mlvs.ml.decision
import mlvs.ml.features
import mlvs.ml.modeling
import mlvs.ml.modelio
import mlvs.ml.params
import mlvs.ops.health
import mlvs.paths
from mlvs._io import hash_file
from mlvs.backends.dvc.hashcache import HashCache
from mlvs.backends.dvc.objects import ObjectStore
from mlvs.backends.dvc.outputs import dvc_outputs
from mlvs.backends.mlflow.backups import latest_backup
from mlvs.backends.mlflow.history import AliasMove
from mlvs.backends.mlflow.registry import read_alias_history, read_registry
from mlvs.backends.mlflow.store import server_problem, settle_hot_journal, tracking_uri
from mlvs.backends.mlflow.tracking import unfinished_runs
from mlvs.backends.uris import safe_uri
from mlvs.errors import BadInputError, IntegrityError, MlvsError
from mlvs.ml.data import features_and_target, read_customers, validate_schema
from mlvs.ml.modeling import holdout_metrics
from mlvs.ml.modelio import golden_mismatches, load_verified_model, read_card
from mlvs.ml.params import load_stage
from mlvs.ops.health import (
    PassedChecks,
    check_pipeline,
    check_tracked_files,
    code_identity,
    metrics_inputs,
    metrics_stage_stale,
    model_inputs,
    schema_inputs,
)
from mlvs.ops.recorded import STALE, Finding, recorded_files
from mlvs.ops.serve.status import died_without_stopping, read_status, status_file
from mlvs.paths import ProjectPaths

METRIC_TOLERANCE = 1e-6


@dataclass
class Report:
    """The outcome of `verify`: findings, and how long each check took."""

    findings: list[Finding] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # Deep checks not run again because they passed on exactly these bytes and code.
    reused: list[str] = field(default_factory=list)
    # Checks not run, and why (the metrics of a stale stage describe inputs that are gone).
    skipped: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.findings

    @property
    def damaged(self) -> bool:
        """Whether any finding is damage (`mlvs recover` territory), not only a stale pipeline."""
        return any(f.kind != STALE for f in self.findings)

    @property
    def stale(self) -> bool:
        """Whether some stage's outputs were produced from params or code that changed since."""
        return any(f.kind == STALE for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "damaged": self.damaged,
            "stale": self.stale,
            "findings": [asdict(f) for f in self.findings],
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "reused": list(self.reused),
            "skipped": list(self.skipped),
        }


# The modules whose code decides a deep check's verdict: a change to any of them re-runs every deep check.
# `features` runs inside the loaded model (its first step); `errors` decides what a check catches;
# `paths` and `health` decide which files a check reads. A test traces the deep checks and fails if any other
# mlvs module's code runs in them.
# `health.DEEP_CHECK_MODULES` names the same modules, in this order, for the quick checks.
DEEP_CHECK_CODE: tuple[ModuleType, ...] = (
    mlvs.ml.data,
    mlvs.ml.decision,
    mlvs.ml.features,
    mlvs.ml.modeling,
    mlvs.ml.modelio,
    mlvs.ml.params,
    mlvs.errors,
    mlvs.paths,
    mlvs.ops.health,
    sys.modules[__name__],
)


def _module_source(module: ModuleType) -> bytes:
    """The source of `module`, read from the file it was loaded from; an error when there is none."""
    try:
        location = inspect.getsourcefile(module) or getattr(module, "__file__", None)
    except TypeError:  # a built-in module has no file
        location = None
    if not location or not location.endswith(".py"):
        raise IntegrityError(
            f"{module.__name__} (code of verify's deep checks) was loaded from "
            f"{location or 'no file'}, not from its source; reinstall mlvs with its sources "
            "so that its checks can be fingerprinted"
        )
    try:
        return Path(location).read_bytes()
    except OSError as error:
        raise IntegrityError(
            f"the source of {module.__name__} ({location}) cannot be read ({error.strerror or error}); "
            "reinstall mlvs or fix its permissions so that verify's deep checks can be fingerprinted"
        ) from None


def _code_identity() -> bytes:
    """The interpreter, the installed packages and mlvs's check code, as bytes to fingerprint.

    The same identity `health.named_code_identity` reads by module name, here from
    the modules imported above (a test holds the two equal).
    """
    return code_identity([(m.__name__, _module_source(m)) for m in DEEP_CHECK_CODE])


def check_schema(
    paths: ProjectPaths, passed: PassedChecks | None = None, report: Report | None = None
) -> list[Finding]:
    """The raw and processed data against the declared schema (each file unless it passed on these bytes)."""
    findings = []
    for path in schema_inputs(paths):
        rel = path.relative_to(paths.root).as_posix()
        if not path.is_file():
            continue  # reported by the hash check
        fingerprint = passed.fingerprint("schema", [path]) if passed is not None else ""
        if passed is not None and passed.passed(fingerprint):
            if report is not None:
                report.reused.append(f"schema:{rel}")
            continue
        try:
            problems = validate_schema(read_customers(path))
        except MlvsError as exc:
            problems = [str(exc)]
        for problem in problems:
            findings.append(Finding("schema", rel, "a frame that satisfies the schema", problem))
        if passed is not None and not problems:
            passed.record("schema", fingerprint, [path])
    return findings


def check_model(
    paths: ProjectPaths, passed: PassedChecks | None = None, report: Report | None = None
) -> tuple[list[Finding], Any]:
    """The model file's hash against its card, then (only then) its golden predictions.

    Returns the findings and the loaded model (None when it was not loaded: broken,
    or not needed because this model, card and golden sample passed before).
    """
    rel = paths.model_file.relative_to(paths.root).as_posix()
    if not paths.model_card.is_file():
        return [], None  # nothing trained yet, or reported by the hash check
    inputs = model_inputs(paths)
    fingerprint = passed.fingerprint("model", inputs) if passed is not None else ""
    if passed is not None and passed.passed(fingerprint):
        if report is not None:
            report.reused.append(f"model:{rel}")
        return [], None
    try:
        model = load_verified_model(paths)
    except IntegrityError as exc:
        return [
            Finding(
                "model_hash",
                rel,
                "the SHA-256 in model_card.json, loadable with trusted types",
                str(exc),
            )
        ], None
    mismatches = golden_mismatches(model, paths)
    if mismatches:
        return [
            Finding(
                "golden_predictions",
                rel,
                "the recorded golden predictions",
                f"{len(mismatches)} differ, first: {mismatches[0]}",
            )
        ], model
    if passed is not None:
        passed.record("model", fingerprint, inputs)
    return [], model


def recorded_threshold(paths: ProjectPaths) -> float:
    """The decision threshold the model was evaluated at: its card's, or a number in params.

    A card written before cards recorded it falls back to a numeric threshold in params.
    """
    recorded = read_card(paths).get("decision_threshold")
    if recorded is not None:
        return float(recorded)
    threshold = load_stage("train", paths.root).decision_threshold
    if threshold == "value":
        raise IntegrityError(
            f"{paths.model_card.name} records no decision_threshold; run `mlvs pipeline --force` to retrain"
        )
    return float(threshold)


def check_metrics(
    paths: ProjectPaths,
    model: Any,
    passed: PassedChecks | None = None,
    report: Report | None = None,
) -> list[Finding]:
    """The model's test metrics, recomputed, within tolerance of `reports/metrics.json`.

    `model` may be a function that loads it: then it is loaded only when the metrics
    did not pass before on these bytes.
    """
    if model is None or not paths.metrics.is_file() or not paths.test_data.is_file():
        return []
    inputs = metrics_inputs(paths)
    fingerprint = passed.fingerprint("metrics", inputs) if passed is not None else ""
    if passed is not None and passed.passed(fingerprint):
        if report is not None:
            report.reused.append("metrics:reports/metrics.json")
        return []
    if not hasattr(model, "predict_proba"):
        model = model()
        if model is None:
            return []  # the model could not be loaded: the model check says why
    try:
        recorded = json.loads(paths.metrics.read_text(encoding="utf-8"))
        threshold = recorded_threshold(paths)
        X, y = features_and_target(read_customers(paths.test_data))
        actual = holdout_metrics(y, model.predict_proba(X)[:, 1], threshold)
    except (MlvsError, ValueError, KeyError) as exc:
        return [
            Finding(
                "metrics", "reports/metrics.json", "metrics recomputable on the test set", str(exc)
            )
        ]
    findings = [
        Finding("metrics", f"reports/metrics.json:{key}", f"{recorded.get(key)!r}", f"{value!r}")
        for key, value in actual.items()
        if recorded.get(key) is None or abs(recorded[key] - value) > METRIC_TOLERANCE
    ]
    if passed is not None and not findings:
        passed.record("metrics", fingerprint, inputs)
    return findings


def check_registry(paths: ProjectPaths) -> list[Finding]:
    """Every alias of the registered model points at an existing version."""

    try:
        name = load_stage("train", paths.root).registry.model_name
    except MlvsError:
        return []
    state = read_registry(paths, name, None)
    if state.error:
        return [Finding("registry", name, "a readable registry", state.error)]
    findings = [
        Finding(
            "registry",
            f"{name}@{alias}",
            f"version {info.version} to exist",
            "no such version (deleted?)",
        )
        for alias, info in sorted(state.aliases.items())
        if info.run_id is None and info.source is None
    ] + serving_findings(paths, name, state.alias_versions())
    forced = forced_champion(paths, name, state.alias_versions().get("champion"))
    if forced is not None:
        undo = (
            f"`mlvs rollback {forced.snapshot} --only registry`"
            if forced.snapshot
            else "`mlvs recover`"
        )
        findings.append(
            Finding(
                "registry",
                f"{name}@champion",
                "a champion that passed the deploy gate",
                f"version {forced.to_version} was deployed with --force past the gate's refusal "
                f"at {forced.time}; undo it with {undo} or `mlvs recover`",
            )
        )
    return findings


# The commands whose alias moves are decisions; a rollback or a recovery puts back an earlier one.
_DECIDING_COMMANDS = ("pipeline", "deploy")


def forced_champion(paths: ProjectPaths, name: str, champion: str | None) -> AliasMove | None:
    """The forced deploy that made today's champion champion, if that is how it got the place.

    The newest decision (pipeline or deploy) that moved `champion` to this version counts:
    a rollback to a state with a forced champion brings the finding back with it.
    """
    if champion is None:
        return None
    for move in reversed(read_alias_history(paths, name).moves):
        if (
            move.alias == "champion"
            and move.to_version == champion
            and move.command in _DECIDING_COMMANDS
        ):
            return move if move.forced else None
    return None


def serving_findings(paths: ProjectPaths, name: str, aliases: dict[str, str]) -> list[Finding]:
    """What the scoring service of each alias reports: a refusal, or that it died without stopping.

    Read from the status file the service keeps for each alias it follows: a version it
    refused (hash or golden predictions) while the alias still points at it, the served
    version's file changed on disk under it, or its process gone without the clean stop
    that marks the file stopped. A refusal of a version the alias has left since is
    history, not a finding.
    """
    findings = []
    for alias, version in sorted(aliases.items()):
        try:
            status = read_status(paths, alias)
        except ValueError as problem:
            where = status_file(paths, alias).relative_to(paths.root).as_posix()
            findings.append(
                Finding(
                    "serving",
                    where,
                    "the scoring service's status file",
                    str(problem),
                    fix=f"delete {where}; `mlvs serve` writes it again",
                )
            )
            continue
        if status is None or status.model_name != name:
            continue
        if died_without_stopping(status):
            served = f"version {status.serving.version}" if status.serving else "no version yet"
            where = f"{status.host}:{status.port}" if status.host and status.port else "its port"
            findings.append(
                Finding(
                    "serving",
                    f"{name}@{alias} scoring service (pid {status.pid})",
                    "a scoring service that runs, or was stopped cleanly",
                    f"its process is gone without a clean stop (killed, or the machine went down) "
                    f"while it served {served}",
                    fix=f"`mlvs recover` starts it again on {where}",
                )
            )
            continue
        refused = status.refused
        if refused is not None and refused.version == version:
            findings.append(
                Finding(
                    "serving",
                    f"{name}@{alias} (version {version})",
                    "a version the scoring service verified (hash, then golden predictions)",
                    f"refused by `mlvs serve` at {refused.at}: {refused.reason}",
                    fix=(
                        "`mlvs recover` puts the file back; the service then goes on with it"
                        if refused.kind == "file"
                        else "point the alias back at a good version (`mlvs rollback NAME --only registry`)"
                    ),
                )
            )
    return findings


def check_mlflow_store(paths: ProjectPaths) -> list[Finding]:
    """The embedded MLflow database present and passing SQLite's own check; or the tracking server answering."""
    uri = tracking_uri(paths)
    if not uri.startswith("sqlite:///"):
        # No database here to check (nor to back up): the server must answer instead.
        return _tracking_server_findings(paths)
    database = Path(uri.removeprefix("sqlite:///"))
    rel = database.name
    if not database.is_file():
        if latest_backup(paths) is not None:
            return [
                Finding(
                    "mlflow_store",
                    rel,
                    "the MLflow database (a backup of it exists)",
                    "the file is missing",
                )
            ]
        return []
    try:
        settle_hot_journal(database)
        with sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True, timeout=10) as db:
            result = db.execute("PRAGMA quick_check").fetchone()[0]
            db.execute("SELECT count(*) FROM runs").fetchone()
    except sqlite3.Error as exc:
        return [
            Finding(
                "mlflow_store", rel, "an SQLite database that passes its integrity check", f"{exc}"
            )
        ]
    if result != "ok":
        return [Finding("mlflow_store", rel, "integrity_check ok", str(result)[:200])]
    return []


def _tracking_server_findings(paths: ProjectPaths) -> list[Finding]:
    """A tracking server: it answers, and no run it lost (the server gone mid-run) is left open."""
    problem = server_problem(paths)
    if problem is not None:
        return [
            Finding(
                "mlflow_store",
                safe_uri(tracking_uri(paths)),
                "a reachable MLflow tracking server",
                problem,
            )
        ]
    return [
        Finding(
            "mlflow_store",
            f"run {record['run_id']} ({record.get('notebook')})",
            "closed, its notebook logged, nothing it registered left behind",
            "left open when the tracking server was unreachable",
        )
        for record in unfinished_runs(paths)
    ]


def check_dvc_cache(paths: ProjectPaths, store: ObjectStore, hashes: HashCache) -> list[Finding]:
    """Every cache object `dvc.lock` needs: present, and its bytes re-hashed to its name."""
    recorded, _ = recorded_files(paths, store)
    findings = []
    cache_root = paths.root
    # An output DVC does not cache (metrics, `cache: false`) comes with git: a fresh clone has no object for it.
    uncached = {o.path for o in dvc_outputs(paths) if not o.cache}
    for rel, md5 in sorted(recorded.items()):
        if rel in uncached:
            continue
        cached = store.cache_path(md5)
        label = f"{rel} (cache object {md5[:12]}…)"
        if not cached.is_file():
            findings.append(Finding("dvc_cache", label, "the object in the DVC cache", "missing"))
            continue
        try:
            relative = cached.resolve().relative_to(cache_root.resolve()).as_posix()
            actual = hashes.file_hash(relative).md5
        except ValueError:  # a cache outside the project: hash it directly
            actual = hash_file(cached).md5
        if actual != md5:
            findings.append(Finding("dvc_cache", label, f"md5 {md5}", f"md5 {actual}"))
    return findings


def verify(
    paths: ProjectPaths, checks: tuple[str, ...] | None = None, reuse_passed: bool = True
) -> Report:
    """Run every check (or the named ones) and collect the findings in order.

    A deep check that passed before on exactly the same bytes and code is not run
    again (`reuse_passed=False` runs every one).
    """
    report = Report()
    store = ObjectStore(paths)
    hashes = HashCache(paths)
    passed = PassedChecks(paths, hashes, reuse=reuse_passed, code=_code_identity)
    model_holder: dict[str, Any] = {}

    def model_check() -> list[Finding]:
        found, model_holder["model"] = check_model(paths, passed, report)
        model_holder["findings"] = found
        return found

    def load_model() -> Any:
        # The model check did not load it: either it passed before (load it now) or it was not run.
        if model_holder.get("findings"):
            return None  # broken: the model check said so
        try:
            return load_verified_model(paths)
        except IntegrityError as exc:
            if "findings" in model_holder:  # it passed a moment ago: changed since, so say so
                rel = paths.model_file.relative_to(paths.root).as_posix()
                report.findings.append(
                    Finding(
                        "model_hash",
                        rel,
                        "the SHA-256 in model_card.json, loadable with trusted types",
                        str(exc),
                    )
                )
            return None

    def metrics_check() -> list[Finding]:
        stage = metrics_stage_stale(paths, report.findings)
        if stage is not None:
            report.skipped.append(
                f"metrics: stage {stage} is stale, so its metrics describe the inputs dvc.lock "
                "recorded, not today's; `mlvs pipeline` brings them together"
            )
            return []
        return check_metrics(
            paths,
            model_holder.get("model") if model_holder.get("model") is not None else load_model,
            passed,
            report,
        )

    plan: list[tuple[str, Callable[[], list[Finding]]]] = [
        ("file_hash", lambda: check_tracked_files(paths, store, hashes)),
        ("pipeline", lambda: check_pipeline(paths, hashes)),
        ("schema", lambda: check_schema(paths, passed, report)),
        ("model", model_check),
        ("metrics", metrics_check),
        ("mlflow_store", lambda: check_mlflow_store(paths)),
        # A broken store is one finding, not a second one from reading through it.
        (
            "registry",
            lambda: (
                []
                if any(f.check == "mlflow_store" for f in report.findings)
                else check_registry(paths)
            ),
        ),
        ("dvc_cache", lambda: check_dvc_cache(paths, store, hashes)),
    ]
    try:
        for name, run in plan:
            if checks and name not in checks:
                continue
            started = time.perf_counter()
            report.findings.extend(run())
            report.timings[name] = time.perf_counter() - started
    finally:
        hashes.close()
    return report


CHECKS = (
    "file_hash",
    "pipeline",
    "schema",
    "model",
    "metrics",
    "mlflow_store",
    "registry",
    "dvc_cache",
)


def parse_checks(text: str | None) -> tuple[str, ...] | None:
    """`--only a,b` for verify, refusing unknown check names."""
    if not text:
        return None
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise BadInputError(
            f"unknown check(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}"
        )
    return names
