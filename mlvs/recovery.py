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

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlvs import dvcstore
from mlvs.hashing import fsync_dir
from mlvs.logs import get_logger
from mlvs.paths import ProjectPaths
from mlvs.verify import Finding, Report, recorded_files, verify

log = get_logger("recover")

RUNGS = ("local_backup", "dvc_cache", "dvc_remote", "snapshot_restore", "rerun_stage")


@dataclass
class Repair:
    """One artifact put right, and how."""

    artifact: str
    rung: str
    bytes_restored: int = 0


@dataclass
class RecoveryOutcome:
    """What `recover` did and whether the system is healthy afterwards."""

    before: list[Finding] = field(default_factory=list)
    repairs: list[Repair] = field(default_factory=list)
    after: list[Finding] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def healthy(self) -> bool:
        return not self.after

    @property
    def rung(self) -> str | None:
        """The highest rung that was needed (None when nothing needed repair)."""
        used = [r.rung for r in self.repairs]
        return max(used, key=RUNGS.index) if used else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "rung": self.rung,
            "found": [asdict(f) for f in self.before],
            "repairs": [asdict(r) for r in self.repairs],
            "remaining": [asdict(f) for f in self.after],
            "evidence": self.evidence,
            "bytes_restored": sum(r.bytes_restored for r in self.repairs),
            "seconds": round(self.seconds, 4),
        }


def _cache_object_md5(paths: ProjectPaths, hashes: dvcstore.HashCache, cached: Path) -> str:
    """The MD5 of a cache object now: remembered while its stat holds (inside the project), else read."""
    try:
        relative = cached.resolve().relative_to(paths.root.resolve()).as_posix()
    except ValueError:  # a cache outside the project: hash it directly
        return dvcstore.hash_stream(dvcstore.read_chunks(cached)).md5
    return hashes.file_hash(relative).md5


def _keep_evidence(path: Path, evidence: Path, outcome: RecoveryOutcome, label: str) -> None:
    """Move a damaged file into the incident record instead of deleting it."""
    if not path.exists():
        return
    evidence.mkdir(parents=True, exist_ok=True)
    target = evidence / label.replace("/", "__")
    if target.exists():
        target = target.with_name(f"{target.name}.{time.time_ns()}")
    shutil.move(str(path), target)  # a rename on one file system: the damaged bytes are not copied
    outcome.evidence.append(str(target))


