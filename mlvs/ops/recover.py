"""`mlvs recover`: repair what `verify` finds by climbing a ladder of sources.

Rungs, tried in order, each followed by a verification of what it repaired:
1. local backup: a verified copy already on this machine (the newest MLflow
   database backup; for a damaged cache object, the workspace file whose bytes
   still match; for a dangling alias, the alias as the database backup has it);
2. DVC cache: the object re-hashed before it is trusted;
3. DVC remote: fetched, hashed, and the cache repaired with it;
4. snapshot restore: the newest snapshot's registry state (aliases);
5. re-run of the failed stage from the last good inputs (the pipeline is
   deterministic, so it rebuilds the recorded bytes).

Nothing is deleted: a damaged file or cache object is moved into the incident's
record. On a healthy system recovery changes nothing.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

from mlvs.backends.dvc.hashcache import HashCache
from mlvs.backends.dvc.objects import ObjectStore
from mlvs.backends.dvc.outputs import dvc_outputs
from mlvs.backends.mlflow.backups import latest_backup, restore_mlflow_db
from mlvs.backends.mlflow.history import MoveReason
from mlvs.backends.mlflow.registry import read_registry, set_aliases
from mlvs.backends.mlflow.tracking import settle_unfinished_runs
from mlvs.errors import MlvsError
from mlvs.logs import get_logger
from mlvs.ml.params import load_stage
from mlvs.ops.pipeline import run_stage
from mlvs.ops.recorded import recorded_files
from mlvs.ops.repair import (
    RecoveryOutcome,
    Repair,
    _cache_object_md5,
    _install_copy,
    _keep_evidence,
    evidence_dir,
    restore_recorded_files,
)
from mlvs.ops.serve.status import died_without_stopping, read_status, status_dir
from mlvs.ops.serve.supervise import LOOPBACK, launch, wait_for_status
from mlvs.ops.snapshot.read import list_snapshots, show_snapshot
from mlvs.ops.verify import Report, forced_champion, verify
from mlvs.paths import ProjectPaths
from mlvs.state.interrupted import (
    RecoveryReport,
    recover_interrupted,
    remove_workspace_leftovers,
)
from mlvs.state.journal import Journal
from mlvs.state.lock import locked

log = get_logger("recover")


def repair_cache(paths: ProjectPaths, evidence: Path, outcome: RecoveryOutcome) -> None:
    """Replace missing or corrupt cache objects: from the workspace copy if it matches, else the remote."""
    store = ObjectStore(paths)
    recorded, _ = recorded_files(paths, store)
    hashes = HashCache(paths)
    try:
        intact = {
            md5
            for md5 in set(recorded.values())
            if store.cache_path(md5).is_file()
            and _cache_object_md5(paths, hashes, store.cache_path(md5)) == md5
        }
        for rel, md5 in sorted(recorded.items()):
            cached = store.cache_path(md5)
            if md5 in intact:
                continue
            if cached.is_file():
                _keep_evidence(cached, evidence, outcome, f"cache-{md5}")
            workspace = paths.root / rel
            if workspace.is_file() and _install_copy(workspace, cached, md5, hashes):
                outcome.repairs.append(
                    Repair(f"{rel} (cache object)", "local_backup", cached.stat().st_size)
                )
                intact.add(md5)
                continue
            remote = store.remote_path(md5)
            if (
                remote is not None
                and remote.is_file()
                and _install_copy(remote, cached, md5, hashes)
            ) or store.fetch_object(md5):
                outcome.repairs.append(
                    Repair(f"{rel} (cache object)", "dvc_remote", cached.stat().st_size)
                )
                intact.add(md5)
    finally:
        hashes.close()


def repair_mlflow_store(paths: ProjectPaths, evidence: Path, outcome: RecoveryOutcome) -> None:
    """Put the newest good backup of the MLflow database in place; keep the damaged one as evidence."""
    # A tracking server that is back: close the runs it lost and withdraw what they half-registered.
    outcome.repairs.extend(Repair(label, "local_backup") for label in settle_unfinished_runs(paths))
    database = paths.mlflow_db
    if database.exists():
        evidence.mkdir(parents=True, exist_ok=True)
    used = restore_mlflow_db(paths, evidence_dir=evidence if database.exists() else None)
    if used is not None:
        if (evidence / database.name).exists():
            outcome.evidence.append(str(evidence / database.name))
        outcome.repairs.append(Repair(database.name, "local_backup", database.stat().st_size))


def repair_aliases(paths: ProjectPaths, outcome: RecoveryOutcome) -> None:
    """Point dangling aliases back where the newest database backup (else the newest snapshot) had them."""
    name = load_stage("train", paths.root).registry.model_name
    state = read_registry(paths, name, None)
    current = {alias: info.version for alias, info in state.aliases.items()}
    dangling = {
        alias
        for alias, info in state.aliases.items()
        if info.run_id is None and info.source is None
    }
    if not dangling:
        return
    wanted, rung = dict(current), None
    backup = latest_backup(paths)
    if backup is not None:
        with sqlite3.connect(f"{backup.resolve().as_uri()}?mode=ro", uri=True) as db:
            known = dict(
                db.execute(
                    "SELECT alias, version FROM registered_model_aliases WHERE name = ?", (name,)
                )
            )
        if dangling <= set(known):
            wanted.update({alias: str(known[alias]) for alias in dangling})
            rung = "local_backup"
    rung_snapshot = None
    if rung is None:
        for manifest in sorted(list_snapshots(paths), key=lambda m: m.created_at, reverse=True):
            aliases = manifest.registry.aliases if manifest.registry else {}
            if dangling <= set(aliases):
                wanted.update({alias: str(aliases[alias].version) for alias in dangling})
                rung, rung_snapshot = "snapshot_restore", manifest.name
                break
    if rung is None:
        return
    try:
        snapshot = rung_snapshot if rung == "snapshot_restore" else None
        set_aliases(
            paths,
            name,
            wanted,
            expected=current,
            why=MoveReason(
                "recover",
                f"dangling alias(es) {', '.join(sorted(dangling))} put back "
                + (
                    "as the newest MLflow database backup had them"
                    if rung == "local_backup"
                    else f"as snapshot {snapshot} recorded them"
                ),
                snapshot,
            ),
        )
        outcome.repairs.extend(Repair(f"{name}@{alias}", rung) for alias in sorted(dangling))
    except Exception as exc:  # a version gone for good: leave the finding for the report
        log.warning("could not repair the aliases of %s: %s", name, exc)


def repair_forced_champion(paths: ProjectPaths, outcome: RecoveryOutcome) -> None:
    """Put `champion` back where the snapshot taken before a forced deploy had it (the snapshot rung)."""
    name = load_stage("train", paths.root).registry.model_name
    state = read_registry(paths, name, None)
    if state.error:
        return
    forced = forced_champion(paths, name, state.alias_versions().get("champion"))
    if forced is None:
        return
    wanted = state.alias_versions()
    before = None
    if forced.snapshot:
        try:
            manifest = show_snapshot(paths, forced.snapshot)
            recorded = manifest.registry.aliases if manifest.registry else {}
            before = recorded["champion"].version if "champion" in recorded else None
        except MlvsError as error:
            log.warning("the snapshot %s cannot be read: %s", forced.snapshot, error)
    rung = "snapshot_restore" if before is not None else "local_backup"
    before = before or forced.from_version
    if before is None:
        return
    wanted["champion"] = before
    try:
        set_aliases(
            paths,
            name,
            wanted,
            expected=state.alias_versions(),
            why=MoveReason(
                "recover",
                f"version {forced.to_version} was deployed past the gate's refusal; champion back to "
                f"version {before}",
                forced.snapshot,
            ),
        )
        outcome.repairs.append(Repair(f"{name}@champion", rung))
    except Exception as exc:  # a version gone for good: leave the finding for the report
        log.warning("could not put back the champion of %s: %s", name, exc)


# How long a running service may take to see a repaired file (it looks every 0.25 s, then hashes it).
SERVICE_SETTLE_S = 10.0


def repair_services(paths: ProjectPaths, evidence: Path, outcome: RecoveryOutcome) -> None:
    """Start again each scoring service that died without stopping, where it listened; wait for the others.

    The dead service's status file is kept as evidence. A restarted service loads and
    verifies the alias's version itself (hash, then golden predictions) before it counts
    as started. A running service that refused the changed file of its version is given
    a moment to see the repaired one.
    """
    name = load_stage("train", paths.root).registry.model_name
    folder = status_dir(paths)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        alias = path.stem
        try:
            status = read_status(paths, alias)
        except ValueError:
            continue  # verify names it; a file that cannot be read says nothing to restart
        if status is None or status.model_name != name:
            continue
        if died_without_stopping(status):
            evidence.mkdir(parents=True, exist_ok=True)
            kept = evidence / f"serve-{alias}-pid{status.pid}.json"
            shutil.copy2(path, kept)
            outcome.evidence.append(str(kept))
            try:
                started = launch(paths, alias, status.host or LOOPBACK, status.port or 0)
            except MlvsError as error:
                log.warning(
                    "could not start the scoring service of %s@%s again: %s", name, alias, error
                )
                continue
            served = started.serving.version if started.serving else "nothing"
            outcome.repairs.append(
                Repair(
                    f"{name}@{alias} scoring service (pid {started.pid} on "
                    f"{started.host}:{started.port}, serving version {served})",
                    "restart",
                )
            )
        elif status.refused is not None and status.refused.kind == "file":
            wait_for_status(
                paths,
                alias,
                lambda s: s.refused is None or s.refused.kind != "file",
                SERVICE_SETTLE_S,
            )


def rerun_stages(paths: ProjectPaths, files: list[str], outcome: RecoveryOutcome) -> None:
    """Rebuild outputs no store holds by re-running the stages that write them."""
    stages = sorted(
        {
            o.stage
            for o in dvc_outputs(paths)
            for rel in files
            if o.stage and (rel == o.path or rel.startswith(o.path + "/"))
        },
        key=lambda s: ("prepare", "train").index(s) if s in ("prepare", "train") else 9,
    )
    for stage in stages:
        result = run_stage(paths, stage, restore_on_failure=False)
        if result.ok:
            outcome.repairs.append(Repair(f"stage {stage}", "rerun_stage"))


@locked
def recover(
    paths: ProjectPaths, evidence: Path | None = None, report: Report | None = None
) -> RecoveryOutcome:
    """Detect, repair rung by rung, verify. Idempotent: a healthy system is left untouched."""
    started = time.perf_counter()
    if not Journal(paths).path.exists():
        # A repair cut short (a crash, a power cut) leaves its temporary copies beside the
        # file it repaired; with no interrupted command on record, no one else owns them.
        remove_workspace_leftovers(paths)
    evidence = evidence or evidence_dir(paths)
    outcome = RecoveryOutcome()
    report = report or verify(paths)
    outcome.before = list(report.findings)
    if report.healthy:
        outcome.seconds = time.perf_counter() - started
        return outcome
    checks = {f.check for f in report.findings}
    if "mlflow_store" in checks:
        repair_mlflow_store(paths, evidence, outcome)
    if "registry" in checks:
        repair_aliases(paths, outcome)
        repair_forced_champion(paths, outcome)
    if "dvc_cache" in checks:
        repair_cache(paths, evidence, outcome)
    if checks & {"file_hash", "schema", "model_hash", "golden_predictions", "metrics", "dvc_cache"}:
        damaged = {f.artifact for f in report.findings if f.check == "file_hash"}
        unrestored = restore_recorded_files(paths, evidence, outcome, damaged)
        if unrestored:
            rerun_stages(paths, unrestored, outcome)
    if checks & {"serving", "file_hash", "model_hash"}:
        repair_services(paths, evidence, outcome)
    outcome.after = verify(paths).findings
    outcome.seconds = time.perf_counter() - started
    return outcome


@locked
def recover_project(
    paths: ProjectPaths, interrupted_only: bool = False
) -> tuple[RecoveryReport, RecoveryOutcome | None]:
    """`mlvs recover`: finish or undo an interrupted command, then (unless `interrupted_only`) climb the ladder.

    Both in one hold of the lock, so no other command comes between them.
    """
    interrupted = recover_interrupted(paths)
    return interrupted, None if interrupted_only else recover(paths)
