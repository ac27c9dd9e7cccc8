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

import errno
import json
import os
import platform
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from mlvs import gitstate
from mlvs.dvcstore import (
    DATA,
    MODELS,
    HashCache,
    ObjectStore,
    dir_object,
    dvc_files,
    dvc_outputs,
    load_yaml,
    lock_hashes,
    output_files,
)
from mlvs.errors import (
    BadInputError,
    ExternalToolError,
    IntegrityError,
    MlvsError,
    UnknownSnapshotError,
)
from mlvs.logs import get_logger
from mlvs.paths import ProjectPaths
from mlvs.registry import RegistryState, read_registry
from mlvs.statelock import Journal, state_lock, write_json_atomically

log = get_logger("snapshots")

MANIFEST_PATH = ".mlvs-snapshot.json"
FORMAT = "mlvs-snapshot/1"
PARTS = ("code", "params", "data", "models", "registry")
PACKAGES = ("mlvs", "dvc", "mlflow", "scikit-learn", "pandas", "numpy", "papermill", "skops")
DEFAULT_LOCK_TIMEOUT = 30.0

Record = Callable[..., None]  # record(step, **data): one journal step


def os_error(error: OSError, what: str) -> MlvsError:
    """An operating-system failure (a full disk, a permission) as one clear mlvs error."""
    where = f" at {error.filename2 or error.filename}" if error.filename else ""
    limit = "; the file size limit (ulimit -f) is reached" if error.errno == errno.EFBIG else ""
    return MlvsError(
        f"{what}: {error.strerror or error}{where}{limit}; free disk space or fix the permissions, then try again"
    )


def lock_timeout() -> float:
    """Seconds a state-changing command waits for the lock (`MLVS_LOCK_TIMEOUT`, default 30)."""
    value = os.environ.get("MLVS_LOCK_TIMEOUT", "")
    if not value:
        return DEFAULT_LOCK_TIMEOUT
    try:
        return float(value)
    except ValueError:
        raise BadInputError(
            f"MLVS_LOCK_TIMEOUT={value!r} is not a number of seconds; set it to e.g. 30 or unset it"
        ) from None


def failpoint(name: str) -> None:
    """Die at once (SIGKILL) when `MLVS_FAILPOINT` is `name`: how tests crash a command at a step.

    Names are `<operation>:<journal step>` (e.g. `snapshot:committed`,
    `rollback:auto:saved`) plus `rollback:apply:data` and `rollback:apply:git`
    inside the apply step. `MLVS_PAUSE` set to a name waits there instead, until
    the file `MLVS_PAUSE_RELEASE` exists or `MLVS_PAUSE_SECONDS` (default 5) have
    passed: how tests hold a change open under the lock.
    """
    if os.environ.get("MLVS_FAILPOINT") == name:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
    if os.environ.get("MLVS_PAUSE") == name:
        release = os.environ.get("MLVS_PAUSE_RELEASE")
        deadline = time.monotonic() + float(os.environ.get("MLVS_PAUSE_SECONDS", "5"))
        while time.monotonic() < deadline and not (release and os.path.exists(release)):
            time.sleep(0.05)


def journal_recorder(journal: Journal, operation: str, step_prefix: str = "", key_prefix: str = "") -> Record:
    """A `record(step, **data)` that writes one journal step, then passes its failpoint."""

    def record(step: str, **data: Any) -> None:
        full = step_prefix + step
        journal.update(full, **{key_prefix + key: value for key, value in data.items()})
        failpoint(f"{operation}:{full}")

    return record


# --- the manifest ---------------------------------------------------------------


