"""What a rollback will change: the plan, made under the lock."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlvs.backends.dvc.lockfile import (
    LOCK_FILE,
    compose_lock,
    lock_document,
    lock_stages,
    stage_outputs,
)
from mlvs.backends.dvc.objects import ObjectStore
from mlvs.backends.dvc.outputs import DATA, MODELS, PartRule
from mlvs.backends.git.refs import MAX_NAME_LENGTH, validate_snapshot_name
from mlvs.backends.git.run import Entry
from mlvs.backends.git.tree import file_at_or_known, tree_files, worktree_entries
from mlvs.backends.mlflow.registry import missing_versions, read_registry
from mlvs.boundary import workspace_file
from mlvs.errors import BadInputError, IntegrityError, MlvsError
from mlvs.ops.snapshot.manifest import MANIFEST_PATH, PARTS, Manifest
from mlvs.paths import ProjectPaths

GIT, CACHE, REMOTE, MISSING = "git", "cache", "remote", "missing"


@dataclass(frozen=True)
class FileChange:
    """One file a rollback writes or deletes, and where its bytes come from."""

    path: str
    part: str
    action: str  # "write" or "delete"
    source: str  # GIT, CACHE, REMOTE, MISSING, or "" for a deletion


@dataclass
class RollbackReport:
    """What a rollback changed (or, dry, would change) and what its verification found."""

    snapshot: str
    commit: str
    parts: list[str]
    dry_run: bool
    automatic_snapshot: str | None = None
    files: list[FileChange] = field(default_factory=list)
    model_name: str | None = None
    aliases: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    verified: bool = False
    checked_files: int = 0
    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # What the target snapshot's own health check found when it was taken (empty: healthy or not recorded).
    snapshot_findings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        document = asdict(self)
        document["aliases"] = {k: list(v) for k, v in sorted(self.aliases.items())}
        return document


class VerificationError(IntegrityError):
    """Raised when a rollback finished but its result does not match the snapshot."""

    def __init__(self, report: RollbackReport) -> None:
        self.report = report
        shown = "; ".join(report.findings[:5]) + ("; ..." if len(report.findings) > 5 else "")
        undo = (
            f" (undo with `mlvs rollback {report.automatic_snapshot}`)"
            if report.automatic_snapshot
            else ""
        )
        super().__init__(
            f"the rollback to {report.snapshot!r} could not be verified, {len(report.findings)} finding(s): "
            f"{shown}{undo}"
        )


def parse_parts(only: str | Iterable[str] | None) -> set[str]:
    """The parts to restore: all when `only` is empty, else the named ones (comma-separated)."""
    if only is None:
        return set(PARTS)
    names = only.split(",") if isinstance(only, str) else list(only)
    wanted = {n.strip().lower() for n in names if n.strip()}
    unknown = sorted(wanted - set(PARTS))
    if unknown or not wanted:
        what = (
            f"unknown part(s) {', '.join(repr(u) for u in unknown)}" if unknown else "no part given"
        )
        raise BadInputError(f"{what}; choose from {','.join(PARTS)} (e.g. --only models,registry)")
    return wanted


_AUTO_PREFIX = re.compile(r"auto-\d{8}T\d{6}Z-before-")


def auto_snapshot_name(target: str, taken: set[str], now: datetime | None = None) -> str:
    """`auto-<UTC time>-before-<target>`, shortened to a valid name, made unique among `taken`."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    # Rolling back to an automatic snapshot names the snapshot it was taken before, so
    # names never nest (`auto-...-before-auto-...-before-X`).
    while (earlier := _AUTO_PREFIX.match(target)) and earlier.end() < len(target):
        target = target[earlier.end() :]
    base = f"auto-{stamp}-before-{target}"
    folded = {t.casefold() for t in taken}
    for counter in range(1, 1000):
        suffix = "" if counter == 1 else f"-{counter}"
        name = base[: MAX_NAME_LENGTH - len(suffix)].rstrip(".") + suffix
        while name.endswith(".lock") or name.endswith("."):
            name = name[:-1]
        if name.casefold() not in folded:
            return validate_snapshot_name(name)
    raise MlvsError(f"could not find a free name for the automatic snapshot before {target!r}")


