"""Putting recorded files back from the DVC cache or remote, keeping the damaged bytes as evidence."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlvs._io import FileHash, atomic_write_text, copy_checked, fsync_dir, hash_file
from mlvs.backends.dvc.hashcache import HashCache, Identity, landed_identity
from mlvs.backends.dvc.objects import TEMP_SUFFIX, ObjectStore
from mlvs.backends.dvc.outputs import lock_hashes, output_files
from mlvs.errors import IntegrityError
from mlvs.ops.recorded import Finding, recorded_files
from mlvs.paths import ProjectPaths
from mlvs.state.interrupted import RecoveryReport, finisher, remove_workspace_leftovers
from mlvs.state.journal import Journal
from mlvs.state.room import release_room


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


def _cache_object_md5(paths: ProjectPaths, hashes: HashCache, cached: Path) -> str:
    """The MD5 of a cache object now: remembered while its stat holds (inside the project), else read."""
    try:
        relative = cached.resolve().relative_to(paths.root.resolve()).as_posix()
    except ValueError:  # a cache outside the project: hash it directly
        return hash_file(cached).md5
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


def _install_copy(source: Path, destination: Path, md5: str, hashes: HashCache) -> FileHash | None:
    """Copy `source` to `destination` atomically if the copy, read back, is object `md5`; return its hashes.

    When mlvs has hashed bytes with this MD5 before, their SHA-256 proves the copy;
    otherwise the copy's MD5 is computed too (on another thread) and compared.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}{TEMP_SUFFIX}")
    known = hashes.known_object(md5)
    try:
        hashed = copy_checked(source, temporary, with_md5=known is None)
        if known is None:
            if hashed.md5 != md5:
                return None
            hashes.remember_object(hashed)
        elif hashed.sha256 != known.sha256 or hashed.size != known.size:
            return None
        os.replace(temporary, destination)
        fsync_dir(destination.parent)
        return FileHash(md5, hashed.sha256, hashed.size)
    finally:
        temporary.unlink(missing_ok=True)


def _restore_one(
    store: ObjectStore,
    hashes: HashCache,
    md5: str,
    destination: Path,
    evidence: Path,
    outcome: RecoveryOutcome,
) -> tuple[str, FileHash] | None:
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
    # A remote DVC reaches over the network: DVC fetches this one object, whose bytes are then checked here.
    if store.fetch_object(md5) and (hashed := _install_copy(cached, destination, md5, hashes)):
        return "dvc_remote", hashed
    return None


def restore_recorded_files(
    paths: ProjectPaths, evidence: Path, outcome: RecoveryOutcome, damaged: set[str] | None = None
) -> list[str]:
    """Put every DVC-tracked file back to the bytes `dvc.lock` records; return what could not be.

    Files in `damaged` (a detection's hash findings) are known not to match and are
    restored without being read again; every other file is checked first.
    """
    store = ObjectStore(paths)
    recorded, _ = recorded_files(paths, store)
    hashes = HashCache(paths)
    unrestored = []
    written: list[tuple[str, FileHash, Identity]] = []
    try:
        for rel, md5 in sorted(recorded.items()):
            path = paths.root / rel
            # The remembered hash is trusted only while size, times and inode hold: a damaged file is re-read.
            if (
                rel not in (damaged or set())
                and path.is_file()
                and hashes.file_hash(rel).md5 == md5
            ):
                continue
            staged = path.with_name(f".{path.name}.restore{TEMP_SUFFIX}")
            restored = _restore_one(store, hashes, md5, staged, evidence, outcome)
            if restored is None:
                staged.unlink(missing_ok=True)
                unrestored.append(rel)
                continue
            rung, hashed = restored
            verified = os.stat(staged)
            if path.exists():
                _keep_evidence(path, evidence, outcome, rel)
            os.replace(staged, path)
            fsync_dir(path.parent)
            outcome.repairs.append(Repair(rel, rung, hashed.size))
            identity = landed_identity(path, verified)
            if identity is not None:
                written.append((rel, hashed, identity))
        # The final verification then trusts what was hashed while it was written, not a second read.
        hashes.remember_written(written)
    finally:
        hashes.close()
    # Files a recorded directory output should not contain (e.g. a stray partial write).
    for output, md5 in lock_hashes(paths).items():
        if md5.endswith(".dir"):
            for rel in output_files(paths.root, output):
                if rel not in recorded:
                    _keep_evidence(paths.root / rel, evidence, outcome, rel)
                    outcome.repairs.append(Repair(rel, "dvc_cache", 0))
    return unrestored


def evidence_dir(paths: ProjectPaths) -> Path:
    """A fresh folder for the damaged bytes of one recovery."""
    return paths.state / "incidents" / time.strftime("%Y%m%dT%H%M%S", time.gmtime()) / "evidence"


# "restart": a process started again (the scoring service), its model from verified bytes.
RUNGS = ("restart", "local_backup", "dvc_cache", "dvc_remote", "snapshot_restore", "rerun_stage")


def undo_pipeline(paths: ProjectPaths, kept: dict[str, str | None]) -> list[str]:
    """Put back the last good outputs: the journalled `dvc.lock` and metrics, then what `dvc.lock` records."""

    for relative, text in kept.items():
        path = paths.root / relative
        if text is None:
            path.unlink(missing_ok=True)
        elif not path.is_file() or path.read_text(encoding="utf-8", errors="replace") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
    outcome = RecoveryOutcome()
    unrestored = restore_recorded_files(paths, evidence_dir(paths), outcome)
    if unrestored:
        raise IntegrityError(
            f"the last good outputs {', '.join(unrestored)} are in neither the DVC cache nor the remote; "
            "run `mlvs recover` (it re-runs their stage)"
        )
    return [r.artifact for r in outcome.repairs]


@finisher("pipeline")
def _recover_pipeline(
    paths: ProjectPaths, journal: Journal, record: dict[str, Any]
) -> RecoveryReport:
    if record.get("step") == "reproduced":
        journal.clear()  # the stages finished and dvc.lock records them; only the push was left
        return RecoveryReport(
            "pipeline", None, "completed", "the interrupted pipeline had finished its stages"
        )

    release_room(paths)  # the room the killed pipeline kept for this undo
    undo_pipeline(paths, record.get("data", {}).get("kept") or {})
    remove_workspace_leftovers(paths)
    journal.clear()
    return RecoveryReport(
        "pipeline",
        None,
        "undone",
        "the interrupted pipeline was undone: the last good outputs are back in place",
    )