@dataclass
class Manifest:
    """Everything a snapshot records. `commit` is the snapshot's git commit (not stored in it)."""

    name: str
    message: str
    created_at: str
    automatic: bool
    base_commit: str | None
    branch: str | None
    outputs: dict[str, dict[str, Any]]
    files: dict[str, dict[str, Any]]
    params: dict[str, Any]
    metrics: dict[str, Any]
    registry: RegistryState
    environment: dict[str, Any]
    dvc: dict[str, Any] = field(default_factory=dict)
    commit: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON-ready data (the file's format, plus `commit`)."""
        return {
            "format": FORMAT,
            "name": self.name,
            "message": self.message,
            "created_at": self.created_at,
            "automatic": self.automatic,
            "git": {"base_commit": self.base_commit, "branch": self.branch, "commit": self.commit},
            "outputs": self.outputs,
            "files": self.files,
            "params": self.params,
            "metrics": self.metrics,
            "registry": self.registry.to_dict(),
            "environment": self.environment,
            "dvc": self.dvc,
        }

    def to_bytes(self) -> bytes:
        """The bytes of `.mlvs-snapshot.json` (without `commit`: a commit cannot name itself)."""
        document = self.to_dict()
        document["git"] = {k: v for k, v in document["git"].items() if k != "commit"}
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any], commit: str | None = None) -> Manifest:
        """Read a manifest; refuse a format this version does not know."""
        if data.get("format") != FORMAT:
            raise IntegrityError(
                f"snapshot manifest format {data.get('format')!r} is not {FORMAT!r}; upgrade mlvs to read it"
            )
        git = data.get("git") or {}
        return cls(
            name=data["name"],
            message=data.get("message", ""),
            created_at=data["created_at"],
            automatic=bool(data.get("automatic")),
            base_commit=git.get("base_commit"),
            branch=git.get("branch"),
            outputs=data.get("outputs") or {},
            files=data.get("files") or {},
            params=data.get("params") or {},
            metrics=data.get("metrics") or {},
            registry=RegistryState.from_dict(data.get("registry") or {}),
            environment=data.get("environment") or {},
            dvc=data.get("dvc") or {},
            commit=commit or git.get("commit"),
        )

    def part_of(self, path: str) -> str | None:
        """DATA or MODELS for a DVC-tracked file or git-kept output, else None."""
        for output, info in self.outputs.items():
            if path == output or path.startswith(output + "/"):
                return str(info["part"])
        return None

    @property
    def model_version(self) -> str | None:
        """The registry version whose run logged the model file of this snapshot."""
        return self.registry.model.version if self.registry.model else None


# --- capturing the current state ---------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _git_head(root: Path) -> str | None:
    try:
        return gitstate.run_git(root, "rev-parse", "--verify", "-q", "HEAD^{commit}").strip() or None
    except ExternalToolError:
        return None  # a repository without commits


def _git_branch(root: Path) -> str | None:
    try:
        return gitstate.run_git(root, "symbolic-ref", "-q", "--short", "HEAD").strip() or None
    except ExternalToolError:
        return None  # detached HEAD