@dataclass
class _Plan:
    part_of: PartRule  # the project's rule, never the manifest's claim
    git: list[FileChange] = field(default_factory=list)
    writes: list[FileChange] = field(default_factory=list)
    deletes: list[FileChange] = field(default_factory=list)
    model_name: str | None = None
    aliases_now: dict[str, str] = field(default_factory=dict)
    aliases_wanted: dict[str, str] | None = None
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what makes the plan impossible
    # dvc.lock as the restored outputs need it (None: no lock), when that differs from the file now.
    lock: FileChange | None = None
    lock_bytes: bytes | None = None
    # The working tree's git files as planned, under the state lock. Restoring compares
    # against them instead of hashing again; a file changed since is named by the
    # verification that follows, which does hash the tree again.
    worktree: dict[str, Entry] | None = None

    @property
    def alias_changes(self) -> dict[str, tuple[str | None, str | None]]:
        if self.aliases_wanted is None:
            return {}
        names = set(self.aliases_now) | set(self.aliases_wanted)
        return {
            a: (self.aliases_now.get(a), self.aliases_wanted.get(a))
            for a in sorted(names)
            if self.aliases_now.get(a) != self.aliases_wanted.get(a)
        }

    @property
    def files(self) -> list[FileChange]:
        lock = [self.lock] if self.lock is not None else []
        return sorted(
            [*self.git, *self.writes, *self.deletes, *lock], key=lambda c: (c.path, c.action)
        )


def _git_differences(
    paths: ProjectPaths,
    target: Manifest,
    part_of: PartRule,
    parts: set[str],
    entries: dict[str, Entry] | None = None,
) -> list[FileChange]:
    """The git files that differ from the snapshot's, in `parts` (`entries`: `worktree_entries` now)."""
    assert target.commit is not None
    wanted = tree_files(paths.root, target.commit)
    entries = worktree_entries(paths.root) if entries is None else entries
    present = {path: oid for path, (_, oid) in entries.items()}
    # The manifest lives only inside snapshot commits; a working-tree file of that name is the user's.
    wanted.pop(MANIFEST_PATH, None)
    present.pop(MANIFEST_PATH, None)
    # dvc.lock describes the outputs, not the code: it is put together stage by stage (`_plan_lock`).
    wanted.pop(LOCK_FILE, None)
    present.pop(LOCK_FILE, None)
    changes = []
    for path in sorted(set(wanted) | set(present)):
        if wanted.get(path) == present.get(path):
            continue
        part = part_of(path)
        if part in parts:
            changes.append(FileChange(path, part, "write" if path in wanted else "delete", GIT))
    return changes


def _plan(
    paths: ProjectPaths, target: Manifest, current: Manifest, parts: set[str], store: ObjectStore
) -> _Plan:
    # `current` was captured in this process from the project's own dvc.yaml and .dvc files.
    plan = _Plan(PartRule(paths, {path: entry.part for path, entry in current.outputs.items()}))
    if parts & {"code", "params", "data", "models"}:
        plan.worktree = worktree_entries(paths.root)
        plan.git = _git_differences(paths, target, plan.part_of, parts, plan.worktree)
    for path, entry in sorted(target.files.items()):
        part = plan.part_of(path)
        have = current.files.get(path)
        if part in parts and (have is None or have.sha256 != entry.sha256):
            source = CACHE if store.in_cache(entry.md5) else (REMOTE if store.remote else MISSING)
            plan.writes.append(FileChange(path, part, "write", source))
    for path in sorted(current.files):
        part = plan.part_of(path)
        if part in parts and path not in target.files:
            plan.deletes.append(FileChange(path, part, "delete", ""))
    # The manifests' paths were checked lexically when read; here, with the workspace at
    # hand, a path the rollback would touch that a symlink leads outside is refused
    # before anything is written.
    for change in [*plan.writes, *plan.deletes, *plan.git]:  # the manifest's own paths first
        workspace_file(paths.root, change.path, f"snapshot {target.name!r} path")
    for output in target.outputs:
        if plan.part_of(output) in parts:
            workspace_file(paths.root, output, f"snapshot {target.name!r} path")
    if parts & {DATA, MODELS}:
        _plan_lock(paths, target, parts, plan)
    if "registry" in parts:
        _plan_registry(paths, target, current, plan, asked=parts != set(PARTS))
    return plan


