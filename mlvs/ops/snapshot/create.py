"""Whole-system snapshots: code, params, data, models, registry and environment, as one.

A snapshot is one git commit of the whole working tree (made through a throwaway
index, so the user's branch, HEAD and index never move) that also holds the
snapshot's manifest, `.mlvs-snapshot.json`, at its root. The manifest exists
only inside the commit, never in the working tree, and rollback never writes it
out. The commit is kept alive by `refs/mlvs/snapshots/NAME`.

Creating one, under the state lock and journalled:
1. capture: hash every DVC-tracked file (MD5 for DVC, SHA-256 for mlvs; unchanged
   files come from the hash cache), read params, metrics, registry, environment;
2. store: put missing objects into the DVC cache, then the DVC remote (the
   journal first lists what is added, so an undo can take it out again);
3. commit: the working tree plus the manifest, as an unreferenced commit;
4. save the ref. The ref is the commit point: before it there is no snapshot
   and `mlvs recover` removes what steps 2 and 3 added; after it, it is complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlvs.backends.dvc.hashcache import HashCache
from mlvs.backends.dvc.objects import ObjectStore
from mlvs.backends.dvc.outputs import dir_object, dvc_files
from mlvs.backends.git.refs import (
    list_snapshot_refs,
    save_snapshot_ref,
    snapshot_ref,
    validate_snapshot_name,
)
from mlvs.backends.git.run import known_toplevel, remember_toplevel, run_git
from mlvs.backends.git.tree import commit_worktree
from mlvs.errors import BadInputError, ExternalToolError, UnhealthyStateError, os_error
from mlvs.logs import get_logger
from mlvs.ops.health import PIPELINE_FIX, quick_health
from mlvs.ops.recorded import STALE, Health
from mlvs.ops.snapshot.capture import capture_state
from mlvs.ops.snapshot.manifest import MANIFEST_PATH, Manifest
from mlvs.paths import ProjectPaths
from mlvs.state.interrupted import (
    RecoveryReport,
    finisher,
    recover_interrupted,
    remove_workspace_leftovers,
)
from mlvs.state.journal import Journal, Record, journal_recorder
from mlvs.state.lock import state_lock

log = get_logger("snapshots")


def _dir_objects(manifest: Manifest) -> dict[str, bytes]:
    objects = {}
    for output, entry in manifest.outputs.items():
        if entry.kind == "dir":
            members = {
                p[len(output) + 1 :]: f.md5 for p, f in manifest.files.items() if f.output == output
            }
            md5, payload = dir_object(members)
            objects[md5] = payload
    return objects


def store_objects(
    paths: ProjectPaths, manifest: Manifest, store: ObjectStore, record: Record
) -> None:
    """Put every object of `manifest` into the DVC cache and the default remote.

    Objects already there are not read (a no-op snapshot copies nothing). The journal
    gets the list of objects to add before any is added, so an undo can remove them.
    """
    file_objects: dict[str, tuple[str, list[Path]]] = {}
    for relative, entry in manifest.files.items():
        sha256, sources = file_objects.setdefault(entry.md5, (entry.sha256, []))
        sources.append(paths.root / relative)
    dir_objects = _dir_objects(manifest)
    if store.remote is None and file_objects:
        log.warning(
            "no default DVC remote is configured: snapshot %s's data is only in the local DVC cache "
            "(add one with `dvc remote add -d`)",
            manifest.name,
        )
    add_to_cache = sorted(m for m in [*file_objects, *dir_objects] if not store.in_cache(m))
    add_to_remote = store.missing_in_remote([*file_objects, *dir_objects])
    record("storing", added_cache=add_to_cache, added_remote=add_to_remote)
    for md5 in add_to_cache:
        if md5 in dir_objects:
            store.put_bytes(md5, dir_objects[md5])
        else:
            sha256, sources = file_objects[md5]
            store.put_file(md5, sha256, sources)
    store.push(
        {m: (file_objects[m][0], file_objects[m][1]) for m in add_to_remote if m in file_objects},
        [m for m in add_to_remote if m in dir_objects],
    )
    record("stored")


def save_snapshot(paths: ProjectPaths, manifest: Manifest, record: Record) -> Manifest:
    """Store, commit and name the snapshot `manifest` describes; the ref comes last."""
    store = ObjectStore(paths)
    store_objects(paths, manifest, store, record)
    text = f"mlvs snapshot {manifest.name}" + (
        f"\n\n{manifest.message}" if manifest.message else ""
    )
    commit = commit_worktree(paths.root, text, extra_files={MANIFEST_PATH: manifest.to_bytes()})
    record("committed", commit=commit)
    save_snapshot_ref(paths.root, manifest.name, commit)
    record("saved")
    manifest.commit = commit
    return manifest


def undo_unsaved_snapshot(paths: ProjectPaths, name: str, data: dict[str, Any]) -> bool:
    """Undo a snapshot whose ref was never saved; tell whether it was saved (nothing undone).

    `data` is what `save_snapshot` journalled: `commit`, `added_cache`, `added_remote`.
    """
    commit = data.get("commit")
    existing = snapshot_ref(paths.root, name)
    if existing is not None and commit is not None and existing == commit:
        return True
    store = ObjectStore(paths)
    store.remove_objects(data.get("added_cache") or [])
    store.remove_objects(data.get("added_remote") or [], from_remote=True)
    store.remove_leftovers()
    return False


def require_git(paths: ProjectPaths) -> None:
    """Refuse a project that is not the top of a git working tree: snapshots are git commits."""
    if known_toplevel(paths.root):
        return
    try:
        top = run_git(paths.root, "rev-parse", "--show-toplevel").strip()
    except ExternalToolError:
        raise BadInputError(
            f"{paths.root} is not a git repository; run `git init` there (mlvs keeps snapshots as git commits)"
        ) from None
    if Path(top).resolve() != paths.root.resolve():
        raise BadInputError(
            f"{paths.root} is inside the git repository at {top} but is not its top directory; "
            "keep the mlvs project at the top of its git working tree"
        )
    remember_toplevel(paths.root)


def _refuse_existing(paths: ProjectPaths, name: str) -> None:
    validate_snapshot_name(name)
    require_git(paths)
    for existing, _ in list_snapshot_refs(paths.root):
        if existing.casefold() == name.casefold():
            raise BadInputError(f"snapshot {existing!r} exists already; choose another name")


def _refuse_unreadable_registry(manifest: Manifest) -> None:
    # A snapshot that says "no aliases" because it could not look would later make a
    # rollback delete the real ones; automatic snapshots record the error instead.
    registry = manifest.registry
    if registry.error is not None:
        raise ExternalToolError(
            f"snapshot {manifest.name!r} was not created: the MLflow registry at {registry.tracking_uri} "
            f"cannot be read ({registry.error}); start the tracking server (or run `mlvs recover` for "
            "the embedded mlflow.db), then take the snapshot again"
        )


def _refuse_unhealthy(name: str, health: Health) -> None:
    # A snapshot is what a rollback later restores as "the good state": one taken of a
    # sick state must be asked for, and then says so in its manifest.
    if health.healthy:
        return
    shown = "; ".join(str(f) for f in health.findings[:3])
    more = f" and {len(health.findings) - 3} more" if len(health.findings) > 3 else ""
    fixes = []
    if health.damaged:
        fixes.append("`mlvs recover` (put back what dvc.lock records)")
    if any(f.kind == STALE for f in health.findings):
        fixes.append(f"`{PIPELINE_FIX}` (rebuild the stale stages)")
    raise UnhealthyStateError(
        f"snapshot {name!r} was not created: the state is not healthy, {len(health.findings)} "
        f"finding(s): {shown}{more}; fix it with {' or '.join(fixes)}, or take the snapshot anyway "
        "with --allow-unhealthy (its manifest then records the findings)"
    )


def create_snapshot(
    paths: ProjectPaths, name: str, message: str = "", allow_unhealthy: bool = False
) -> Manifest:
    """Snapshot the whole current state as `name`; refuse a bad or existing name (changing nothing).

    The state's quick health checks (`mlvs.ops.health`) are recorded in the manifest;
    an unhealthy state is refused unless `allow_unhealthy`.
    """

    _refuse_existing(paths, name)
    with state_lock(paths):
        recover_interrupted(paths)
        _refuse_existing(paths, name)  # another command may have taken the name meanwhile
        journal = Journal(paths)
        journal.begin("snapshot", {"name": name})
        record = journal_recorder(journal, "snapshot")
        try:
            hashes = HashCache(paths)
            try:
                # One listing of the `.dvc` files serves the state and its health check.
                tracking = dvc_files(paths.root)
                manifest = capture_state(
                    paths, name, message, hashes=hashes, tracking_files=tracking
                )
                manifest.health = quick_health(paths, hashes, tracking)
            finally:
                hashes.close()
            if not allow_unhealthy:
                _refuse_unhealthy(name, manifest.health)
            _refuse_unreadable_registry(manifest)
            record("captured")
            save_snapshot(paths, manifest, record)
        except Exception as error:
            # A failed snapshot leaves nothing behind: what it stored goes, unless its ref was saved.
            undo_unsaved_snapshot(paths, name, (journal.current() or {}).get("data", {}))
            journal.clear()
            if isinstance(error, OSError):
                raise os_error(error, f"snapshot {name!r} was not created") from error
            raise
        journal.clear()
    log.debug("snapshot %s saved at %s", name, manifest.commit)
    return manifest


@finisher("snapshot")
def _recover_snapshot(
    paths: ProjectPaths, journal: Journal, record: dict[str, Any]
) -> RecoveryReport:
    data = record.get("data", {})
    name = data.get("name")
    saved = bool(name) and undo_unsaved_snapshot(paths, name, data)
    remove_workspace_leftovers(paths)
    journal.clear()
    if saved:
        return RecoveryReport(
            "snapshot", name, "completed", f"snapshot {name!r} had been saved; nothing to undo"
        )
    return RecoveryReport(
        "snapshot", name, "undone", f"the unfinished snapshot {name!r} was removed"
    )