def _read_params(paths: ProjectPaths) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if not paths.params.is_dir():
        return params
    for location in sorted([*paths.params.rglob("*.yaml"), *paths.params.rglob("*.yml")]):
        key = location.relative_to(paths.params).with_suffix("").as_posix()
        try:
            params[key] = load_yaml(location.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            params[key] = {"__unreadable__": f"{type(error).__name__}: {error}"}
    return params


def _read_metrics(paths: ProjectPaths) -> dict[str, Any]:
    try:
        metrics = json.loads(paths.metrics.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def _environment(paths: ProjectPaths) -> dict[str, Any]:
    """Python and package versions, remembered in `.mlvs/` until an install changes `sys.path`.

    Looking up eight package versions scans every installed distribution (tens of
    milliseconds); installing or removing one changes its directory's mtime.
    """
    key = [sys.executable, sys.version]
    for entry in sys.path:
        if entry and os.path.abspath(entry) != os.getcwd():  # the working directory changes all the time
            try:
                key.append(f"{entry}:{os.stat(entry).st_mtime_ns}")
            except OSError:
                key.append(f"{entry}:-")
    remembered = paths.state / "environment.json"
    try:
        cached = json.loads(remembered.read_text(encoding="utf-8"))
        if cached.get("key") == key:
            return dict(cached["environment"])
    except (OSError, ValueError, AttributeError, KeyError):
        pass
    from importlib import metadata

    packages: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    environment = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(terse=True),
        "packages": packages,
    }
    try:
        paths.state.mkdir(parents=True, exist_ok=True)
        write_json_atomically(remembered, {"key": key, "environment": environment})
    except OSError:
        pass  # only a cache
    return environment


def _model_name(params: dict[str, Any]) -> str | None:
    # Read from the parsed YAML, not mlvs.params: validating imports scikit-learn (seconds).
    train = params.get("train")
    registry = train.get("registry") if isinstance(train, dict) else None
    name = registry.get("model_name") if isinstance(registry, dict) else None
    return str(name) if name else None


def capture_state(
    paths: ProjectPaths,
    name: str = "",
    message: str = "",
    automatic: bool = False,
    hashes: HashCache | None = None,
) -> Manifest:
    """Record the project's current state as a manifest (nothing is written but the hash cache)."""
    root = paths.root
    own_cache = hashes is None
    hashes = hashes or HashCache(paths)
    try:
        tracking_files = dvc_files(root)
        recorded = lock_hashes(paths, tracking_files)
        outputs: dict[str, dict[str, Any]] = {}
        files: dict[str, dict[str, Any]] = {}
        for out in dvc_outputs(paths, tracking_files):
            info: dict[str, Any] = {"part": out.part, "stage": out.stage, "cache": out.cache}
            if not out.cache:
                outputs[out.path] = info  # git holds its bytes: the commit records them
                continue
            members = output_files(root, out.path)
            is_dir = (root / out.path).is_dir()
            sizes = 0
            md5s: dict[str, str] = {}
            for relative in members:
                hashed = hashes.file_hash(relative)
                files[relative] = {"md5": hashed.md5, "sha256": hashed.sha256, "size": hashed.size, "output": out.path}
                md5s[relative[len(out.path) + 1 :] if is_dir else relative] = hashed.md5
                sizes += hashed.size
            if is_dir:
                info.update(kind="dir", md5=dir_object(md5s)[0], size=sizes, nfiles=len(members))
            elif members:
                info.update(kind="file", md5=md5s[out.path], size=sizes)
            else:
                info.update(kind="missing", md5=None, size=0)
            info["matches_dvc_lock"] = info["md5"] is not None and recorded.get(out.path) == info["md5"]
            outputs[out.path] = info
    finally:
        if own_cache:
            hashes.close()
    params = _read_params(paths)
    model_file = paths.model_file.relative_to(root).as_posix()
    model_sha = files[model_file]["sha256"] if model_file in files else None
    store = ObjectStore(paths)
    return Manifest(
        name=name,
        message=message,
        created_at=_now(),
        automatic=automatic,
        base_commit=_git_head(root),
        branch=_git_branch(root),
        outputs=outputs,
        files=files,
        params=params,
        metrics=_read_metrics(paths),
        registry=read_registry(paths, _model_name(params), model_sha),
        environment=_environment(paths),
        dvc={"remote": store.remote.name if store.remote else None, "remote_url": store.remote.url if store.remote else None},
    )


# --- storing and committing ----------------------------------------------------------


def _dir_objects(manifest: Manifest) -> dict[str, bytes]:
    objects = {}
    for output, info in manifest.outputs.items():
        if info.get("kind") == "dir":
            members = {p[len(output) + 1 :]: f["md5"] for p, f in manifest.files.items() if f["output"] == output}
            md5, payload = dir_object(members)
            objects[md5] = payload
    return objects


def store_objects(paths: ProjectPaths, manifest: Manifest, store: ObjectStore, record: Record) -> None:
    """Put every object of `manifest` into the DVC cache and the default remote.

    Objects already there are not read (a no-op snapshot copies nothing). The journal
    gets the list of objects to add before any is added, so an undo can remove them.
    """
    file_objects: dict[str, tuple[str, list[Path]]] = {}
    for relative, info in manifest.files.items():
        sha256, sources = file_objects.setdefault(info["md5"], (info["sha256"], []))
        sources.append(paths.root / relative)
    dir_objects = _dir_objects(manifest)
    if store.remote is None and file_objects:
        log.warning("no default DVC remote is configured: snapshot %s's data is only in the local DVC cache "
                    "(add one with `dvc remote add -d`)", manifest.name)
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
    text = f"mlvs snapshot {manifest.name}" + (f"\n\n{manifest.message}" if manifest.message else "")
    commit = gitstate.commit_worktree(paths.root, text, extra_files={MANIFEST_PATH: manifest.to_bytes()})
    record("committed", commit=commit)
    gitstate.save_snapshot_ref(paths.root, manifest.name, commit)
    record("saved")
    manifest.commit = commit
    return manifest


def undo_unsaved_snapshot(paths: ProjectPaths, name: str, data: dict[str, Any]) -> bool:
    """Undo a snapshot whose ref was never saved; tell whether it was saved (nothing undone).

    `data` is what `save_snapshot` journalled: `commit`, `added_cache`, `added_remote`.
    """
    commit = data.get("commit")
    existing = gitstate.snapshot_ref(paths.root, name)
    if existing is not None and commit is not None and existing == commit:
        return True
    store = ObjectStore(paths)
    store.remove_objects(data.get("added_cache") or [])
    store.remove_objects(data.get("added_remote") or [], from_remote=True)
    store.remove_leftovers()
    return False


def require_git(paths: ProjectPaths) -> None:
    """Refuse a project that is not the top of a git working tree: snapshots are git commits."""
    if gitstate.known_toplevel(paths.root):
        return
    try:
        top = gitstate.run_git(paths.root, "rev-parse", "--show-toplevel").strip()
    except ExternalToolError:
        raise BadInputError(
            f"{paths.root} is not a git repository; run `git init` there (mlvs keeps snapshots as git commits)"
        ) from None
    if Path(top).resolve() != paths.root.resolve():
        raise BadInputError(
            f"{paths.root} is inside the git repository at {top} but is not its top directory; "
            "keep the mlvs project at the top of its git working tree"
        )
    gitstate.remember_toplevel(paths.root)


def _refuse_existing(paths: ProjectPaths, name: str) -> None:
    gitstate.validate_snapshot_name(name)
    require_git(paths)
    for existing, _ in gitstate.list_snapshot_refs(paths.root):
        if existing.casefold() == name.casefold():
            raise BadInputError(f"snapshot {existing!r} exists already; choose another name")


def create_snapshot(paths: ProjectPaths, name: str, message: str = "", automatic: bool = False) -> Manifest:
    """Snapshot the whole current state as `name`; refuse a bad or existing name (changing nothing)."""
    from mlvs.rollback import recover_interrupted

    _refuse_existing(paths, name)
    with state_lock(paths, lock_timeout()):
        recover_interrupted(paths)
        _refuse_existing(paths, name)  # another command may have taken the name meanwhile
        journal = Journal(paths)
        journal.begin("snapshot", {"name": name, "automatic": automatic})
        record = journal_recorder(journal, "snapshot")
        try:
            manifest = capture_state(paths, name, message, automatic)
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


# --- reading snapshots ----------------------------------------------------------------


# A commit's bytes never change: a command that reads the same manifest twice asks git once.
_MANIFEST_PAYLOADS: dict[tuple[str, str], bytes] = {}


def manifest_at(paths: ProjectPaths, commit: str) -> Manifest:
    """The manifest held by snapshot commit `commit`."""
    key = (os.path.realpath(paths.root), commit)
    payload = _MANIFEST_PAYLOADS.get(key)
    if payload is None:
        payload = gitstate.read_files_at(paths.root, [(commit, MANIFEST_PATH)])[0]
        if payload is not None and gitstate.is_object_id(commit):
            _MANIFEST_PAYLOADS[key] = payload
    if payload is None:
        raise IntegrityError(f"commit {commit} holds no mlvs manifest; it is not an mlvs snapshot")
    return Manifest.from_dict(json.loads(payload), commit=commit)


def list_snapshots(paths: ProjectPaths) -> list[Manifest]:
    """Every snapshot, oldest first. Reads only: no lock, no journal."""
    require_git(paths)
    refs = gitstate.list_snapshot_refs(paths.root)
    payloads = gitstate.read_files_at(paths.root, [(sha, MANIFEST_PATH) for _, sha in refs])
    manifests = []
    for (name, sha), payload in zip(refs, payloads, strict=True):
        if payload is None:
            log.warning("snapshot ref %s has no manifest; skipped", name)
            continue
        try:
            manifests.append(Manifest.from_dict(json.loads(payload), commit=sha))
        except (ValueError, KeyError, IntegrityError) as error:
            log.warning("snapshot %s has an unreadable manifest (%s); skipped", name, error)
    return sorted(manifests, key=lambda m: (m.created_at, m.name))


def _unknown(name: str) -> UnknownSnapshotError:
    return UnknownSnapshotError(
        f"there is no snapshot named {name!r}; run `mlvs snapshot list` to see the snapshots"
    )


def show_snapshot(paths: ProjectPaths, name: str) -> Manifest:
    """The manifest of snapshot `name`; UnknownSnapshotError when there is none."""
    gitstate.validate_snapshot_name(name)
    require_git(paths)
    commit = gitstate.snapshot_ref(paths.root, name)
    if commit is None:
        raise _unknown(name)
    return manifest_at(paths, commit)


# --- comparing ------------------------------------------------------------------------


Change = tuple[Any, Any]


@dataclass
class SnapshotDiff:
    """What differs from snapshot `a` to `b` (None: the current state), by kind."""

    a: str
    b: str | None
    params: dict[str, Change]
    metrics: dict[str, Change]
    outputs: dict[str, Change]
    files: dict[str, Change]
    registry: dict[str, Change]
    code: list[str]

    @property
    def empty(self) -> bool:
        """True when nothing differs."""
        return not (self.params or self.metrics or self.outputs or self.files or self.registry or self.code)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every change as [old, new]."""
        pairs = lambda d: {k: list(v) for k, v in sorted(d.items())}  # noqa: E731
        return {
            "a": self.a,
            "b": self.b if self.b is not None else "(current)",
            "params": pairs(self.params),
            "metrics": pairs(self.metrics),
            "outputs": pairs(self.outputs),
            "files": pairs(self.files),
            "registry": pairs(self.registry),
            "code": self.code,
        }


def flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys: {'a': {'b': 1}} -> {'a.b': 1}."""
    if not isinstance(values, dict):
        return {prefix: values} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def _changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Change]:
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def _code_paths(files: dict[str, str], a: Manifest, b: Manifest) -> dict[str, str]:
    def is_code(path: str) -> bool:
        return (
            path != MANIFEST_PATH
            and not path.startswith("params/")
            and a.part_of(path) is None
            and b.part_of(path) is None
        )

    return {p: oid for p, oid in files.items() if is_code(p)}