def _plan_lock(paths: ProjectPaths, target: Manifest, parts: set[str], plan: _Plan) -> None:
    """Plan dvc.lock so that it describes the outputs in place once the restored parts are back.

    A stage whose outputs belong to a restored part takes the snapshot's entry (its
    outputs, and the deps and params they were produced with); every other stage keeps
    the current one. Restored outputs made from params or code that are not current
    then show as a stale pipeline, never as damage that `mlvs recover` would "repair"
    by undoing the rollback.
    """
    assert target.commit is not None
    location = paths.root / LOCK_FILE
    current = location.read_bytes() if location.is_file() else None
    # The snapshot's tree is listed already (`_git_differences`): an unchanged lock is not read again.
    wanted = file_at_or_known(paths.root, target.commit, LOCK_FILE, current)
    then = lock_stages(lock_document(wanted, f"the {LOCK_FILE} of snapshot {target.name!r}"))
    try:
        now = lock_stages(lock_document(current, LOCK_FILE))
    except IntegrityError:
        if {DATA, MODELS} <= parts:
            # Every output comes back, so the snapshot's lock is the one they need: a broken
            # lock here is no reason to refuse the rollback that repairs it.
            action = "write" if wanted is not None else "delete"
            plan.lock = FileChange(LOCK_FILE, f"{DATA},{MODELS}", action, GIT)
            plan.lock_bytes = wanted
            return
        raise IntegrityError(
            f"{LOCK_FILE} cannot be read, so the stages kept cannot be described; restore it "
            f"from git, or roll back data and models together (--only data,models,...)"
        ) from None
    restored: dict[str, set[str]] = {}
    for name in {**now, **then}:
        outputs = [*stage_outputs(now.get(name)), *stage_outputs(then.get(name))]
        owned = {plan.part_of(output) for output in outputs} & parts
        if owned:
            restored[name] = owned
    composed = compose_lock(current, wanted, set(restored))
    if composed == current:
        return
    # Named by the parts whose stages' entries change (the others are restored unchanged).
    changed = [owned for name, owned in restored.items() if now.get(name) != then.get(name)]
    named = set().union(*(changed or restored.values()))
    part = ",".join(sorted(named)) if named else DATA
    plan.lock = FileChange(LOCK_FILE, part, "write" if composed is not None else "delete", GIT)
    plan.lock_bytes = composed


def _plan_registry(
    paths: ProjectPaths, target: Manifest, current: Manifest, plan: _Plan, asked: bool
) -> None:
    recorded = target.registry
    if recorded.error is not None:
        if asked:
            # Asked for by name, the registry cannot be "restored" from a record that never read it.
            raise IntegrityError(
                f"snapshot {target.name!r} could not read the MLflow registry when it was taken "
                f"({recorded.error}), so it cannot restore the aliases; roll back without the registry "
                "(--only code,params,data,models) or to a snapshot that read it"
            )
        plan.notes.append(
            f"snapshot {target.name!r} could not read the registry ({recorded.error}); registry left as it is"
        )
        return
    if not recorded.model_name:
        plan.notes.append(
            f"snapshot {target.name!r} names no registered model; registry left as it is"
        )
        return
    plan.model_name = recorded.model_name
    now = current.registry
    if now.model_name != recorded.model_name or now.error is not None:
        now = read_registry(paths, recorded.model_name, None)
        if now.error is not None:
            raise IntegrityError(
                f"the MLflow registry cannot be read ({now.error}), so its aliases cannot be restored; "
                "run `mlvs recover`, or roll back without the registry (--only code,params,data,models)"
            )
    plan.aliases_now = now.alias_versions()
    plan.aliases_wanted = recorded.alias_versions()
    needed = {new for new in (c[1] for c in plan.alias_changes.values()) if new is not None}
    for version in missing_versions(paths, recorded.model_name, needed):
        aliases = sorted(a for a, v in plan.aliases_wanted.items() if v == version)
        plan.problems.append(
            f"registry: version {version} of {recorded.model_name!r} (alias {', '.join(aliases)}) no longer exists"
        )