def _install_copy(source: Path, destination: Path, md5: str,
                  hashes: dvcstore.HashCache) -> dvcstore.FileHash | None:
    """Copy `source` to `destination` atomically if the copy, read back, is object `md5`; return its hashes.

    When mlvs has hashed bytes with this MD5 before, their SHA-256 proves the copy;
    otherwise the copy's MD5 is computed too (on another thread) and compared.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}{dvcstore.TEMP_SUFFIX}")
    known = hashes.known_object(md5)
    try:
        hashed = dvcstore.copy_checked(source, temporary, with_md5=known is None)
        if known is None:
            if hashed.md5 != md5:
                return None
            hashes.remember_object(hashed)
        elif hashed.sha256 != known.sha256 or hashed.size != known.size:
            return None
        os.replace(temporary, destination)
        fsync_dir(destination.parent)
        return dvcstore.FileHash(md5, hashed.sha256, hashed.size)
    finally:
        temporary.unlink(missing_ok=True)


def _restore_one(store: dvcstore.ObjectStore, hashes: dvcstore.HashCache, md5: str, destination: Path,
                 evidence: Path, outcome: RecoveryOutcome) -> tuple[str, dvcstore.FileHash] | None:
    """Write the bytes of DVC object `md5` to `destination`; return the rung that provided them, and their hashes.

    The cache object is re-hashed while it is copied (one read, of the copy): a copy
    whose hash is wrong is refused, the bad object is kept as evidence, and the remote is next.
    """
    cached = store.cache_path(md5)
    if cached.is_file():
        if hashed := _install_copy(cached, destination, md5, hashes):
            return "dvc_cache", hashed
        _keep_evidence(cached, evidence, outcome, f"cache-{md5}")
    remote = store.remote_path(md5)
    if remote is not None and remote.is_file() and _install_copy(remote, cached, md5, hashes):
        hashed = _install_copy(cached, destination, md5, hashes)
        return ("dvc_remote", hashed) if hashed else None
    if remote is None and store.remote is not None:
        # A remote DVC reaches over the network: let DVC fetch, then check the bytes ourselves.
        from mlvs.orchestrate import dvc

        dvc(store.paths, "fetch", check=False)
        if cached.is_file() and (hashed := _install_copy(cached, destination, md5, hashes)):
            return "dvc_remote", hashed
    return None


def restore_recorded_files(paths: ProjectPaths, evidence: Path, outcome: RecoveryOutcome,
                           damaged: set[str] | None = None) -> list[str]:
    """Put every DVC-tracked file back to the bytes `dvc.lock` records; return what could not be.

    Files in `damaged` (a detection's hash findings) are known not to match and are
    restored without being read again; every other file is checked first.
    """
    store = dvcstore.ObjectStore(paths)
    recorded, _ = recorded_files(paths, store)
    hashes = dvcstore.HashCache(paths)
    unrestored = []
    written: list[tuple[str, dvcstore.FileHash, tuple[int, int, int]]] = []
    try:
        for rel, md5 in sorted(recorded.items()):
            path = paths.root / rel
            # The remembered hash is trusted only while size, times and inode hold: a damaged file is re-read.
            if rel not in (damaged or set()) and path.is_file() and hashes.file_hash(rel).md5 == md5:
                continue
            staged = path.with_name(f".{path.name}.restore{dvcstore.TEMP_SUFFIX}")
            restored = _restore_one(store, hashes, md5, staged, evidence, outcome)
            if restored is None:
                staged.unlink(missing_ok=True)
                unrestored.append(rel)
                continue
            rung, hashed = restored
            identity = dvcstore.file_identity(staged)
            if path.exists():
                _keep_evidence(path, evidence, outcome, rel)
            os.replace(staged, path)
            fsync_dir(path.parent)
            outcome.repairs.append(Repair(rel, rung, hashed.size))
            written.append((rel, hashed, identity))
        # The final verification then trusts what was hashed while it was written, not a second read.
        hashes.remember_written(written)
    finally:
        hashes.close()
    # Files a recorded directory output should not contain (e.g. a stray partial write).
    for output, md5 in dvcstore.lock_hashes(paths).items():
        if md5.endswith(".dir"):
            for rel in dvcstore.output_files(paths.root, output):
                if rel not in recorded:
                    _keep_evidence(paths.root / rel, evidence, outcome, rel)
                    outcome.repairs.append(Repair(rel, "dvc_cache", 0))
    return unrestored


def repair_cache(paths: ProjectPaths, evidence: Path, outcome: RecoveryOutcome) -> None:
    """Replace missing or corrupt cache objects: from the workspace copy if it matches, else the remote."""
    store = dvcstore.ObjectStore(paths)
    recorded, _ = recorded_files(paths, store)
    hashes = dvcstore.HashCache(paths)
    try:
        intact = {md5 for md5 in set(recorded.values()) if store.cache_path(md5).is_file()
                  and _cache_object_md5(paths, hashes, store.cache_path(md5)) == md5}
        for rel, md5 in sorted(recorded.items()):
            cached = store.cache_path(md5)
            if md5 in intact:
                continue
            if cached.is_file():
                _keep_evidence(cached, evidence, outcome, f"cache-{md5}")
            workspace = paths.root / rel
            if workspace.is_file() and _install_copy(workspace, cached, md5, hashes):
                outcome.repairs.append(Repair(f"{rel} (cache object)", "local_backup", cached.stat().st_size))
                intact.add(md5)
                continue
            remote = store.remote_path(md5)
            if remote is not None and remote.is_file() and _install_copy(remote, cached, md5, hashes):
                outcome.repairs.append(Repair(f"{rel} (cache object)", "dvc_remote", cached.stat().st_size))
                intact.add(md5)
    finally:
        hashes.close()


def repair_mlflow_store(paths: ProjectPaths, evidence: Path, outcome: RecoveryOutcome) -> None:
    """Put the newest good backup of the MLflow database in place; keep the damaged one as evidence."""
    from mlvs.backups import restore_mlflow_db
    from mlvs.tracking import settle_unfinished_runs

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
    import sqlite3

    from mlvs.backups import latest_backup
    from mlvs.params import load_stage
    from mlvs.registry import read_registry, set_aliases

    name = load_stage("train", paths.root).registry.model_name
    state = read_registry(paths, name, None)
    current = {alias: info.version for alias, info in state.aliases.items()}
    dangling = {alias for alias, info in state.aliases.items() if info.run_id is None and info.source is None}
    if not dangling:
        return
    wanted, rung = dict(current), None
    backup = latest_backup(paths)
    if backup is not None:
        with sqlite3.connect(f"{backup.resolve().as_uri()}?mode=ro", uri=True) as db:
            known = dict(db.execute("SELECT alias, version FROM registered_model_aliases WHERE name = ?", (name,)))
        if dangling <= set(known):
            wanted.update({alias: str(known[alias]) for alias in dangling})
            rung = "local_backup"
    if rung is None:
        from mlvs.snapshots import list_snapshots

        for manifest in sorted(list_snapshots(paths), key=lambda m: m.created_at, reverse=True):
            aliases = manifest.registry.aliases if manifest.registry else {}
            if dangling <= set(aliases):
                wanted.update({alias: str(aliases[alias].version) for alias in dangling})
                rung = "snapshot_restore"
                break
    if rung is None:
        return
    try:
        set_aliases(paths, name, wanted)
        outcome.repairs.extend(Repair(f"{name}@{alias}", rung) for alias in sorted(dangling))
    except Exception as exc:  # a version gone for good: leave the finding for the report
        log.warning("could not repair the aliases of %s: %s", name, exc)


def rerun_stages(paths: ProjectPaths, files: list[str], outcome: RecoveryOutcome) -> None:
    """Rebuild outputs no store holds by re-running the stages that write them."""
    from mlvs.orchestrate import run_stage

    stages = sorted({o.stage for o in dvcstore.dvc_outputs(paths) for rel in files
                     if o.stage and (rel == o.path or rel.startswith(o.path + "/"))},
                    key=lambda s: ("prepare", "train").index(s) if s in ("prepare", "train") else 9)
    for stage in stages:
        result = run_stage(paths, stage, restore_on_failure=False)
        if result.ok:
            outcome.repairs.append(Repair(f"stage {stage}", "rerun_stage"))


def evidence_dir(paths: ProjectPaths) -> Path:
    """A fresh folder for the damaged bytes of one recovery."""
    return paths.state / "incidents" / time.strftime("%Y%m%dT%H%M%S", time.gmtime()) / "evidence"


def recover(paths: ProjectPaths, evidence: Path | None = None, report: Report | None = None) -> RecoveryOutcome:
    """Detect, repair rung by rung, verify. Idempotent: a healthy system is left untouched."""
    started = time.perf_counter()
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
    if "dvc_cache" in checks:
        repair_cache(paths, evidence, outcome)
    if checks & {"file_hash", "schema", "model_hash", "golden_predictions", "metrics", "dvc_cache"}:
        damaged = {f.artifact for f in report.findings if f.check == "file_hash"}
        unrestored = restore_recorded_files(paths, evidence, outcome, damaged)
        if unrestored:
            rerun_stages(paths, unrestored, outcome)
    outcome.after = verify(paths).findings
    outcome.seconds = time.perf_counter() - started
    return outcome