def diff_snapshots(paths: ProjectPaths, a: str, b: str | None = None) -> SnapshotDiff:
    """Compare snapshot `a` with snapshot `b`, or with the current state when `b` is None."""
    first = show_snapshot(paths, a)
    second = show_snapshot(paths, b) if b is not None else capture_state(paths)
    assert first.commit is not None
    old_tree = gitstate.tree_files(paths.root, first.commit)
    new_tree = (
        gitstate.tree_files(paths.root, second.commit) if second.commit else gitstate.worktree_blob_hashes(paths.root)
    )
    old_code, new_code = _code_paths(old_tree, first, second), _code_paths(new_tree, first, second)
    code = sorted(p for p in set(old_code) | set(new_code) if old_code.get(p) != new_code.get(p))
    registry = _changes(
        {"model_version": first.model_version, **{f"alias.{k}": v for k, v in first.registry.alias_versions().items()}},
        {"model_version": second.model_version, **{f"alias.{k}": v for k, v in second.registry.alias_versions().items()}},
    )
    return SnapshotDiff(
        a=a,
        b=b,
        params=_changes(flatten(first.params), flatten(second.params)),
        metrics=_changes(flatten(first.metrics), flatten(second.metrics)),
        outputs=_changes(
            {p: i.get("md5") for p, i in first.outputs.items() if i.get("cache")},
            {p: i.get("md5") for p, i in second.outputs.items() if i.get("cache")},
        ),
        files=_changes(
            {p: i["sha256"] for p, i in first.files.items()}, {p: i["sha256"] for p, i in second.files.items()}
        ),
        registry=registry,
        code=code,
    )


