"""`mlvs verify`: check the current state and name everything that is wrong.

Each check returns findings: which check, which artifact, what was expected and
what was found. The checks never change anything and never trust a file before
its hash: the model is hashed before it is loaded, DVC's cache objects are
re-hashed before anyone would copy from them.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from mlvs import dvcstore
from mlvs.errors import BadInputError, IntegrityError, MlvsError
from mlvs.logs import get_logger
from mlvs.paths import ProjectPaths

log = get_logger("verify")

METRIC_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Finding:
    """One thing found wrong."""

    check: str
    artifact: str
    expected: str
    actual: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.artifact}: expected {self.expected}, found {self.actual}"


@dataclass
class Report:
    """The outcome of `verify`: findings, and how long each check took."""

    findings: list[Finding] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "findings": [asdict(f) for f in self.findings],
                "timings": {k: round(v, 4) for k, v in self.timings.items()}}


def recorded_files(paths: ProjectPaths, store: dvcstore.ObjectStore) -> tuple[dict[str, str], list[Finding]]:
    """relpath -> MD5 of every file DVC recorded (directory outputs expanded through their `.dir` objects)."""
    files: dict[str, str] = {}
    findings: list[Finding] = []
    for output, md5 in sorted(dvcstore.lock_hashes(paths).items()):
        if not md5.endswith(".dir"):
            files[output] = md5
            continue
        listing = _read_dir_object(store, md5)
        if listing is None:
            findings.append(Finding("dvc_cache", f"{output} ({md5})", "the directory listing in the DVC cache or remote",
                                    "missing or unreadable in both"))
            continue
        for entry in listing:
            files[f"{output}/{entry['relpath']}"] = entry["md5"]
    return files, findings


def _read_dir_object(store: dvcstore.ObjectStore, md5: str) -> list[dict[str, str]] | None:
    name = md5.removesuffix(".dir")
    for candidate in (store.cache_path(md5), store.remote_path(md5)):
        if candidate is None or not candidate.is_file():
            continue
        payload = candidate.read_bytes()
        import hashlib

        if hashlib.md5(payload, usedforsecurity=False).hexdigest() != name:
            continue
        try:
            return json.loads(payload)
        except ValueError:
            continue
    return None


def check_tracked_files(paths: ProjectPaths, store: dvcstore.ObjectStore, hashes: dvcstore.HashCache) -> list[Finding]:
    """Every DVC-tracked file against the MD5 `dvc.lock` recorded; unexpected extra files too."""
    recorded, findings = recorded_files(paths, store)
    for rel, md5 in recorded.items():
        path = paths.root / rel
        if not path.is_file():
            findings.append(Finding("file_hash", rel, f"md5 {md5}", "the file is missing"))
            continue
        actual = hashes.file_hash(rel).md5
        if actual != md5:
            findings.append(Finding("file_hash", rel, f"md5 {md5}", f"md5 {actual}"))
    for output, md5 in dvcstore.lock_hashes(paths).items():
        if md5.endswith(".dir"):
            for rel in dvcstore.output_files(paths.root, output):
                if rel not in recorded:
                    findings.append(Finding("file_hash", rel, "no such file in the recorded output", "an extra file"))
    return findings


def check_schema(paths: ProjectPaths) -> list[Finding]:
    """The raw and processed data against the declared schema."""
    from mlvs.data import read_customers, validate_schema

    findings = []
    for path in (paths.raw_data, paths.train_data, paths.test_data):
        rel = path.relative_to(paths.root).as_posix()
        if not path.is_file():
            continue  # reported by the hash check
        try:
            problems = validate_schema(read_customers(path))
        except MlvsError as exc:
            problems = [str(exc)]
        for problem in problems:
            findings.append(Finding("schema", rel, "a frame that satisfies the schema", problem))
    return findings


def check_model(paths: ProjectPaths) -> tuple[list[Finding], Any]:
    """The model file's hash against its card, then (only then) its golden predictions."""
    from mlvs.modelio import golden_mismatches, load_verified_model

    rel = paths.model_file.relative_to(paths.root).as_posix()
    if not paths.model_card.is_file():
        return [], None  # nothing trained yet, or reported by the hash check
    try:
        model = load_verified_model(paths)
    except IntegrityError as exc:
        return [Finding("model_hash", rel, "the SHA-256 in model_card.json, loadable with trusted types", str(exc))], None
    mismatches = golden_mismatches(model, paths)
    if mismatches:
        return [Finding("golden_predictions", rel, "the recorded golden predictions",
                        f"{len(mismatches)} differ, first: {mismatches[0]}")], model
    return [], model