__all__ = [
    "DATA",
    "MANIFEST_PATH",
    "MODELS",
    "PARTS",
    "Manifest",
    "SnapshotDiff",
    "capture_state",
    "create_snapshot",
    "diff_snapshots",
    "list_snapshots",
    "show_snapshot",
]


# --- text for people ------------------------------------------------------------------


def _short(value: Any, width: int = 12) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def fingerprint(manifest: Manifest, part: str) -> str | None:
    """A short digest of every file of `part` (DATA or MODELS): equal digests, equal bytes."""
    import hashlib

    lines = sorted(
        f"{p}\0{i['sha256']}" for p, i in manifest.files.items() if manifest.outputs[i["output"]]["part"] == part
    )
    if not lines:
        return None
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:10]


def snapshots_table(manifests: list[Manifest]) -> str:
    """The snapshots as a compact table, oldest first."""
    if not manifests:
        return "No snapshots yet; create one with `mlvs snapshot create NAME`."
    rows = []
    for m in manifests:
        aliases = ",".join(f"{a}={v}" for a, v in m.registry.alias_versions().items()) or "-"
        rows.append([
            m.name,
            m.created_at[:19].replace("T", " "),
            "auto" if m.automatic else "",
            _short(m.model_version, 6),
            aliases,
            _short(fingerprint(m, DATA), 10),
            _short(fingerprint(m, MODELS), 10),
            _short(m.message.splitlines()[0] if m.message else "", 40),
        ])
    return _table(["NAME", "CREATED (UTC)", "KIND", "MODEL", "ALIASES", "DATA", "MODELS", "MESSAGE"], rows)


def manifest_text(manifest: Manifest) -> str:
    """One snapshot, for people."""
    registry = manifest.registry
    lines = [
        f"snapshot     {manifest.name}{' (automatic)' if manifest.automatic else ''}",
        f"created      {manifest.created_at}",
        f"message      {manifest.message or '-'}",
        f"commit       {manifest.commit}",
        f"based on     {manifest.base_commit or '(no commit yet)'} on {manifest.branch or 'a detached HEAD'}",
        f"registry     {registry.model_name or '-'}: model version {manifest.model_version or '-'}, "
        f"aliases {', '.join(f'{a}={v}' for a, v in registry.alias_versions().items()) or '-'}"
        + (f" (unreadable: {registry.error})" if registry.error else ""),
        f"environment  Python {manifest.environment.get('python')}, "
        + ", ".join(f"{k} {v}" for k, v in (manifest.environment.get("packages") or {}).items() if v),
        "",
    ]
    rows = []
    for path, info in sorted(manifest.outputs.items()):
        where = "git" if not info.get("cache") else _short(info.get("md5"), 16)
        rows.append([path, info["part"], info.get("kind", "git"), where, str(info.get("size", "-"))])
    lines.append(_table(["OUTPUT", "PART", "KIND", "MD5", "BYTES"], rows))
    if manifest.metrics:
        lines += ["", "metrics      " + ", ".join(f"{k}={v}" for k, v in sorted(manifest.metrics.items()) if k.startswith("test_"))]
    return "\n".join(lines)


def diff_text(diff: SnapshotDiff) -> str:
    """A diff, for people."""
    title = f"{diff.a} -> {diff.b if diff.b is not None else '(current state)'}"
    if diff.empty:
        return f"{title}: no differences."
    lines = [title]
    sections = [("params", diff.params), ("metrics", diff.metrics), ("data and models", diff.outputs),
                ("files", diff.files), ("registry", diff.registry)]
    for heading, changes in sections:
        if changes:
            lines.append(f"{heading}:")
            width = max(len(k) for k in changes)
            lines += [f"  {k:<{width}}  {_short(a, 40)} -> {_short(b, 40)}" for k, (a, b) in changes.items()]
    if diff.code:
        lines.append(f"code: {len(diff.code)} file(s) changed")
        lines += [f"  {p}" for p in diff.code]
    return "\n".join(lines)