def check_metrics(paths: ProjectPaths, model: Any) -> list[Finding]:
    """The model's test metrics, recomputed, within tolerance of `reports/metrics.json`."""
    from mlvs.data import features_and_target, read_customers
    from mlvs.modeling import holdout_metrics
    from mlvs.params import load_stage

    if model is None or not paths.metrics.is_file() or not paths.test_data.is_file():
        return []
    try:
        recorded = json.loads(paths.metrics.read_text(encoding="utf-8"))
        threshold = load_stage("train", paths.root).decision_threshold
        X, y = features_and_target(read_customers(paths.test_data))
        actual = holdout_metrics(y, model.predict_proba(X)[:, 1], threshold)
    except (MlvsError, ValueError, KeyError) as exc:
        return [Finding("metrics", "reports/metrics.json", "metrics recomputable on the test set", str(exc))]
    return [
        Finding("metrics", f"reports/metrics.json:{key}", f"{recorded.get(key)!r}", f"{value!r}")
        for key, value in actual.items()
        if recorded.get(key) is None or abs(recorded[key] - value) > METRIC_TOLERANCE
    ]


def check_registry(paths: ProjectPaths) -> list[Finding]:
    """Every alias of the registered model points at an existing version."""
    from mlvs.params import load_stage
    from mlvs.registry import read_registry

    try:
        name = load_stage("train", paths.root).registry.model_name
    except MlvsError:
        return []
    state = read_registry(paths, name, None)
    if state.error:
        return [Finding("registry", name, "a readable registry", state.error)]
    return [
        Finding("registry", f"{name}@{alias}", f"version {info.version} to exist", "no such version (deleted?)")
        for alias, info in sorted(state.aliases.items())
        if info.run_id is None and info.source is None
    ]


def check_mlflow_store(paths: ProjectPaths) -> list[Finding]:
    """The embedded MLflow database: present when runs were made, and passing SQLite's own check."""
    from mlvs.backups import latest_backup
    from mlvs.tracking import tracking_uri

    uri = tracking_uri(paths)
    if not uri.startswith("sqlite:///"):
        return []
    database = Path(uri.removeprefix("sqlite:///"))
    rel = database.name
    if not database.is_file():
        if latest_backup(paths) is not None:
            return [Finding("mlflow_store", rel, "the MLflow database (a backup of it exists)", "the file is missing")]
        return []
    try:
        with sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True, timeout=10) as db:
            result = db.execute("PRAGMA quick_check").fetchone()[0]
            db.execute("SELECT count(*) FROM runs").fetchone()
    except sqlite3.Error as exc:
        return [Finding("mlflow_store", rel, "an SQLite database that passes its integrity check", f"{exc}")]
    if result != "ok":
        return [Finding("mlflow_store", rel, "integrity_check ok", str(result)[:200])]
    return []


def check_dvc_cache(paths: ProjectPaths, store: dvcstore.ObjectStore, hashes: dvcstore.HashCache) -> list[Finding]:
    """Every cache object `dvc.lock` needs: present, and its bytes re-hashed to its name."""
    recorded, _ = recorded_files(paths, store)
    findings = []
    cache_root = paths.root
    for rel, md5 in sorted(recorded.items()):
        cached = store.cache_path(md5)
        label = f"{rel} (cache object {md5[:12]}…)"
        if not cached.is_file():
            findings.append(Finding("dvc_cache", label, "the object in the DVC cache", "missing"))
            continue
        try:
            relative = cached.resolve().relative_to(cache_root.resolve()).as_posix()
            actual = hashes.file_hash(relative).md5
        except ValueError:  # a cache outside the project: hash it directly
            actual = dvcstore.hash_stream(dvcstore.read_chunks(cached)).md5
        if actual != md5:
            findings.append(Finding("dvc_cache", label, f"md5 {md5}", f"md5 {actual}"))
    return findings


def verify(paths: ProjectPaths, checks: tuple[str, ...] | None = None) -> Report:
    """Run every check (or the named ones) and collect the findings in order."""
    report = Report()
    store = dvcstore.ObjectStore(paths)
    hashes = dvcstore.HashCache(paths)
    model_holder: dict[str, Any] = {}

    def model_check() -> list[Finding]:
        found, model_holder["model"] = check_model(paths)
        return found

    plan: list[tuple[str, Callable[[], list[Finding]]]] = [
        ("file_hash", lambda: check_tracked_files(paths, store, hashes)),
        ("schema", lambda: check_schema(paths)),
        ("model", model_check),
        ("metrics", lambda: check_metrics(paths, model_holder.get("model"))),
        ("mlflow_store", lambda: check_mlflow_store(paths)),
        # A broken store is one finding, not a second one from reading through it.
        ("registry", lambda: [] if any(f.check == "mlflow_store" for f in report.findings) else check_registry(paths)),
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


CHECKS = ("file_hash", "schema", "model", "metrics", "mlflow_store", "registry", "dvc_cache")


def parse_checks(text: str | None) -> tuple[str, ...] | None:
    """`--only a,b` for verify, refusing unknown check names."""
    if not text:
        return None
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise BadInputError(f"unknown check(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    return names
